"""Serving artefacts and the registry: item embeddings, the content index, the registered model
version (one hashed serving bundle) and the `champion` alias that follows it through the gates.

`model_version` registers every evaluated model that beat the baselines; its blocking checks
(the bundle downloads, verifies, loads and answers sanely; metrics not worse than the current
champion) stand between it and `champion`, which moves the alias and writes the promotion log.
"""

import tempfile
from pathlib import Path

import dagster as dg
import numpy as np

from orchestration.assets.features import catalog
from orchestration.config import PromotionConfig
from orchestration.resources import (
    WAREHOUSE_POOL,
    ArtifactStoreResource,
    LazyMlFlow,
    RegistryResource,
    WarehouseResource,
)
from orchestration.tracking import tracked_step
from recommender_lib.bundle.format import git_commit
from recommender_lib.bundle.layout import (
    ItemEmbeddings,
    assemble_bundle,
    catalog_frame,
    model_manifest,
)
from recommender_lib.engine.recommender import Recommender
from recommender_lib.index.content import ContentFeatures, build_content_index, save_content_index
from recommender_lib.modeling.two_tower import TrainedTwoTower
from recommender_lib.registry import client as registry
from recommender_lib.registry.promotion import regression_failures, smoke_failures
from recommender_lib.registry.pyfunc import BundlePyfunc
from recommender_lib.warehouse import tables as warehouse
from recommender_lib.warehouse.catalog import load_catalog
from recommender_lib.workflow import training

SERVING_KINDS = {"python", "numpy"}


@dg.asset(group_name="model", kinds=SERVING_KINDS, pool=WAREHOUSE_POOL, deps=[catalog])
def item_embeddings(
    context: dg.AssetExecutionContext,
    production_model: str,
    warehouse_db: WarehouseResource,
    artifacts: ArtifactStoreResource,
) -> str:
    """The production model's item-tower embeddings and ranking biases of every catalogue title
    — also of titles no MovieLens user rated (content-only cold start). Returns the `.npz`."""
    model = TrainedTwoTower.load(production_model)
    with warehouse_db.get_connection() as conn:
        item_ids = load_catalog(conn)["item_id"].to_numpy(np.int64)
    embeddings = ItemEmbeddings.from_model(model, item_ids)
    path = embeddings.save(artifacts.run_dir("item_embeddings", context.run_id) / "items.npz")
    rated = model.items.count[model.items.index_of(item_ids)] > 0
    context.add_output_metadata(
        {
            "dagster/row_count": len(item_ids),
            "dimensions": embeddings.vectors.shape[1],
            "titles_without_ratings": int((~rated).sum()),
            "path": dg.MetadataValue.path(str(path)),
        }
    )
    return str(path)


@dg.asset(group_name="model", kinds=SERVING_KINDS, pool=WAREHOUSE_POOL, deps=[catalog])
def content_index(
    context: dg.AssetExecutionContext,
    content_features: str,
    warehouse_db: WarehouseResource,
    artifacts: ArtifactStoreResource,
) -> str:
    """Normalised float32 content vectors + id order + filter columns (title type, year, votes,
    genres) for exact cosine top-k. Returns the folder."""
    features = ContentFeatures.load(content_features)
    with warehouse_db.get_connection() as conn:
        index = build_content_index(load_catalog(conn), features)
    folder = save_content_index(
        index, features.transform, artifacts.run_dir("content_index", context.run_id)
    )
    context.add_output_metadata(
        {
            "dagster/row_count": len(index),
            "dimensions": index.dim,
            "genres": dg.MetadataValue.json(index.genre_vocab),
            "title_types": dg.MetadataValue.json(index.title_type_vocab),
            "path": dg.MetadataValue.path(str(folder)),
        }
    )
    return str(folder)


