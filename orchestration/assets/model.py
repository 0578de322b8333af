"""Model group: the two-tower model, its evaluation through the served ranking against the
baselines, the production refit on every rating of the release that the bundle carries, and the
serving parts built from it (user features, item embeddings, the content index).

Each asset is one call into `recommender_lib.workflow.steps`; training runs in-process
(TensorFlow is imported inside the training code, not at load) and logs to one MLflow run per
Dagster run: params, per-epoch curves, data versions, the model and its transforms, every metric
of the model and of each baseline, and diagnostic plots.
"""

import dagster as dg

from orchestration.assets.features import catalog
from orchestration.config import PromotionGateConfig, TwoTowerConfig
from orchestration.metadata import frame_preview
from orchestration.resources import (
    WAREHOUSE_POOL,
    ArtifactStoreResource,
    LazyMlFlow,
    WarehouseResource,
)
from orchestration.tracking import tracked_step
from recommender_lib.evaluation.report import MODEL_NAME, EvaluationReport, prediction_range_failure
from recommender_lib.modeling.features.users import USER_FEATURES_FILE
from recommender_lib.modeling.splits import P1
from recommender_lib.registry import tracking
from recommender_lib.warehouse.tables import source_versions
from recommender_lib.workflow import steps

TRAINING_POOL = "model_training"
MODEL_KINDS = {"tensorflow", "mlflow"}
SERVING_KINDS = {"python", "numpy"}


@dg.asset(group_name="model", kinds=MODEL_KINDS, pool=TRAINING_POOL)
def two_tower_model(
    context: dg.AssetExecutionContext,
    config: TwoTowerConfig,
    item_features: steps.ItemFeaturesArtefact,
    warehouse_db: WarehouseResource,
    artifacts: ArtifactStoreResource,
    mlflow: dg.ResourceParam[LazyMlFlow],
) -> steps.ModelArtefact:
    """The two-tower model trained on the P1 train split (early stopping on validation RMSE), its
    ranking rule chosen on validation NDCG@10 through the served ranking, and its per-epoch
    history: the evaluated recipe."""
    with warehouse_db.get_connection() as conn:
        versions = source_versions(conn)
    with tracked_step(mlflow) as run:
        model = steps.train_evaluated_model(
            warehouse_db.get_connection,
            config.to_lib(),
            item_features,
            artifacts.run_dir("models", context.run_id) / "p1",
            log=context.log.info,
        )
        tracking.log_training(run, model.params, model.history, versions, model.ranking_rule)
        run.log_artifacts(str(model.folder), artifact_path="model")
        mlflow_run_id = run.active_run().info.run_id
    context.add_output_metadata(
        {
            "epochs": int(model.info["epochs_run"]),
            "train_rows": int(model.info["train_rows"]),
            "train_seconds": float(model.info.get("train_seconds", 0.0)),
            "devices": ", ".join(model.info.get("devices", [])),
            "mlflow_run_id": mlflow_run_id,
            "best_epoch": int(model.info["best_epoch"]),
            "ranking_rule": model.ranking_rule,
            "path": dg.MetadataValue.path(str(model.folder)),
            **{f"final {k}": float(v[-1]) for k, v in model.history.items() if v},
        }
    )
    return model


@dg.asset(group_name="model", kinds=MODEL_KINDS, pool=TRAINING_POOL)
def model_evaluation(
    context: dg.AssetExecutionContext,
    two_tower_model: steps.ModelArtefact,
    warehouse_db: WarehouseResource,
    mlflow: dg.ResourceParam[LazyMlFlow],
) -> EvaluationReport:
    """RMSE/MAE in stars, NDCG@10/Recall@10, coverage@10 and mean popularity of the model —
    ranked by the same engine and rule the API serves — and of every baseline (global mean,
    damped bias, most popular, EASE) on the same P1 split, and cold-start (P2) metrics for
    k = 3, 5, 10 revealed ratings: the P2 model is trained on P2 train with the same
    hyper-parameters, so no cold user is ever seen."""
    with tracked_step(mlflow) as run:
        report = steps.evaluate_model(
            warehouse_db.get_connection, two_tower_model, log=context.log.info
        )
        tracking.log_evaluation(run, report)
    model = report.row(P1, MODEL_NAME)
    context.add_output_metadata(
        {
            **{k: model[k] for k in ("rmse", "mae", "ndcg@10", "recall@10", "coverage@10")},
            "P1 (model and baselines)": frame_preview(report.p1, rows=10, columns=20),
            "P2 cold start": frame_preview(report.p2, rows=10, columns=20),
        }
    )
    return report


@dg.asset_check(asset=model_evaluation, blocking=True)
def predictions_in_range(model_evaluation: EvaluationReport) -> dg.AssetCheckResult:
    """Every test prediction is a finite number of stars in [0.5, 5]."""
    failure = prediction_range_failure(model_evaluation.test_predicted)
    return dg.AssetCheckResult(
        passed=failure is None,
        description=failure or "all test predictions are finite and within [0.5, 5]",
        metadata={"predictions": len(model_evaluation.test_predicted)},
    )


