"""Issue 12, faults 1 and 5: Dagster run hygiene, with real Dagster and MLflow components.

Fault 1: a training-pool step killed with SIGKILL must not block later runs, nor leave its
MLflow run RUNNING. The main test runs the project's `dagster.yaml` in a temp DAGSTER_HOME with
a real code server (`dagster api grpc`) and a real `dagster-daemon`; the code location is
`fault_location` below (a step in the `model_training` pool that logs to MLflow through
`tracked_step`, then blocks until killed).

Fault 5: on a fresh install both dump sensors see a change on their first tick; only one
`full_refresh` run may come of it.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pytest

from orchestration.assets.model import TRAINING_POOL
from orchestration.jobs import full_refresh_job
from orchestration.resources import RawSourcesResource, RegistryResource, mlflow_tracking
from orchestration.sensors import TAG_SOURCE, imdb_dump_sensor, movielens_release_sensor
from orchestration.tracking import (
    mlflow_canceled_run_sensor,
    mlflow_failed_run_sensor,
    run_end_sensors,
    tracked_step,
)
from recommender_lib.registry.tracking import (
    DAGSTER_RUN_TAG,
    DEFAULT_EXPERIMENT,
    ensure_experiment,
)
from tests.support.platform import build_platform

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
ENV_FAULT_DIR = "CINE_FAULT_DIR"  # where the code location keeps its MLflow store and pid files
PROBE_JOB = "training_probe_job"


# --------------------------------------------------------------------------- code location


class ProbeConfig(dg.Config):
    """`block`: after logging epoch 0, write the process id and wait to be killed."""

    block: bool = False


@dg.asset(pool=TRAINING_POOL, required_resource_keys={"mlflow"})
def training_probe(context: dg.AssetExecutionContext, config: ProbeConfig) -> None:
    """A training step in miniature: opens the run's MLflow run, logs an epoch, maybe hangs."""
    with tracked_step(context.resources.mlflow) as tracking:
        tracking.log_metric("val_rmse", 1.0, step=0)
        if config.block:
            pid_file = Path(os.environ[ENV_FAULT_DIR]) / f"{context.run_id}.pid"
            pid_file.write_text(str(os.getpid()))
            while True:  # mid-epoch, until SIGKILL
                time.sleep(0.2)


def tracking_uri(fault_dir: Path) -> str:
    return f"sqlite:///{fault_dir / 'mlflow.db'}"


def probe_resources(fault_dir: Path) -> dict[str, Any]:
    """The MLflow resources of the platform (`default_resources`), on a store in `fault_dir`."""
    uri = tracking_uri(fault_dir)
    return {
        "mlflow": mlflow_tracking.configured(
            {
                "experiment_name": DEFAULT_EXPERIMENT,
                "mlflow_tracking_uri": uri,
                "artifact_root": str(fault_dir / "mlflow-artifacts"),
            }
        ),
        "model_registry": RegistryResource(
            tracking_uri=uri,
            bundle_root=str(fault_dir / "bundles"),
            promotion_log=str(fault_dir / "promotions.jsonl"),
        ),
    }


def fault_location() -> dg.Definitions:
    """The code location the code server loads (`-a fault_location`)."""
    fault_dir = Path(os.environ[ENV_FAULT_DIR])
    return dg.Definitions(
        assets=[training_probe],
        jobs=[dg.define_asset_job(PROBE_JOB, selection=[training_probe])],
        sensors=run_end_sensors,
        resources=probe_resources(fault_dir),
        executor=dg.in_process_executor,
    )


# --------------------------------------------------------------------------- helpers


def wait_for(
    condition: Callable[[], Any], timeout_s: float, what: str, details: Callable[[], str] = str
) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s: {what}\n{details()}")
        time.sleep(0.25)


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mlflow_runs(fault_dir: Path) -> dict[str, tuple[str, str | None]]:
    """Every MLflow run of the store: {run id: (status, dagster run id tag)}."""
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(fault_dir))
    ids = [e.experiment_id for e in client.search_experiments()]
    return {
        r.info.run_id: (r.info.status, r.data.tags.get(DAGSTER_RUN_TAG))
        for r in client.search_runs(ids)
    }


def project_instance(home: Path) -> dg.DagsterInstance:
    """The project's own `dagster.yaml` in `home` (the `dagster_home` fixture: $DAGSTER_HOME)."""
    assert os.environ.get("DAGSTER_HOME") == str(home)
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    return dg.DagsterInstance.from_config(str(home))


