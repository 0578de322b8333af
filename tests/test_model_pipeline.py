"""Features -> two-tower model -> evaluation as real Dagster runs with a real MLflow store."""

from pathlib import Path

import dagster as dg
import mlflow
import pytest

from orchestration.assets.features import feature_assets, feature_checks
from orchestration.assets.model import model_assets, model_checks
from orchestration.assets.raw import raw_assets
from orchestration.assets.warehouse import warehouse_assets
from orchestration.checks import warehouse_checks
from orchestration.resources import (
    ArtifactStoreResource,
    RawSourcesResource,
    WarehouseResource,
    mlflow_tracking,
)

TINY_MODEL = {"epochs": 2, "embedding_dim": 8, "tower_units": [16], "head_units": [16]}


@dg.asset(deps=["model_evaluation"])
def registry_probe() -> None:
    """Stands for the model registry: it must not run when the model fails its gate."""


def _resources(tmp_path: Path, mirror_root: Path) -> dict[str, object]:
    return {
        "raw_sources": RawSourcesResource(
            imdb_base_url=(mirror_root / "imdb").as_uri(),
            movielens_url=(mirror_root / "movielens" / "ml-latest-small.zip").as_uri(),
            raw_dir=str(tmp_path / "raw"),
        ),
        "warehouse_db": WarehouseResource(database=str(tmp_path / "warehouse.duckdb")),
        "artifacts": ArtifactStoreResource(root=str(tmp_path / "artifacts")),
        "mlflow": mlflow_tracking.configured(
            {
                "experiment_name": "test",
                "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "artifact_root": str(tmp_path / "mlartifacts"),
            }
        ),
    }


def _run(tmp_path: Path, mirror_root: Path, model_config: dict, gate: dict | None = None):
    ops: dict = {"two_tower_model": {"config": model_config}}
    if gate:
        ops["model_evaluation_beats_baselines"] = {"config": gate}
    return dg.materialize(
        [*raw_assets, *warehouse_assets, *warehouse_checks, *feature_assets, *feature_checks,
         *model_assets,
         *model_checks, registry_probe],
        resources=_resources(tmp_path, mirror_root),
        run_config={"ops": ops},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )  # fmt: skip


def _runs(tmp_path: Path) -> list:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("test")
    return client.search_runs([experiment.experiment_id])


@pytest.mark.slow
def test_training_run_end_to_end(sample_mirror, tmp_path: Path) -> None:
    result = _run(tmp_path, sample_mirror.root, TINY_MODEL, gate={"ndcg_ratio": 0.0})
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["predictions_in_range"] is True
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"catalog", "content_features", "rating_splits", "item_features", "user_features",
            "two_tower_model", "model_evaluation"} <= materialized  # fmt: skip
    assert checks["content_vectors_complete"] is True and checks["pandera_schema"] is True

    runs = _runs(tmp_path)
    assert len(runs) == 1  # one MLflow run per Dagster run
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["dagster_run_id"] == result.run_id
    assert {"P1.two_tower.rmse", "P1.damped_bias.rmse", "P1.most_popular.ndcg_at_10",
            "P2.two_tower.rmse_k3"} <= set(run.data.metrics)  # fmt: skip
    assert "embedding_dim" in run.data.params
    assert any(k.startswith("data.") for k in run.data.tags)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", "plots", "evaluation.json"} <= artifacts
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/learning_curves.png", "plots/predicted_vs_actual.png"} <= plots


@pytest.mark.slow
def test_worse_than_baseline_model_is_blocked(sample_mirror, tmp_path: Path) -> None:
    # An untrainable model (learning rate 0) can at best tie the bias baseline: never beat it.
    result = _run(tmp_path, sample_mirror.root, {**TINY_MODEL, "learning_rate": 0.0})
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["beats_baselines"].passed is False
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "model_evaluation" in materialized
    assert "registry_probe" not in materialized
    assert [r.info.status for r in _runs(tmp_path)] == ["FINISHED"]  # ended, not left RUNNING
