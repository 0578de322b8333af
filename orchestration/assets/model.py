"""Model group: the two-tower model, its evaluation through the served ranking against the
baselines, and the production refit on every rating of the release that the bundle carries.

Training runs in-process (TensorFlow is imported inside the training code, not at load) and
logs to one MLflow run per Dagster run: params, per-epoch curves, data versions, the model and
its transforms, every metric of the model and of each baseline, and diagnostic plots.
"""

from pathlib import Path

import dagster as dg

from orchestration.config import PromotionGateConfig, TwoTowerConfig
from orchestration.metadata import frame_preview
from orchestration.resources import (
    WAREHOUSE_POOL,
    ArtifactStoreResource,
    LazyMlFlow,
    WarehouseResource,
)
from orchestration.tracking import tracked_step
from recommender_lib.modeling import splits
from recommender_lib.modeling.two_tower import TrainedTwoTower
from recommender_lib.registry import tracking
from recommender_lib.warehouse import tables as warehouse
from recommender_lib.workflow import training

TRAINING_POOL = "model_training"
MODEL_KINDS = {"tensorflow", "mlflow"}


@dg.asset(group_name="model", kinds=MODEL_KINDS, pool=TRAINING_POOL)
def two_tower_model(
    context: dg.AssetExecutionContext,
    config: TwoTowerConfig,
    item_features: str,
    warehouse_db: WarehouseResource,
    artifacts: ArtifactStoreResource,
    mlflow: dg.ResourceParam[LazyMlFlow],
) -> str:
    """The two-tower model trained on the P1 train split (early stopping on validation RMSE), its
    ranking rule chosen on validation NDCG@10 through the served ranking, and its per-epoch
    history: the evaluated recipe. Returns the folder of the saved model."""
    params = config.to_lib()
    with warehouse_db.get_connection() as conn:
        data = training.load_protocol(conn, splits.P1)
        versions = warehouse.source_versions(conn)
    with tracked_step(mlflow) as run:
        run.log_params({k: str(v) for k, v in params.to_dict().items()})
        run.set_tags({f"data.{table}": version for table, version in versions.items()})
        model = training.train_model(
            data, params, training.load_item_features(Path(item_features)), log=context.log.info
        )
        folder = training.save_model(model, artifacts.run_dir("models", context.run_id) / "p1")
        run.set_tags({"ranking_rule": model.ranking.describe()})
        tracking.log_history(run, model.history)
        run.log_artifacts(str(folder), artifact_path="model")
        tracking.log_figures(
            run, {"learning_curves": tracking.learning_curves_figure(model.history)}
        )
        mlflow_run_id = run.active_run().info.run_id
    epochs = len(next(iter(model.history.values()), []))
    context.add_output_metadata(
        {
            "epochs": epochs,
            "train_rows": len(data.train),
            "validation_rows": len(data.validation),
            "train_seconds": float(model.info.get("train_seconds", 0.0)),
            "mlflow_run_id": mlflow_run_id,
            "best_epoch": int(model.info["best_epoch"]),
            "ranking_rule": model.ranking.describe(),
            "path": dg.MetadataValue.path(str(folder)),
            **{f"final {k}": float(v[-1]) for k, v in model.history.items() if v},
        }
    )
    return str(folder)