class Service:
    """A background process in its own session, logging to a file; stopped on exit."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # its own session: it and its children
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
        self._log.close()


@pytest.fixture
def platform_services(tmp_path: Path, dagster_home: Path) -> Iterator[dict[str, Any]]:
    """Code server + daemon on a temp DAGSTER_HOME with the project's dagster.yaml."""
    home, fault_dir = dagster_home, tmp_path / "faults"
    fault_dir.mkdir()
    instance = project_instance(home)
    port = free_loopback_port()
    workspace = tmp_path / "workspace.yaml"
    server = {"host": "127.0.0.1", "port": port, "location_name": "faults"}
    workspace.write_text(json.dumps({"load_from": [{"grpc_server": server}]}))
    env = {**os.environ, "DAGSTER_HOME": str(home), ENV_FAULT_DIR: str(fault_dir)}
    this_file = str(Path(__file__).resolve())
    services = [
        Service("code_server", [str(VENV_BIN / "dagster"), "api", "grpc", "-h", "127.0.0.1",
                                "-p", str(port), "-f", this_file, "-a", "fault_location",
                                "--working-directory", str(ROOT)], env, tmp_path),
        Service("daemon", [str(VENV_BIN / "dagster-daemon"), "run", "-w", str(workspace)],
                env, tmp_path),
    ]  # fmt: skip

    def serving() -> bool:
        assert services[0].process.poll() is None, services[0].tail()
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0  # bound once the code is loaded

    wait_for(serving, 120, "the code server to listen", services[0].tail)

    def launch(block: bool) -> str:
        config = {"ops": {"training_probe": {"config": {"block": block}}}}
        done = subprocess.run(
            [str(VENV_BIN / "dagster"), "job", "launch", "-w", str(workspace), "-j", PROBE_JOB,
             "--config-json", json.dumps(config)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        runs = instance.get_runs(dg.RunsFilter(job_name=PROBE_JOB))
        return runs[0].run_id  # newest first

    try:
        yield {"instance": instance, "fault_dir": fault_dir, "launch": launch,
               "services": services}  # fmt: skip
    finally:
        for service in reversed(services):
            service.stop()
        instance.dispose()


# --------------------------------------------------------------------------- fault 1


@pytest.mark.slow
def test_sigkilled_training_run_frees_its_pool_slot_and_mlflow_run(
    platform_services: dict[str, Any],
) -> None:
    instance: dg.DagsterInstance = platform_services["instance"]
    fault_dir: Path = platform_services["fault_dir"]
    launch: Callable[[bool], str] = platform_services["launch"]
    services: list[Service] = platform_services["services"]
    assert instance.run_monitoring_enabled  # the project's dagster.yaml, as the daemon reads it

    def logs() -> str:
        return "\n".join(f"--- {s.log_path.name}\n{s.tail()}" for s in services)

    killed = launch(True)
    pid_file = fault_dir / f"{killed}.pid"
    wait_for(pid_file.exists, 180, f"run {killed} to reach its training step", logs)
    pool = instance.event_log_storage.get_concurrency_info(TRAINING_POOL)
    assert [s.run_id for s in pool.claimed_slots] == [killed]  # it holds the only slot
    assert [status for status, tag in mlflow_runs(fault_dir).values() if tag == killed] == [
        "RUNNING"
    ]

    os.kill(int(pid_file.read_text()), signal.SIGKILL)  # mid-epoch
    killed_at = time.monotonic()

    def run_of(run_id: str) -> dg.DagsterRun:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        return run

    def status_of(run_id: str) -> dg.DagsterRunStatus:
        return run_of(run_id).status

    wait_for(lambda: status_of(killed) == dg.DagsterRunStatus.FAILURE, 60, "run failed", logs)
    fresh = launch(False)
    wait_for(
        lambda: (record := instance.get_run_record_by_id(fresh)) and record.start_time,
        60 - (time.monotonic() - killed_at),
        "the new run to start within 60 s of the kill",
        logs,
    )
    started_after = time.monotonic() - killed_at  # it left the queue: the slot is free again
    wait_for(lambda: run_of(fresh).is_finished, 120, "the new run to finish", logs)
    assert status_of(fresh) == dg.DagsterRunStatus.SUCCESS
    elapsed = time.monotonic() - killed_at

    assert not instance.event_log_storage.get_concurrency_info(TRAINING_POOL).claimed_slots
    by_run = {tag: status for status, tag in mlflow_runs(fault_dir).values()}
    assert by_run == {killed: "FAILED", fresh: "FINISHED"}, by_run
    print(f"kill -> new run started {started_after:.1f} s, succeeded {elapsed:.1f} s")


# --------------------------------------------------------------------------- MLflow hygiene


@dg.asset
def dies_mid_training(context: dg.AssetExecutionContext) -> None:
    """Leaves its MLflow run RUNNING and fails, as a process killed mid-epoch does.

    The run is created through the client: MLflow's fluent "active run" would outlive this
    step in the test process, which a killed process's does not.
    """
    _running_run(Path(os.environ[ENV_FAULT_DIR]), context.run_id)
    raise RuntimeError("killed")


@dg.asset(required_resource_keys={"mlflow"})
def logs_one_epoch(context: dg.AssetExecutionContext) -> None:
    with tracked_step(context.resources.mlflow) as tracking:
        tracking.log_metric("val_rmse", 1.0, step=0)


def other_job(resources: dict[str, Any]) -> dg.JobDefinition:
    """A job to create runs of by hand (canceled, in progress)."""
    job = dg.define_asset_job("other", [logs_one_epoch])
    defs = dg.Definitions(assets=[logs_one_epoch], jobs=[job], resources=resources)
    return defs.resolve_job_def("other")


def _running_run(fault_dir: Path, dagster_run_id: str | None) -> str:
    """A RUNNING MLflow run in the platform experiment, tagged with `dagster_run_id`."""
    experiment_id = ensure_experiment(tracking_uri(fault_dir), DEFAULT_EXPERIMENT)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(fault_dir))
    tags = {DAGSTER_RUN_TAG: dagster_run_id} if dagster_run_id else {}
    return client.create_run(experiment_id, tags=tags).info.run_id


@pytest.fixture
def fault_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where `dies_mid_training` finds the MLflow store."""
    monkeypatch.setenv(ENV_FAULT_DIR, str(tmp_path / "faults"))
    return tmp_path / "faults"


def test_run_end_sensors_end_the_mlflow_run_of_a_failed_or_canceled_run(
    fault_dir: Path, dagster_home: Path
) -> None:
    resources = probe_resources(fault_dir)
    with project_instance(dagster_home) as instance:
        failed = dg.materialize(
            [dies_mid_training], resources=resources, instance=instance, raise_on_error=False
        )
        assert not failed.success
        [(mlflow_id, (status, _))] = mlflow_runs(fault_dir).items()
        assert status == "RUNNING"  # what a SIGKILL leaves behind

        [failure] = instance.get_records_for_run(
            failed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE
        ).records
        run = instance.get_run_by_id(failed.run_id)
        assert run is not None and failure.event_log_entry.dagster_event is not None
        context = dg.build_run_status_sensor_context(
            mlflow_failed_run_sensor.name, failure.event_log_entry.dagster_event, instance, run,
            resources={"model_registry": resources["model_registry"]},
        )  # fmt: skip
        outcome = mlflow_failed_run_sensor(context.for_run_failure())
        assert isinstance(outcome, dg.SkipReason) and mlflow_id in (outcome.skip_message or "")
        assert mlflow_runs(fault_dir)[mlflow_id][0] == "FAILED"

        canceled_run = instance.create_run_for_job(
            other_job(resources),
            status=dg.DagsterRunStatus.STARTED,
        )
        canceled_mlflow = _running_run(fault_dir, canceled_run.run_id)
        instance.report_run_canceled(canceled_run)
        [canceled] = instance.get_records_for_run(
            canceled_run.run_id, of_type=dg.DagsterEventType.RUN_CANCELED
        ).records
        event = canceled.event_log_entry.dagster_event
        refreshed = instance.get_run_by_id(canceled_run.run_id)
        assert event is not None and refreshed is not None
        context = dg.build_run_status_sensor_context(
            mlflow_canceled_run_sensor.name, event, instance, refreshed,
            resources={"model_registry": resources["model_registry"]},
        )  # fmt: skip
        mlflow_canceled_run_sensor(context)
        assert mlflow_runs(fault_dir)[canceled_mlflow][0] == "KILLED"
        assert mlflow_runs(fault_dir)[mlflow_id][0] == "FAILED"  # untouched


def test_the_next_run_that_logs_ends_orphaned_mlflow_runs_only(
    fault_dir: Path, dagster_home: Path
) -> None:
    resources = probe_resources(fault_dir)
    with project_instance(dagster_home) as instance:
        failed = dg.materialize(
            [dies_mid_training], resources=resources, instance=instance, raise_on_error=False
        )
        [orphan] = mlflow_runs(fault_dir)
        in_progress = instance.create_run_for_job(
            other_job(resources),
            status=dg.DagsterRunStatus.STARTED,
        )
        live = _running_run(fault_dir, in_progress.run_id)  # a concurrent run: keep it
        untagged = _running_run(fault_dir, None)  # not Dagster's: keep it
        vanished = _running_run(fault_dir, "0" * 36)  # its Dagster run was deleted

        result = dg.materialize([logs_one_epoch], resources=resources, instance=instance)
        runs = mlflow_runs(fault_dir)
        assert runs[orphan] == ("FAILED", failed.run_id)
        assert runs[vanished][0] == "KILLED"
        assert runs[live][0] == "RUNNING" and runs[untagged][0] == "RUNNING"
        assert [s for s, tag in runs.values() if tag == result.run_id] == ["FINISHED"]


# --------------------------------------------------------------------------- fault 5


def _fresh_install(sample_mirror, tmp_path: Path) -> tuple[dg.Definitions, RawSourcesResource]:
    """The platform on a file:// copy of the sample mirror, nothing fetched yet."""
    platform = build_platform(tmp_path, sample_mirror.root)
    return platform.defs, platform.resource("raw_sources")


def _tick(
    sensor: dg.SensorDefinition, instance: dg.DagsterInstance, raw: RawSourcesResource
) -> dg.SensorResult | dg.SkipReason:
    """A first tick (no cursor), evaluated against the instance as the daemon does."""
    context = dg.build_sensor_context(instance=instance, resources={"raw_sources": raw})
    return sensor(context)


def _requests(output: dg.SensorResult | dg.SkipReason) -> list[dg.RunRequest]:
    return list(output.run_requests or []) if isinstance(output, dg.SensorResult) else []


def _submit(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    request: dg.RunRequest,
    status: dg.DagsterRunStatus,
) -> dg.DagsterRun:
    """The run the daemon creates for a request (NOT_STARTED, then queued; here without a code
    location, so `status` stands for where it is: not started, or started but not yet fetching).
    """
    return instance.create_run_for_job(
        defs.resolve_job_def(full_refresh_job.name), tags=request.tags, status=status
    )


@pytest.mark.parametrize(
    ("first", "status"),
    [
        (imdb_dump_sensor, dg.DagsterRunStatus.NOT_STARTED),
        (movielens_release_sensor, dg.DagsterRunStatus.STARTED),
    ],
)
def test_fresh_install_first_ticks_give_one_full_refresh(
    first: dg.SensorDefinition,
    status: dg.DagsterRunStatus,
    sample_mirror,
    tmp_path: Path,
    dagster_home: Path,
) -> None:
    defs, raw = _fresh_install(sample_mirror, tmp_path)
    second = movielens_release_sensor if first is imdb_dump_sensor else imdb_dump_sensor
    with project_instance(dagster_home) as instance:
        [request] = _requests(out_first := _tick(first, instance, raw))
        queued = _submit(defs, instance, request, status)

        out_second = _tick(second, instance, raw)
        assert _requests(out_second) == []
        assert isinstance(out_second, dg.SensorResult) and out_second.skip_reason is not None
        message = out_second.skip_reason.skip_message or ""
        assert message.startswith(f"covered by run {queued.run_id}"), message
        assert out_second.cursor  # the queued run fetches that version: the cursor moves on
        assert len(instance.get_runs(dg.RunsFilter(job_name=full_refresh_job.name))) == 1
        assert out_first.cursor if isinstance(out_first, dg.SensorResult) else False

        # A finished run covers nothing: with the store still empty, the change asks again.
        instance.report_run_failed(queued)
        [again] = _requests(_tick(second, instance, raw))
        assert again.tags[TAG_SOURCE] == ("movielens" if first is imdb_dump_sensor else "imdb")


def test_both_instance_configs_monitor_runs_and_free_pool_slots() -> None:
    import yaml

    embedded = yaml.safe_load((ROOT / "dagster.yaml").read_text())["run_monitoring"]
    compose = yaml.safe_load((ROOT / "docker" / "dagster.postgres.yaml").read_text())
    assert compose["run_monitoring"] == embedded
    assert embedded["enabled"] is True
    # a killed run's slot is free again well within a minute: freed after run end + one poll
    assert embedded["free_slots_after_run_end_seconds"] + embedded["poll_interval_seconds"] <= 30