@dg.asset_check(asset=model_evaluation, blocking=True)
def beats_baselines(
    config: PromotionGateConfig, model_evaluation: EvaluationReport
) -> dg.AssetCheckResult:
    """The served ranking beats the baselines: P1 RMSE below damped bias, P1 NDCG@10 at least
    `ndcg_ratio` x most popular, cold-start (P2, k = 3) NDCG@10 at least most popular."""
    failures = model_evaluation.gate_failures(
        config.rmse_margin, config.ndcg_ratio, config.cold_ndcg_ratio
    )
    return dg.AssetCheckResult(
        passed=not failures,
        description="; ".join(failures)
        or f"beats damped_bias on RMSE, {config.ndcg_ratio} x most_popular on NDCG@10 and "
        f"{config.cold_ndcg_ratio} x most_popular on cold-start NDCG@10",
        metadata=model_evaluation.metrics(),
    )


@dg.asset(group_name="model", kinds=MODEL_KINDS, pool=TRAINING_POOL, deps=[model_evaluation])
def production_model(
    context: dg.AssetExecutionContext,
    two_tower_model: steps.ModelArtefact,
    warehouse_db: WarehouseResource,
    artifacts: ArtifactStoreResource,
    mlflow: dg.ResourceParam[LazyMlFlow],
) -> steps.ModelArtefact:
    """The evaluated recipe refit on EVERY rating of the release (same hyper-parameters, the
    epochs early stopping chose, the ranking rule chosen on validation) once the evaluation's
    gates passed: the model the serving bundle carries."""
    model = steps.refit_production(
        warehouse_db.get_connection,
        two_tower_model,
        artifacts.run_dir("models", context.run_id) / "prod",
        log=context.log.info,
    )
    trained_on = {k: str(v) for k, v in model.info["trained_on"].items()}
    with tracked_step(mlflow) as run:
        run.log_artifacts(str(model.folder), artifact_path="production_model")
        run.set_tags({f"production.{k}": v for k, v in trained_on.items()})
    context.add_output_metadata(
        {
            **{f"trained_on {k}": v for k, v in trained_on.items()},
            "epochs": int(model.info["epochs_run"]),
            "ranking_rule": model.ranking_rule,
            "train_seconds": float(model.info.get("train_seconds", 0.0)),
            "path": dg.MetadataValue.path(str(model.folder)),
        }
    )
    return model


@dg.asset(group_name="model", kinds={"python", "duckdb"}, pool=WAREHOUSE_POOL)
def user_features(
    context: dg.AssetExecutionContext,
    production_model: steps.ModelArtefact,
    warehouse_db: WarehouseResource,
    artifacts: ArtifactStoreResource,
) -> steps.ArrayArtefact:
    """Feature vectors of every user of the release from ALL their ratings (count, mean, damped
    bias, shrunk per-genre preferences, recency), with the production model's transform — built
    by the same function that serves a new user from a list of ratings."""
    users = steps.user_features(
        warehouse_db.get_connection,
        production_model,
        artifacts.run_dir("user_features", context.run_id) / USER_FEATURES_FILE,
    )
    context.add_output_metadata(
        {
            "dagster/row_count": users.rows,
            "columns": dg.MetadataValue.json(users.extra["columns"]),
            "path": dg.MetadataValue.path(str(users.path)),
        }
    )
    return users


@dg.asset(group_name="model", kinds=SERVING_KINDS, pool=WAREHOUSE_POOL, deps=[catalog])
def item_embeddings(
    context: dg.AssetExecutionContext,
    production_model: steps.ModelArtefact,
    warehouse_db: WarehouseResource,
    artifacts: ArtifactStoreResource,
) -> steps.ArrayArtefact:
    """The production model's item-tower embeddings and ranking biases of every catalogue title
    — also of titles no MovieLens user rated (content-only cold start)."""
    embeddings = steps.item_embeddings(
        warehouse_db.get_connection,
        production_model,
        artifacts.run_dir("item_embeddings", context.run_id) / "items.npz",
    )
    context.add_output_metadata(
        {
            "dagster/row_count": embeddings.rows,
            "dimensions": embeddings.dimensions,
            "titles_without_ratings": embeddings.extra["titles_without_ratings"],
            "path": dg.MetadataValue.path(str(embeddings.path)),
        }
    )
    return embeddings


@dg.asset(group_name="model", kinds=SERVING_KINDS, pool=WAREHOUSE_POOL, deps=[catalog])
def content_index(
    context: dg.AssetExecutionContext,
    content_features: steps.ContentArtefact,
    warehouse_db: WarehouseResource,
    artifacts: ArtifactStoreResource,
) -> steps.ContentIndexArtefact:
    """Normalised float32 content vectors + id order + filter columns (title type, year, votes,
    genres) for cosine top-k: exact, or an HNSW graph (recall@10 checked at build) above
    `backends.APPROXIMATE_THRESHOLD` titles."""
    index = steps.content_index(
        warehouse_db.get_connection,
        content_features,
        artifacts.run_dir("content_index", context.run_id),
    )
    context.add_output_metadata(
        {
            "dagster/row_count": index.titles,
            "dimensions": index.dimensions,
            "genres": dg.MetadataValue.json(index.genres),
            "title_types": dg.MetadataValue.json(index.title_types),
            "approximate": index.approximate,
            "recall_at_10": dg.MetadataValue.null()
            if index.recall_at_10 is None
            else dg.MetadataValue.float(index.recall_at_10),
            "path": dg.MetadataValue.path(str(index.folder)),
        }
    )
    return index


model_assets = [
    two_tower_model, model_evaluation, production_model, user_features, item_embeddings,
    content_index,
]  # fmt: skip
model_checks = [predictions_in_range, beats_baselines]