@dg.asset(group_name="model", kinds=MODEL_KINDS, pool=TRAINING_POOL)
def model_evaluation(
    context: dg.AssetExecutionContext,
    two_tower_model: str,
    warehouse_db: WarehouseResource,
    mlflow: dg.ResourceParam[LazyMlFlow],
) -> training.EvaluationReport:
    """RMSE/MAE in stars, NDCG@10/Recall@10, coverage@10 and mean popularity of the model —
    ranked by the same engine and rule the API serves — and of every baseline (global mean,
    damped bias, most popular, EASE) on the same P1 split, and cold-start (P2) metrics for
    k = 3, 5, 10 revealed ratings: the P2 model is trained on P2 train with the same
    hyper-parameters, so no cold user is ever seen."""
    model_p1 = TrainedTwoTower.load(two_tower_model)
    with warehouse_db.get_connection() as conn:
        p1 = training.load_protocol(conn, splits.P1)
        p2 = training.load_protocol(conn, splits.P2)
        p2_features = training.fit_protocol_features(conn, splits.P2, model_p1.params)
    with tracked_step(mlflow) as run:
        model_p2 = training.train_model(p2, model_p1.params, p2_features, log=context.log.info)
        report = training.evaluate_models(p1, model_p1, p2, model_p2)
        run.log_metrics(report.logged_metrics())
        run.log_text(report.to_json(), "evaluation.json")
        tracking.log_figures(
            run,
            {
                "predicted_vs_actual": tracking.predicted_vs_actual_figure(
                    report.test_actual, report.test_predicted
                ),
                "rating_distribution": tracking.rating_distribution_figure(
                    report.test_actual, report.test_predicted
                ),
            },
        )
    model = report.row(splits.P1, training.MODEL_NAME)
    context.add_output_metadata(
        {
            "rmse": model["rmse"],
            "mae": model["mae"],
            "ndcg@10": model["ndcg@10"],
            "recall@10": model["recall@10"],
            "coverage@10": model["coverage@10"],
            "P1 (model and baselines)": frame_preview(report.p1, rows=10, columns=20),
            "P2 cold start": frame_preview(report.p2, rows=10, columns=20),
        }
    )
    return report


@dg.asset_check(asset=model_evaluation, blocking=True)
def predictions_in_range(model_evaluation: training.EvaluationReport) -> dg.AssetCheckResult:
    """Every test prediction is a finite number of stars in [0.5, 5]."""
    failure = training.prediction_range_failure(model_evaluation.test_predicted)
    return dg.AssetCheckResult(
        passed=failure is None,
        description=failure or "all test predictions are finite and within [0.5, 5]",
        metadata={"predictions": len(model_evaluation.test_predicted)},
    )


@dg.asset_check(asset=model_evaluation, blocking=True)
def beats_baselines(
    config: PromotionGateConfig, model_evaluation: training.EvaluationReport
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
    two_tower_model: str,
    warehouse_db: WarehouseResource,
    artifacts: ArtifactStoreResource,
    mlflow: dg.ResourceParam[LazyMlFlow],
) -> str:
    """The evaluated recipe refit on EVERY rating of the release (same hyper-parameters, the
    epochs early stopping chose, the ranking rule chosen on validation) once the evaluation's
    gates passed: the model the serving bundle carries. Returns the folder of the saved model."""
    evaluated = TrainedTwoTower.load(two_tower_model)
    with warehouse_db.get_connection() as conn:
        model = training.refit_production(conn, evaluated, log=context.log.info)
    with tracked_step(mlflow) as run:
        folder = training.save_model(model, artifacts.run_dir("models", context.run_id) / "prod")
        run.log_artifacts(str(folder), artifact_path="production_model")
        run.set_tags({f"production.{k}": str(v) for k, v in model.info["trained_on"].items()})
    context.add_output_metadata(
        {
            **{f"trained_on {k}": str(v) for k, v in model.info["trained_on"].items()},
            "epochs": int(model.info["epochs_run"]),
            "ranking_rule": model.ranking.describe(),
            "train_seconds": float(model.info.get("train_seconds", 0.0)),
            "path": dg.MetadataValue.path(str(folder)),
        }
    )
    return str(folder)


@dg.asset(group_name="model", kinds={"python", "duckdb"}, pool=WAREHOUSE_POOL)
def user_features(
    context: dg.AssetExecutionContext,
    production_model: str,
    warehouse_db: WarehouseResource,
    artifacts: ArtifactStoreResource,
) -> str:
    """Feature vectors of every user of the release from ALL their ratings (count, mean, damped
    bias, shrunk per-genre preferences, recency), with the production model's transform — built
    by the same function that serves a new user from a list of ratings. Returns the `.npz`."""
    model = TrainedTwoTower.load(production_model)
    with warehouse_db.get_connection() as conn:
        user_ids, matrix = training.known_user_features(conn, model.transform, model.items)
    path = training.save_user_features(
        artifacts.run_dir("user_features", context.run_id) / training.USER_FEATURES_FILE,
        user_ids,
        matrix,
    )
    context.add_output_metadata(
        {
            "dagster/row_count": len(user_ids),
            "columns": dg.MetadataValue.json(model.transform.user_columns),
            "path": dg.MetadataValue.path(str(path)),
        }
    )
    return str(path)


model_assets = [two_tower_model, model_evaluation, production_model, user_features]
model_checks = [predictions_in_range, beats_baselines]
