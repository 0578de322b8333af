"""Registry group: the registered model version (one hashed serving bundle) and the `champion`
alias that follows it through the gates.

`model_version` registers every evaluated model that beat the baselines; its blocking checks
(the bundle downloads, verifies, loads and answers sanely; metrics not worse than the current
champion) stand between it and `champion`, which moves the alias and writes the promotion log.
"""

import tempfile
from pathlib import Path

import dagster as dg

from orchestration.assets.enrichment import tmdb_posters
from orchestration.assets.features import catalog_akas
from orchestration.config import PromotionConfig
from orchestration.resources import (
    WAREHOUSE_POOL,
    LazyMlFlow,
    RegistryResource,
    WarehouseResource,
)
from orchestration.tracking import tracked_step
from recommender_lib.bundle.format import git_commit, read_manifest
from recommender_lib.engine.recommender import Recommender
from recommender_lib.evaluation.report import EvaluationReport
from recommender_lib.registry.promotion import regression_failures, smoke_failures
from recommender_lib.registry.pyfunc import BundlePyfunc
from recommender_lib.registry.records import RegisteredVersion
from recommender_lib.warehouse.tables import source_versions
from recommender_lib.workflow import steps


@dg.asset(
    group_name="registry", kinds={"mlflow"}, pool=WAREHOUSE_POOL, deps=[catalog_akas, tmdb_posters]
)
def model_version(
    context: dg.AssetExecutionContext,
    production_model: steps.ModelArtefact,
    model_evaluation: EvaluationReport,
    item_embeddings: steps.ArrayArtefact,
    content_index: steps.ContentIndexArtefact,
    user_features: steps.ArrayArtefact,
    warehouse_db: WarehouseResource,
    model_registry: RegistryResource,
    mlflow: dg.ResourceParam[LazyMlFlow],
) -> RegisteredVersion:
    """A new MLflow registered-model version carrying one self-contained serving bundle (model,
    embeddings, content index, catalogue metadata with poster URLs, localized titles,
    transforms, manifest with sha256 of every file), tagged with its data versions and the
    evaluated recipe's metrics. The model is the production refit; every user of the release
    with all their ratings. Not yet champion: see `champion`."""
    with warehouse_db.get_connection() as conn:
        versions = source_versions(conn)
    with tracked_step(mlflow) as run:
        mlflow_run_id = run.active_run().info.run_id
        bundle = steps.serving_bundle(
            warehouse_db.get_connection,
            production_model,
            item_embeddings,
            content_index,
            user_features,
            model_registry.bundle_dir(context.run_id),
            manifest={
                "git_commit": git_commit(Path(__file__).parent),
                "dagster_run_id": context.run_id,
                "mlflow_run_id": mlflow_run_id,
                "source_versions": versions,
                "metrics": model_evaluation.logged_metrics(),
            },
        )
        registered = model_registry.registry().register_bundle(
            bundle,
            python_model=BundlePyfunc(),
            run_id=mlflow_run_id,
            tags={
                "dagster_run_id": context.run_id,
                "ranking_rule": production_model.ranking_rule,
                "trained_on": str(production_model.info["trained_on"]["kind"]),
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
            "catalogue_titles": item_embeddings.rows,
            "personal_index": dg.MetadataValue.json(read_manifest(bundle)["personal_index"]),
            "ranking_rule": production_model.ranking_rule,
        }
    )
    return registered


@dg.asset_check(asset=model_version, blocking=True)
def serves_sane_answers(
    model_version: RegisteredVersion, model_registry: RegistryResource
) -> dg.AssetCheckResult:
    """The registered bundle downloads, verifies (sha256 of every file), loads, and answers a
    probe set sanely: neighbours share genres, recommendations are distinct, unseen, in range."""
    with tempfile.TemporaryDirectory() as tmp:
        bundle = model_registry.registry(model_version.name).download_bundle(
            model_version.model_uri, Path(tmp) / "bundle"
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
    model_version: RegisteredVersion,
    model_registry: RegistryResource,
) -> dg.AssetCheckResult:
    """Held-out metrics are not worse than the current champion's beyond the tolerance."""
    versions = model_registry.registry(model_version.name).list_versions()
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
    model_version: RegisteredVersion,
    model_registry: RegistryResource,
) -> dg.MaterializeResult:
    """The `champion` alias — what the serving API loads — moved to the new version once its
    blocking checks passed; every move is appended to the promotion log."""
    record = model_registry.registry(model_version.name).promote(
        model_version.version,
        reason="promotion checks passed (serves_sane_answers, not_worse_than_champion)",
        actor=f"dagster run {context.run_id}",
    )
    return dg.MaterializeResult(
        metadata={
            "champion_version": record.to_version,
            "previous_version": record.from_version or "",
            "promotion_log": dg.MetadataValue.path(model_registry.promotion_log),
        }
    )


registry_assets = [model_version, champion]
registry_checks = [serves_sane_answers, not_worse_than_champion]
