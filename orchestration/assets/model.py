"""Model group: the two-tower model and its honest evaluation against the baselines.

Training runs in-process (TensorFlow is imported inside the training code, not at load) and
logs to one MLflow run per Dagster run: params, per-epoch curves, data versions, the model and
its transforms, every metric of the model and of each baseline, and diagnostic plots.
"""

from pathlib import Path

import dagster as dg

from orchestration.config import PromotionGateConfig, TwoTowerConfig
from orchestration.metadata import frame_preview
from orchestration.resources import ArtifactStoreResource, LazyMlFlow, WarehouseResource
from orchestration.tracking import tracked_step
from recommender_lib import splits, tracking, training, warehouse
from recommender_lib.two_tower import TrainedTwoTower

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
    """The two-tower rating model trained on the P1 train split (early stopping on validation),
    with its per-epoch history. Returns the folder of the saved model."""
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
    """RMSE/MAE in stars and NDCG@10/Recall@10 of the model and of every baseline on the same
    P1 split, and cold-start (P2) metrics for k = 3, 5, 10 revealed ratings — the P2 model is
    trained on P2 train with the same hyper-parameters, so no cold user is ever seen."""
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
    """The model beats the damped bias baseline on RMSE and most-popular on NDCG@10 (P1)."""
    failures = model_evaluation.gate_failures(config.rmse_margin, config.ndcg_ratio)
    return dg.AssetCheckResult(
        passed=not failures,
        description="; ".join(failures) or "beats damped_bias on RMSE and most_popular on NDCG@10",
        metadata={k: v for k, v in model_evaluation.metrics().items() if k.startswith("P1.")},
    )


model_assets = [two_tower_model, model_evaluation]
model_checks = [predictions_in_range, beats_baselines]