@dg.asset(group_name="registry", kinds={"mlflow"}, pool=WAREHOUSE_POOL)
def model_version(
    context: dg.AssetExecutionContext,
    production_model: str,
    model_evaluation: training.EvaluationReport,
    item_embeddings: str,
    content_index: str,
    user_features: str,
    warehouse_db: WarehouseResource,
    model_registry: RegistryResource,
    mlflow: dg.ResourceParam[LazyMlFlow],
) -> registry.RegisteredVersion:
    """A new MLflow registered-model version carrying one self-contained serving bundle (model,
    embeddings, content index, catalogue metadata, transforms, manifest with sha256 of every
    file), tagged with its data versions and the evaluated recipe's metrics. The model is the
    production refit; every user of the release with all their ratings. Not yet champion: see
    `champion`."""
    model = TrainedTwoTower.load(production_model)
    with warehouse_db.get_connection() as conn:
        catalog_df = catalog_frame(load_catalog(conn), model)
        history = training.release_ratings(conn)
        versions = warehouse.source_versions(conn)
    with tracked_step(mlflow) as run:
        mlflow_run_id = run.active_run().info.run_id
        bundle = assemble_bundle(
            model_registry.bundle_dir(context.run_id),
            model_dir=Path(production_model),
            embeddings_path=Path(item_embeddings),
            content_dir=Path(content_index),
            catalog=catalog_df,
            user_features_path=Path(user_features),
            user_history=history,
            manifest={
                "git_commit": git_commit(Path(__file__).parent),
                "dagster_run_id": context.run_id,
                "mlflow_run_id": mlflow_run_id,
                "source_versions": versions,
                "metrics": model_evaluation.logged_metrics(),
                "model": model_manifest(model),
            },
        )
        registered = registry.register_bundle(
            bundle,
            tracking_uri=model_registry.tracking_uri,
            python_model=BundlePyfunc(),
            model_name=model_registry.model_name,
            run_id=mlflow_run_id,
            tags={
                "dagster_run_id": context.run_id,
                "ranking_rule": model.ranking.describe(),
                "trained_on": str(model.info.get("trained_on", {}).get("kind", "")),
            },
            pip_requirements=[],
        )
    context.add_output_metadata(
        {
            "model_name": registered.name,
            "version": registered.version,
            "bundle_version": registered.bundle_version,
            "model_uri": registered.model_uri,
            "mlflow_run_id": registered.run_id,
            "bundle_path": dg.MetadataValue.path(str(bundle)),
            "catalogue_titles": len(catalog_df),
            "ranking_rule": model.ranking.describe(),
        }
    )
    return registered


@dg.asset_check(asset=model_version, blocking=True)
def serves_sane_answers(
    model_version: registry.RegisteredVersion, model_registry: RegistryResource
) -> dg.AssetCheckResult:
    """The registered bundle downloads, verifies (sha256 of every file), loads, and answers a
    probe set sanely: neighbours share genres, recommendations are distinct, unseen, in range."""
    with tempfile.TemporaryDirectory() as tmp:
        bundle = registry.download_bundle(
            model_version.model_uri,
            tracking_uri=model_registry.tracking_uri,
            model_name=model_version.name,
            dest=Path(tmp) / "bundle",
        )
        failures = smoke_failures(Recommender.load(bundle))
    return dg.AssetCheckResult(
        passed=not failures,
        description="; ".join(failures) or "bundle verified and answered the probe set",
        metadata={"version": model_version.version},
    )


@dg.asset_check(asset=model_version, blocking=True)
def not_worse_than_champion(
    config: PromotionConfig,
    model_version: registry.RegisteredVersion,
    model_registry: RegistryResource,
) -> dg.AssetCheckResult:
    """Held-out metrics are not worse than the current champion's beyond the tolerance."""
    versions = registry.list_versions(model_registry.tracking_uri, model_version.name)
    current = next((v for v in versions if v.is_champion), None)
    if current is None:
        return dg.AssetCheckResult(passed=True, description="no champion yet")
    candidate = next(v for v in versions if v.version == model_version.version)
    failures = regression_failures(candidate.tags, current.tags, config.tolerance)
    return dg.AssetCheckResult(
        passed=not failures,
        description="; ".join(failures) or f"not worse than champion v{current.version}",
        metadata={"champion_version": current.version, "tolerance": config.tolerance},
    )


@dg.asset(group_name="registry", kinds={"mlflow"})
def champion(
    context: dg.AssetExecutionContext,
    model_version: registry.RegisteredVersion,
    model_registry: RegistryResource,
) -> dg.MaterializeResult:
    """The `champion` alias — what the serving API loads — moved to the new version once its
    blocking checks passed; every move is appended to the promotion log."""
    record = registry.promote(
        model_registry.tracking_uri,
        model_version.name,
        model_version.version,
        reason="promotion checks passed (serves_sane_answers, not_worse_than_champion)",
        actor=f"dagster run {context.run_id}",
        log_path=Path(model_registry.promotion_log),
    )
    return dg.MaterializeResult(
        metadata={
            "champion_version": record.to_version,
            "previous_version": record.from_version or "",
            "promotion_log": dg.MetadataValue.path(model_registry.promotion_log),
        }
    )


registry_assets = [item_embeddings, content_index, model_version, champion]
registry_checks = [serves_sane_answers, not_worse_than_champion]
