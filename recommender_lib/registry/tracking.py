"""MLflow helpers: experiment set-up, per-epoch curves, flattened metrics and diagnostic plots.

Functions take the `mlflow` module (or anything with the same logging API, such as the
dagster-mlflow resource) so they work inside and outside Dagster.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from recommender_lib.evaluation.report import EvaluationReport

DEFAULT_EXPERIMENT = "cine-reco"


def ensure_experiment(tracking_uri: str, name: str, artifact_root: Path | None = None) -> str:
    """Create the experiment (artifacts under `artifact_root`) unless it exists; return its id.

    With a local SQLite backend MLflow would otherwise put artifacts in `./mlruns` of whatever
    directory the process happens to run in.
    """
    import mlflow

    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if artifact_root is not None:
        artifact_root.mkdir(parents=True, exist_ok=True)
        location = artifact_root.resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


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
