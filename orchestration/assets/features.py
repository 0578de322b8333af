"""Features group: the catalogue, content vectors, evaluation splits and the item features of
the evaluated model.

Everything here is fitted on the TRAIN split only (docs/architecture.md §6); the production model's
features (all ratings of the release) are built by `production_model` and `user_features`.
"""

import dagster as dg
import numpy as np

from orchestration.assets.raw import imdb_title_akas
from orchestration.assets.warehouse import (
    WAREHOUSE_KINDS,
    RowCountDriftConfig,
    gate_check_specs,
    imdb_titles,
    materialize_gated,
    materialize_table,
    movie_links,
    movielens_movies,
    movielens_ratings,
)
from orchestration.checks import pandera_schema_check, row_count_drift_check, unique_key_check
from orchestration.config import CatalogConfig, FeaturesConfig, SplitsConfig
from orchestration.metadata import frame_preview
from orchestration.resources import (
    WAREHOUSE_POOL,
    ArtifactStoreResource,
    RawSourcesResource,
    WarehouseResource,
)
from recommender_lib.modeling import splits
from recommender_lib.sources.formats import IMDB_AKAS_FILE
from recommender_lib.warehouse.akas import CATALOG_AKAS, load_catalog_akas
from recommender_lib.warehouse.app_feedback import (
    APP_FEEDBACK,
    TRAINING_RATINGS,
    build_training_ratings,
)
from recommender_lib.warehouse.catalog import build_catalog, load_catalog
from recommender_lib.warehouse.schemas import CATALOG_SCHEMA
from recommender_lib.workflow import steps

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


@dg.asset(
    group_name="features", kinds=WAREHOUSE_KINDS, pool=WAREHOUSE_POOL,
    deps=[imdb_title_akas, catalog], check_specs=gate_check_specs(CATALOG_AKAS),
)  # fmt: skip
def catalog_akas(
    config: RowCountDriftConfig, raw_sources: RawSourcesResource, warehouse_db: WarehouseResource
) -> dg.MaterializeResult:
    """Localized titles (IMDb title.akas) of the catalogue's titles: region, language, types and
    attributes as LISTs; a gated load like the warehouse tables (schema, key, drift)."""
    akas = raw_sources.current_imdb(IMDB_AKAS_FILE)
    return materialize_gated(
        warehouse_db,
        config,
        CATALOG_AKAS,
        load_catalog_akas,
        akas.path,
        source_version=f"akas={akas.version}",
    )


@dg.asset(group_name="features", kinds={"python", "numpy"}, pool=WAREHOUSE_POOL, deps=[catalog])
def content_features(
    context: dg.AssetExecutionContext,
    warehouse_db: WarehouseResource,
    artifacts: ArtifactStoreResource,
) -> steps.ContentArtefact:
    """Per-title content vectors for the cosine index: genre multi-hot (unit length) and scaled
    year, runtime, IMDb rating and votes. Uses no ratings; the fitted transform is saved beside
    the vectors as JSON."""
    content = steps.content_features(
        warehouse_db.get_connection, artifacts.run_dir("content_features", context.run_id)
    )
    context.add_output_metadata(
        {
            "dagster/row_count": content.titles,
            "dimensions": content.dimensions,
            "genres": dg.MetadataValue.json(content.genres),
            "titles_without_content": content.titles_without_content,
            "path": dg.MetadataValue.path(str(content.folder)),
        }
    )
    return content


@dg.asset_check(asset=content_features, blocking=True, additional_deps=[catalog])
def content_vectors_complete(
    content_features: steps.ContentArtefact, warehouse_db: WarehouseResource
) -> dg.AssetCheckResult:
    """Every catalogue title has exactly one finite content vector."""
    features = content_features.load()
    with warehouse_db.get_connection() as conn:
        catalog_ids = load_catalog(conn)["item_id"].to_numpy(np.int64)
    aligned = np.array_equal(features.item_ids, catalog_ids)
    finite = bool(np.isfinite(features.vectors).all())
    return dg.AssetCheckResult(
        passed=aligned and finite,
        metadata={"aligned_with_catalog": aligned, "finite": finite},
    )


@dg.asset(
    group_name="features", kinds={"duckdb", "table"}, pool=WAREHOUSE_POOL,
    deps=[movielens_ratings, dg.AssetKey(APP_FEEDBACK)],
)  # fmt: skip
def rating_splits(config: SplitsConfig, warehouse_db: WarehouseResource) -> dg.MaterializeResult:
    """Train / validation / test rows of protocols P1 (temporal) and P2 (cold-start users) of
    `training_ratings`: MovieLens ratings ∪ the application users' latest ratings."""
    with warehouse_db.get_connection() as conn:
        ratings = build_training_ratings(conn)
        counts = splits.build_splits(conn, config.to_lib(), ratings_table=TRAINING_RATINGS)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(v for k, v in counts.items() if k.startswith("P1/")),
            "movielens_rows": ratings.movielens_rows,
            "application_rows": ratings.app_rows,
            "application_users": ratings.app_users,
            **{f"rows {k}": v for k, v in counts.items()},
        }
    )


@dg.asset(
    group_name="features", kinds=FEATURE_KINDS, pool=WAREHOUSE_POOL,
    deps=[rating_splits, catalog],
)  # fmt: skip
def item_features(
    context: dg.AssetExecutionContext,
    config: FeaturesConfig,
    warehouse_db: WarehouseResource,
    artifacts: ArtifactStoreResource,
) -> steps.ItemFeaturesArtefact:
    """Feature rows of every catalogue title (genres, IMDb metadata, shrunk train statistics),
    with the fitted transform saved beside them as JSON; the run's feature settings, which the
    model and its refit then adopt. Titles nobody rated get content-only rows."""
    features = steps.item_features(
        warehouse_db.get_connection,
        config.to_lib(),
        artifacts.run_dir("item_features", context.run_id),
    )
    context.add_output_metadata(
        {
            "dagster/row_count": features.titles,
            "rated_titles": features.rated_titles,
            "columns": dg.MetadataValue.json(features.columns),
            "global_mean": features.global_mean,
            "path": dg.MetadataValue.path(str(features.folder)),
            "preview": frame_preview(features.preview),
        }
    )
    return features


feature_assets = [catalog, catalog_akas, content_features, rating_splits, item_features]
feature_checks = [
    pandera_schema_check(catalog, CATALOG_SCHEMA),
    unique_key_check(catalog, ["item_id"]),
    row_count_drift_check(catalog),
    content_vectors_complete,
]
