"""MLflow run lifecycle inside Dagster steps."""

from collections.abc import Iterator
from contextlib import contextmanager

from dagster_mlflow.resources import MlFlow
from mlflow.entities import RunStatus

from orchestration.resources import LazyMlFlow


def _resume(mlflow: MlFlow) -> None:
    """Make this Dagster run's MLflow run active (an earlier step may have ended it)."""
    if mlflow.active_run() is not None:
        return
    tag = f"tags.dagster_run_id = '{mlflow.dagster_run_id}'"
    runs = mlflow.search_runs(
        experiment_ids=[mlflow.experiment.experiment_id], filter_string=tag, output_format="list"
    )
    if runs:
        mlflow.start_run(run_id=runs[0].info.run_id)
    else:
        mlflow.start_run(run_name=mlflow.run_name, tags={"dagster_run_id": mlflow.dagster_run_id})


@contextmanager
def tracked_step(resource: LazyMlFlow) -> Iterator[MlFlow]:
    """Log into this Dagster run's MLflow run, then end it: FINISHED, or FAILED on error.

    Every step that logs resumes the same MLflow run (found by its `dagster_run_id` tag) and
    ends it when done, so the MLflow run is never left RUNNING and never reused by another run.
    """
    mlflow = resource.get()
    _resume(mlflow)
    try:
        yield mlflow
    except BaseException:
        mlflow.end_run(status=RunStatus.to_string(RunStatus.FAILED))
        raise
    mlflow.end_run()
