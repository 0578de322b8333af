"""Features group: the catalogue, content vectors, evaluation splits and the item features of
the evaluated model.

Everything here is fitted on the TRAIN split only (DESIGN.md §6); the production model's
features (all ratings of the release) are built by `production_model` and `user_features`.
"""

import dagster as dg
import numpy as np

from orchestration.assets.warehouse import (
    imdb_titles,
    materialize_table,
    movie_links,
    movielens_movies,
    movielens_ratings,
)
from orchestration.checks import pandera_schema_check, row_count_drift_check, unique_key_check
from orchestration.config import CatalogConfig, SplitsConfig
from orchestration.metadata import frame_preview
from orchestration.resources import WAREHOUSE_POOL, ArtifactStoreResource, WarehouseResource
from recommender_lib.index.content import ContentFeatures
from recommender_lib.modeling import splits
from recommender_lib.modeling.two_tower import TwoTowerParams
from recommender_lib.warehouse.catalog import build_catalog, load_catalog
from recommender_lib.warehouse.schemas import CATALOG_SCHEMA
from recommender_lib.workflow import training

FEATURE_KINDS = {"python", "duckdb"}


@dg.asset(
    group_name="features", kinds={"duckdb", "table"}, pool=WAREHOUSE_POOL,
    deps=[imdb_titles, movielens_movies, movie_links],
)  # fmt: skip
def catalog(config: CatalogConfig, warehouse_db: WarehouseResource) -> dg.MaterializeResult:
    """Recommendable titles: every MovieLens movie (with its IMDb metadata where linked) plus the
    IMDb titles no MovieLens movie links to that pass the filters (type, votes, adult). One genre
    vocabulary for all of them; IMDb-only titles get negative item ids."""
    return materialize_table(warehouse_db, build_catalog, config.to_lib())


@dg.asset(group_name="features", kinds={"python", "numpy"}, pool=WAREHOUSE_POOL, deps=[catalog])
def content_features(
    context: dg.AssetExecutionContext,
    warehouse_db: WarehouseResource,
    artifacts: ArtifactStoreResource,
) -> str:
    """Per-title content vectors for the cosine index: genre multi-hot (unit length) and scaled
    year, runtime, IMDb rating and votes. Uses no ratings; the fitted transform is saved beside
    the vectors as JSON. Returns the folder holding them."""
    with warehouse_db.get_connection() as conn:
        features = ContentFeatures.build(load_catalog(conn))
    folder = features.save(artifacts.run_dir("content_features", context.run_id))
    no_content = int((np.abs(features.vectors).sum(axis=1) == 0).sum())
    context.add_output_metadata(
        {
            "dagster/row_count": len(features.item_ids),
            "dimensions": features.vectors.shape[1],
            "genres": dg.MetadataValue.json(features.transform.genres),
            "titles_without_content": no_content,
            "path": dg.MetadataValue.path(str(folder)),
        }
    )
    return str(folder)


@dg.asset_check(asset=content_features, blocking=True, additional_deps=[catalog])
def content_vectors_complete(
    content_features: str, warehouse_db: WarehouseResource
) -> dg.AssetCheckResult:
    """Every catalogue title has exactly one finite content vector."""
    features = ContentFeatures.load(content_features)
    with warehouse_db.get_connection() as conn:
        catalog_ids = load_catalog(conn)["item_id"].to_numpy(np.int64)
    aligned = np.array_equal(features.item_ids, catalog_ids)
    finite = bool(np.isfinite(features.vectors).all())
    return dg.AssetCheckResult(
        passed=aligned and finite,
        metadata={"aligned_with_catalog": aligned, "finite": finite},
    )


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
    deps=[rating_splits, catalog],
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


feature_assets = [catalog, content_features, rating_splits, item_features]
feature_checks = [
    pandera_schema_check(catalog, CATALOG_SCHEMA),
    unique_key_check(catalog, ["item_id"]),
    row_count_drift_check(catalog),
    content_vectors_complete,
]
