"""MLflow run lifecycle inside Dagster steps, and the sensors that end runs a dead step left."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from dagster_mlflow.resources import MlFlow
from mlflow.entities import RunStatus

from orchestration.resources import LazyMlFlow, RegistryResource, mlflow_status_for
from recommender_lib.registry.tracking import end_runs_tagged

# The daemon's default sensor interval: a killed run's MLflow run ends within about a minute
# (and at the latest when the next run logs, see `LazyMlFlow`).
RUN_END_SENSOR_INTERVAL_S = 30


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
    A process killed mid-step skips this: `end_mlflow_runs_of_ended_run` and `LazyMlFlow` end
    such runs.
    """
    mlflow = resource.get()
    _resume(mlflow)
    try:
        yield mlflow
    except BaseException:
        mlflow.end_run(status=RunStatus.to_string(RunStatus.FAILED))
        raise
    mlflow.end_run()


def end_mlflow_runs_of_ended_run(
    context: dg.RunStatusSensorContext, model_registry: RegistryResource
) -> dg.SkipReason:
    """End the RUNNING MLflow runs tagged with the Dagster run that just failed or was canceled."""
    run = context.dagster_run
    status = mlflow_status_for(run) or "FAILED"
    ended = end_runs_tagged(model_registry.tracking_uri, run.run_id, status)
    if ended:
        context.log.warning(f"run {run.run_id} ({run.status.value}): ended MLflow {ended} {status}")
        return dg.SkipReason(f"ended MLflow run(s) {', '.join(ended)} as {status}")
    return dg.SkipReason(f"run {run.run_id}: no RUNNING MLflow run")


@dg.run_failure_sensor(
    minimum_interval_seconds=RUN_END_SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def mlflow_failed_run_sensor(
    context: dg.RunFailureSensorContext, model_registry: RegistryResource
) -> dg.SkipReason:
    """A failed Dagster run (also one whose process was killed): its MLflow run ends FAILED."""
    return end_mlflow_runs_of_ended_run(context, model_registry)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.CANCELED,
    minimum_interval_seconds=RUN_END_SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def mlflow_canceled_run_sensor(
    context: dg.RunStatusSensorContext, model_registry: RegistryResource
) -> dg.SkipReason:
    """A canceled Dagster run: its MLflow run ends KILLED."""
    return end_mlflow_runs_of_ended_run(context, model_registry)


run_end_sensors = [mlflow_failed_run_sensor, mlflow_canceled_run_sensor]
