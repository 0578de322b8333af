"""Features group: evaluation splits, the catalogue's item features and known users' features.

Everything here is fitted on the TRAIN split only (DESIGN.md §6).
"""

from pathlib import Path

import dagster as dg

from orchestration.assets.warehouse import (
    imdb_titles,
    movie_links,
    movielens_movies,
    movielens_ratings,
)
from orchestration.config import SplitsConfig
from orchestration.metadata import frame_preview
from orchestration.resources import WAREHOUSE_POOL, ArtifactStoreResource, WarehouseResource
from recommender_lib import splits, training
from recommender_lib.two_tower import TwoTowerParams

FEATURE_KINDS = {"python", "duckdb"}


@dg.asset(
    group_name="features", kinds={"duckdb", "table"}, pool=WAREHOUSE_POOL, deps=[movielens_ratings]
)
def rating_splits(config: SplitsConfig, warehouse_db: WarehouseResource) -> dg.MaterializeResult:
    """Train / validation / test rows of protocols P1 (temporal) and P2 (cold-start users)."""
    with warehouse_db.get_connection() as conn:
        counts = splits.build_splits(conn, config.to_lib())
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(v for k, v in counts.items() if k.startswith("P1/")),
            **{f"rows {k}": v for k, v in counts.items()},
        }
    )


@dg.asset(
    group_name="features", kinds=FEATURE_KINDS, pool=WAREHOUSE_POOL,
    deps=[rating_splits, imdb_titles, movielens_movies, movie_links],
)  # fmt: skip
def item_features(
    context: dg.AssetExecutionContext,
    warehouse_db: WarehouseResource,
    artifacts: ArtifactStoreResource,
) -> str:
    """Feature rows of every catalogue title (genres, IMDb metadata, shrunk train statistics),
    with the fitted transform saved beside them as JSON. Titles nobody rated get content-only
    rows. Returns the folder holding both."""
    with warehouse_db.get_connection() as conn:
        transform, items = training.fit_protocol_features(conn, splits.P1, TwoTowerParams())
    folder = training.save_item_features(
        artifacts.run_dir("item_features", context.run_id), transform, items
    )
    context.add_output_metadata(
        {
            "dagster/row_count": len(items),
            "rated_titles": int((items.count > 0).sum()),
            "columns": dg.MetadataValue.json(transform.item_columns),
            "global_mean": transform.global_mean,
            "path": dg.MetadataValue.path(str(folder)),
            "preview": frame_preview(items.frame(transform)),
        }
    )
    return str(folder)


@dg.asset(group_name="features", kinds=FEATURE_KINDS, pool=WAREHOUSE_POOL)
def user_features(
    context: dg.AssetExecutionContext,
    item_features: str,
    warehouse_db: WarehouseResource,
    artifacts: ArtifactStoreResource,
) -> str:
    """Feature vectors of every known user from their train + validation ratings (count, mean,
    damped bias, shrunk per-genre preferences, recency) — built by the same function that
    serves a new user from a list of ratings. Returns the `.npz` path."""
    transform, items = training.load_item_features(Path(item_features))
    with warehouse_db.get_connection() as conn:
        user_ids, matrix = training.known_user_features(conn, transform, items)
    path = training.save_user_features(
        artifacts.run_dir("user_features", context.run_id) / training.USER_FEATURES_FILE,
        user_ids,
        matrix,
    )
    context.add_output_metadata(
        {
            "dagster/row_count": len(user_ids),
            "columns": dg.MetadataValue.json(transform.user_columns),
            "path": dg.MetadataValue.path(str(path)),
        }
    )
    return str(path)


feature_assets = [rating_splits, item_features, user_features]
