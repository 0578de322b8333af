"""MLflow helpers: experiment set-up, per-epoch curves, flattened metrics and diagnostic plots.

Functions take the `mlflow` module (or anything with the same logging API, such as the
dagster-mlflow resource) so they work inside and outside Dagster.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recommender_lib.registry.relocation import (
    MovedStoreError,
    moved_from,
    moved_store_message,
    store_path,
)

if TYPE_CHECKING:
    from recommender_lib.evaluation.report import EvaluationReport

DEFAULT_EXPERIMENT = "cine-reco"
DAGSTER_RUN_TAG = "dagster_run_id"  # set by dagster-mlflow on the MLflow run of a Dagster run


def ensure_experiment(tracking_uri: str, name: str, artifact_root: Path | None = None) -> str:
    """Create the experiment (artifacts under `artifact_root`) unless it exists; return its id.

    With a local SQLite backend MLflow would otherwise put artifacts in `./mlruns` of whatever
    directory the process happens to run in. A local store whose experiment keeps its artifacts
    under another data dir (the data dir was moved) is refused with `MovedStoreError`.
    """
    import mlflow

    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if artifact_root is not None and store_path(tracking_uri) is not None:
            old = moved_from(experiment.artifact_location, artifact_root)
            if old is not None:
                new = artifact_root.parent.parent
                raise MovedStoreError(moved_store_message(tracking_uri, old, new))
        return experiment.experiment_id
    location = None
    if artifact_root is not None:
        artifact_root.mkdir(parents=True, exist_ok=True)
        location = artifact_root.resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def _running_runs(client: Any, experiment_name: str | None, tag_filter: str = "") -> list[Any]:
    """RUNNING runs of one experiment (every active experiment when None), all pages."""
    if experiment_name is None:
        ids = [e.experiment_id for e in client.search_experiments()]
    else:
        experiment = client.get_experiment_by_name(experiment_name)
        ids = [] if experiment is None else [experiment.experiment_id]
    if not ids:
        return []
    query = "attributes.status = 'RUNNING'" + (f" and {tag_filter}" if tag_filter else "")
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(ids, filter_string=query, max_results=500, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def end_runs_tagged(
    tracking_uri: str,
    value: str,
    status: str = "FAILED",
    *,
    tag: str = DAGSTER_RUN_TAG,
    experiment_name: str | None = None,
) -> list[str]:
    """End every RUNNING run whose `tag` is `value` with `status`; return their ids.

    For a Dagster run that died without ending its MLflow run (SIGKILL, OOM): MLflow never
    notices on its own. Searches every experiment unless `experiment_name` is given.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    ended = []
    for run in _running_runs(client, experiment_name, f"tags.{tag} = '{value}'"):
        client.set_terminated(run.info.run_id, status=status)
        ended.append(run.info.run_id)
    return ended


def end_orphaned_runs(
    tracking_uri: str,
    status_of: Callable[[str], str | None],
    *,
    tag: str = DAGSTER_RUN_TAG,
    experiment_name: str | None = None,
) -> dict[str, str]:
    """End RUNNING runs whose owner (the value of `tag`) is gone; return {run id: status}.

    `status_of(owner)` gives the MLflow status to end that run with (`FAILED`, `KILLED`,
    `FINISHED`), or None while its owner still runs. Runs without the tag are left alone.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    ended: dict[str, str] = {}
    for run in _running_runs(client, experiment_name):
        owner = run.data.tags.get(tag)
        status = status_of(owner) if owner else None
        if status is not None:
            client.set_terminated(run.info.run_id, status=status)
            ended[run.info.run_id] = status
    return ended


def log_history(mlflow_api: Any, history: Mapping[str, list[float]]) -> None:
    """Log per-epoch training curves (`loss`, `val_rmse`, ...) with the epoch as the step."""
    for key, values in history.items():
        for epoch, value in enumerate(values):
            if value is not None and math.isfinite(float(value)):
                mlflow_api.log_metric(key, float(value), step=epoch)


def _figure(width: float = 6.0, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=100)


def learning_curves_figure(history: Mapping[str, list[float]]):
    """Training and validation curves per epoch, one line per logged series."""
    fig, ax = _figure()
    for key, values in sorted(history.items()):
        ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=key)
    ax.set(xlabel="epoch", ylabel="value", title="Learning curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def predicted_vs_actual_figure(actual: np.ndarray, predicted: np.ndarray):
    """Box plot of predictions per true rating (half-star bins): calibration at a glance."""
    fig, ax = _figure()
    actual = np.asarray(actual, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    levels = np.unique(actual)
    ax.boxplot([predicted[actual == lv] for lv in levels], showfliers=False)
    ax.set_xticks(range(1, len(levels) + 1), [f"{lv:g}" for lv in levels])
    ax.plot(range(1, len(levels) + 1), levels, "r--", linewidth=1, label="ideal")
    ax.set(xlabel="actual rating", ylabel="predicted rating", title="Predicted vs actual (test)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def rating_distribution_figure(actual: np.ndarray, predicted: np.ndarray):
    """Histogram of true and predicted ratings on the test split."""
    fig, ax = _figure()
    bins = np.arange(0.25, 5.5, 0.5)
    ax.hist(actual, bins=bins, alpha=0.6, label="actual")
    ax.hist(predicted, bins=bins, alpha=0.6, label="predicted")
    ax.set(xlabel="stars", ylabel="ratings", title="Rating distribution (test)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def log_figures(mlflow_api: Any, figures: Mapping[str, Any]) -> None:
    """Log matplotlib figures as PNG artifacts under `plots/` and close them."""
    import matplotlib.pyplot as plt

    for name, fig in figures.items():
        mlflow_api.log_figure(fig, f"plots/{name}.png")
        plt.close(fig)


def log_training(
    mlflow_api: Any,
    params: Mapping[str, Any],
    history: Mapping[str, list[float]],
    data_versions: Mapping[str, str],
    ranking_rule: str,
) -> None:
    """A training step's params, data versions, ranking rule, curves and learning-curve plot."""
    mlflow_api.log_params({k: str(v) for k, v in params.items()})
    mlflow_api.set_tags({f"data.{table}": version for table, version in data_versions.items()})
    mlflow_api.set_tags({"ranking_rule": ranking_rule})
    log_history(mlflow_api, history)
    log_figures(mlflow_api, {"learning_curves": learning_curves_figure(history)})


def log_evaluation(mlflow_api: Any, report: EvaluationReport) -> None:
    """Every metric of the model and the baselines, the report as JSON and calibration plots."""
    mlflow_api.log_metrics(report.logged_metrics())
    mlflow_api.log_text(report.to_json(), "evaluation.json")
    actual, predicted = report.test_actual, report.test_predicted
    log_figures(
        mlflow_api,
        {
            "predicted_vs_actual": predicted_vs_actual_figure(actual, predicted),
            "rating_distribution": rating_distribution_figure(actual, predicted),
        },
    )
