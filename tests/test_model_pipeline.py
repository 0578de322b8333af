"""Features -> model -> evaluation -> registry -> champion as real Dagster runs, real MLflow."""

from pathlib import Path

import mlflow
import pytest

from orchestration.resources import RegistryResource
from recommender_lib.config import ENV_MLFLOW_TRACKING_URI
from recommender_lib.registry.client import Registry
from recommender_lib.registry.tracking import DEFAULT_EXPERIMENT
from tests.support.platform import Platform, build_platform

TINY_MODEL = {"epochs": 2, "embedding_dim": 8, "tower_units": [16], "head_units": [16]}
NO_RANKING_GATE = {"ndcg_ratio": 0.0, "cold_ndcg_ratio": 0.0}  # a 2-epoch model on tiny data


def _platform(tmp_path: Path, mirror_root: Path) -> Platform:
    """The platform reading `mirror_root`, tracking in `_uri` and registering `test-model`."""
    return build_platform(
        tmp_path,
        mirror_root,
        env={ENV_MLFLOW_TRACKING_URI: _uri(tmp_path)},
        resource_overrides={
            "model_registry": RegistryResource(
                tracking_uri=_uri(tmp_path),
                model_name="test-model",
                bundle_root=str(tmp_path / "bundles"),
                promotion_log=str(tmp_path / "promotions.jsonl"),
            )
        },
    )


def _uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _registry(tmp_path: Path) -> Registry:
    """The registry the runs of `_platform(tmp_path, ...)` register into and promote in."""
    return Registry(_uri(tmp_path), "test-model", tmp_path / "promotions.jsonl")


def _run(
    tmp_path: Path,
    mirror_root: Path,
    model_config: dict,
    gate: dict | None = None,
    tolerance: float | None = None,
):
    ops: dict = {"two_tower_model": {"config": model_config}}
    if gate:
        ops["model_evaluation_beats_baselines"] = {"config": gate}
    if tolerance is not None:
        ops["model_version_not_worse_than_champion"] = {"config": {"tolerance": tolerance}}
    return _platform(tmp_path, mirror_root).materialize(run_config={"ops": ops})


def _runs(tmp_path: Path) -> list:
    client = mlflow.MlflowClient(tracking_uri=_uri(tmp_path))
    experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    return client.search_runs([experiment.experiment_id])


@pytest.mark.slow
def test_training_run_end_to_end(sample_mirror, tmp_path: Path) -> None:
    result = _run(tmp_path, sample_mirror.root, TINY_MODEL, gate=NO_RANKING_GATE)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["predictions_in_range"] is True
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"catalog", "content_features", "rating_splits", "item_features", "user_features",
            "two_tower_model", "model_evaluation", "production_model", "item_embeddings",
            "content_index",
            "model_version", "champion"} <= materialized  # fmt: skip
    assert checks["serves_sane_answers"] is True and checks["not_worse_than_champion"] is True
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
    client = mlflow.MlflowClient(tracking_uri=_uri(tmp_path))
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
    assert not {"model_version", "champion"} & materialized
    assert _registry(tmp_path).champion() is None
    assert [r.info.status for r in _runs(tmp_path)] == ["FINISHED"]  # ended, not left RUNNING


@pytest.mark.slow
def test_registry_promotion_and_a_blocked_second_version(sample_mirror, tmp_path: Path) -> None:
    first = _run(tmp_path, sample_mirror.root, TINY_MODEL, gate=NO_RANKING_GATE)
    assert first.success
    champ = _registry(tmp_path).champion()
    assert champ is not None and champ.version == "1"
    assert champ.tags["dagster_run_id"] == first.run_id
    assert any(k.startswith("metric.P1.two_tower.") for k in champ.tags)
    assert any(k.startswith("source.") for k in champ.tags)
    assert champ.tags["trained_on"] == "full refit" and champ.tags["ranking_rule"]
    # The same training again must now *improve* on the champion by 50 %: it cannot, so the
    # second version is registered but the alias stays where it was.
    second = _run(tmp_path, sample_mirror.root, TINY_MODEL, gate=NO_RANKING_GATE,
                  tolerance=-0.5)  # fmt: skip
    checks = {e.check_name: e.passed for e in second.get_asset_check_evaluations()}
    assert checks["serves_sane_answers"] is True and checks["not_worse_than_champion"] is False
    versions = _registry(tmp_path).list_versions()
    assert [v.version for v in versions] == ["1", "2"]
    assert _registry(tmp_path).champion().version == "1"
    log = _registry(tmp_path).promotions()
    assert [(r.from_version, r.to_version, r.action) for r in log] == [(None, "1", "promote")]
    # Each run logged into its own single MLflow run, both ended.
    assert sorted(r.info.status for r in _runs(tmp_path)) == ["FINISHED", "FINISHED"]
