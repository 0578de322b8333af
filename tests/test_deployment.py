"""The docker-compose deployment: compose wiring, instance config, monitoring, real PostgreSQL."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from recommender_lib import config

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKER = ROOT / "docker"
POSTGRES_YAML = DOCKER / "dagster.postgres.yaml"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "cine-reco-api.json"
APP_SERVICES = ("user_code", "webserver", "daemon", "api")  # they run platform code
BUILT_SERVICES = (*APP_SERVICES, "mlflow")
DAGSTER_HOME = "/opt/dagster/dagster_home"
DATA_DIR = "/opt/cine/data"
PG_ENV = {
    "DAGSTER_POSTGRES_HOST": "127.0.0.1",
    "DAGSTER_POSTGRES_USER": "dagster",
    "DAGSTER_POSTGRES_PASSWORD": "unused-with-trust-auth",
    "DAGSTER_POSTGRES_DB": "postgres",
    "DAGSTER_POSTGRES_PORT": "5432",
}
DASHBOARD_METRICS = {
    "http_request_duration_seconds_bucket",
    "http_requests_total",
    "cine_model_version_info",
    "cine_model_reloads_total",
    "cine_model_reload_failures_total",
    "cine_recommendation_duration_seconds_bucket",
    "cine_feedback_events_total",
    "cine_feedback_rejected_total",
}
PROMQL_FUNCTIONS = {"sum", "max", "rate", "increase", "histogram_quantile", "clamp_min"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def compose_default(value: str) -> str:
    """The default of a `${VAR:-default}` value (the value itself when it is literal)."""
    match = re.fullmatch(r"\$\{\w+:-(.*)\}", value)
    return match.group(1) if match else value


def option(command: list[str], name: str) -> str:
    """The value after `name` in a command list."""
    return command[command.index(name) + 1]


def named_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Named-volume mounts of a service: {volume name: target}."""
    mounts = {}
    for entry in service.get("volumes", []):
        source, target = entry.split(":")[:2]
        if not source.startswith((".", "/")):
            mounts[source] = target
    return mounts


# --------------------------------------------------------------------------- docker-compose.yml


def test_services_images_and_builds(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {*BUILT_SERVICES, "postgres", "prometheus", "grafana"}
    assert services["postgres"]["image"] == "postgres:16"
    for name in BUILT_SERVICES:
        assert services[name]["build"] == ".", name
        assert services[name]["image"] == "cine-reco:latest", name
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")


def test_commands(services: dict[str, dict[str, Any]]) -> None:
    assert services["user_code"]["command"] == [
        "dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000",
        "-m", "orchestration.definitions",
    ]  # fmt: skip
    assert services["webserver"]["command"] == [
        "dagster-webserver", "-h", "0.0.0.0", "-p", "3000", "-w", "workspace.docker.yaml",
    ]  # fmt: skip
    assert services["daemon"]["command"][:2] == ["dagster-daemon", "run"]
    mlflow = services["mlflow"]["command"]
    assert mlflow[:2] == ["mlflow", "server"]
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3: name the psycopg2 driver.
    assert option(mlflow, "--backend-store-uri").startswith("postgresql+psycopg2://")
    assert option(mlflow, "--backend-store-uri").endswith("@postgres:5432/mlflow")
    assert option(mlflow, "--artifacts-destination") == "/mlartifacts"
    assert "--serve-artifacts" in mlflow
    assert (option(mlflow, "--host"), option(mlflow, "--port")) == ("0.0.0.0", "5000")
    assert "mlflow:*" in option(mlflow, "--allowed-hosts")  # other containers' Host header
    api = services["api"]["command"]
    assert api[:2] == ["uvicorn", "serving.app:app"]
    assert (option(api, "--host"), option(api, "--port")) == ("0.0.0.0", "8000")
    assert option(api, "--workers") == "${API_WORKERS:-1}"


def test_ports(services: dict[str, dict[str, Any]]) -> None:
    published = {name: s.get("ports", []) for name, s in services.items()}
    assert published["webserver"] == ["3000:3000"]
    assert published["mlflow"] == ["5000:5000"]
    assert published["api"] == ["8000:8000"]
    assert published["postgres"] == [] and published["user_code"] == []
    host_ports = [p.split(":")[0] for ports in published.values() for p in ports]
    assert len(host_ports) == len(set(host_ports)), "two services publish one host port"
    assert services["user_code"]["expose"] == ["4000"]


def test_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    def probe(name: str) -> str:
        return " ".join(services[name]["healthcheck"]["test"])

    assert "pg_isready" in probe("postgres")
    assert "dagster api grpc-health-check -p 4000" in probe("user_code")
    assert "urllib.request" in probe("api") and "http://localhost:8000/ready" in probe("api")
    assert "http://localhost:5000/health" in probe("mlflow")
    for name in ("postgres", "user_code", "api", "mlflow"):
        assert services[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")


def test_depends_on_conditions(services: dict[str, dict[str, Any]]) -> None:
    healthy = {"condition": "service_healthy"}
    for name in ("webserver", "daemon"):
        assert services[name]["depends_on"] == {"postgres": healthy, "user_code": healthy}
    assert services["user_code"]["depends_on"] == {"postgres": healthy}
    assert services["mlflow"]["depends_on"] == {"postgres": healthy}
    assert services["api"]["depends_on"] == {"mlflow": healthy}
    for name, service in services.items():  # no dependency on an undefined service
        assert set(service.get("depends_on", {})) <= set(services), name


def test_every_app_service_gets_the_same_env_block(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    env = compose["x-cine-env"]
    for name in APP_SERVICES:  # the same block; a service may add its own settings on top
        assert env.items() <= services[name]["environment"].items(), name
    assert env[config.ENV_DATA_DIR] == DATA_DIR
    assert env[config.ENV_WAREHOUSE_PATH].startswith(f"{DATA_DIR}/")
    assert compose_default(env[config.ENV_IMDB_BASE_URL]) == config.IMDB_BASE_URL
    assert compose_default(env[config.ENV_MOVIELENS_URL]) == config.MOVIELENS_URL
    assert compose_default(env[config.ENV_RAW_RETENTION]) == "3"
    assert env[config.ENV_MLFLOW_TRACKING_URI] == "http://mlflow:5000"
    assert env["DAGSTER_HOME"] == DAGSTER_HOME
    assert env["DAGSTER_POSTGRES_HOST"] == "postgres"
    assert set(PG_ENV) <= set(env)
    assert "CINE_SENSOR_INTERVAL_S" in env
    # One set of credentials: the server's, Dagster's and MLflow's.
    pg = services["postgres"]["environment"]
    assert env["DAGSTER_POSTGRES_USER"] == pg["POSTGRES_USER"]
    assert env["DAGSTER_POSTGRES_PASSWORD"] == pg["POSTGRES_PASSWORD"]
    assert env["DAGSTER_POSTGRES_DB"] == pg["POSTGRES_DB"]
    uri = services["mlflow"]["command"][
        services["mlflow"]["command"].index("--backend-store-uri") + 1
    ]
    assert uri.startswith(f"postgresql+psycopg2://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@")


def test_named_volumes_and_bind_mounts(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set(compose["volumes"])
    used = set()
    for name, service in services.items():
        mounts = named_mounts(service)
        used |= set(mounts)
        assert set(mounts) <= declared, name
        for entry in service.get("volumes", []):
            source = entry.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} is missing"
    assert used == declared, "a declared volume is unused"
    assert named_mounts(services["postgres"]) == {"postgres-data": "/var/lib/postgresql/data"}
    for name in ("user_code", "api"):  # runs write the data dir, the API reads bundles from it
        assert named_mounts(services[name])["cine-data"] == DATA_DIR
    for name in ("user_code", "webserver", "daemon"):  # compute logs written by runs
        assert named_mounts(services[name])["dagster-storage"] == f"{DAGSTER_HOME}/storage"
    assert named_mounts(services["mlflow"]) == {"mlflow-artifacts": "/mlartifacts"}


def test_monitoring_profile(services: dict[str, dict[str, Any]]) -> None:
    profiled = {name for name, s in services.items() if s.get("profiles")}
    assert profiled == {"prometheus", "grafana"}
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert services["grafana"]["profiles"] == ["monitoring"]
    mounts = {e.split(":")[1]: e.split(":")[0] for e in services["grafana"]["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == "./docker/grafana/provisioning"
    provider = load_yaml(DOCKER / "grafana/provisioning/dashboards/dashboards.yml")["providers"][0]
    assert mounts[provider["options"]["path"]] == "./docker/grafana/dashboards"
    prom_mounts = {e.split(":")[1]: e.split(":")[0] for e in services["prometheus"]["volumes"]}
    assert prom_mounts["/etc/prometheus/prometheus.yml"] == "./docker/prometheus/prometheus.yml"


def _compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) or `docker-compose`, whichever works here."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_config_validates_with_docker() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    check = subprocess.run(
        [*command, "-f", str(COMPOSE), "--profile", "monitoring", "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr


# --------------------------------------------------------------------------- image and workspace


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    assert lines[next(i for i, x in enumerate(lines) if not x.startswith("#"))] == (
        "FROM python:3.11-slim"
    )
    assert "uv pip install --system --no-cache -r requirements.lock" in text
    assert "uv pip install --system --no-cache --no-deps ." in text
    assert f"DAGSTER_HOME={DAGSTER_HOME}" in text
    assert "COPY docker/dagster.postgres.yaml ${DAGSTER_HOME}/dagster.yaml" in text
    assert "COPY docker/workspace.docker.yaml ./workspace.docker.yaml" in text
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    # The lock is installed before the sources are copied (layer caching).
    assert text.index("-r requirements.lock") < text.index("COPY recommender_lib")
    # Every COPY source exists; a package folder may still be empty in a fresh clone (git keeps
    # no empty folders), so it only has to be one of the project's packages.
    packages = {
        pattern.rstrip("*")
        for pattern in tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
            "setuptools"
        ]["packages"]["find"]["include"]
    }
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists() or source in packages, f"COPY {source} is missing"


def test_docker_workspace() -> None:
    [location] = load_yaml(DOCKER / "workspace.docker.yaml")["load_from"]
    assert location["grpc_server"]["host"] == "user_code"
    assert location["grpc_server"]["port"] == 4000
    [local] = load_yaml(ROOT / "workspace.yaml")["load_from"]
    assert location["grpc_server"]["location_name"] == local["python_module"]["location_name"]


# --------------------------------------------------------------------------- Dagster instance


def test_postgres_instance_config_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster._core.instance.config import dagster_instance_config
    from dagster._serdes.config_class import ConfigurableClassData

    for key, value in PG_ENV.items():
        monkeypatch.setenv(key, value)
    shutil.copy(POSTGRES_YAML, tmp_path / "dagster.yaml")
    validated, custom_class = dagster_instance_config(str(tmp_path))
    assert custom_class is None
    db = validated["storage"]["postgres"]["postgres_db"]
    assert {field: ref["env"] for field, ref in db.items() if isinstance(ref, dict)} == {
        "hostname": "DAGSTER_POSTGRES_HOST",
        "username": "DAGSTER_POSTGRES_USER",
        "password": "DAGSTER_POSTGRES_PASSWORD",
        "db_name": "DAGSTER_POSTGRES_DB",
        "port": "DAGSTER_POSTGRES_PORT",
    }
    assert db["scheme"] == "postgresql+psycopg2"

    raw = load_yaml(POSTGRES_YAML)
    embedded = load_yaml(ROOT / "dagster.yaml")
    assert raw["run_coordinator"] == embedded["run_coordinator"]
    assert raw["concurrency"] == embedded["concurrency"]
    assert raw["run_launcher"]["class"] == "DefaultRunLauncher"
    for key in ("run_coordinator", "run_launcher"):
        section = raw[key]
        data = ConfigurableClassData(section["module"], section["class"], "{}")
        assert data.rehydrate(as_type=object) is not None  # the class loads


def _pg_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    return candidates[0].parent if candidates else None


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[dict[str, str]]:
    """A throwaway PostgreSQL cluster on a loopback port (skips where it cannot run)."""
    pytest.importorskip("dagster_postgres", reason="dagster-postgres is not installed")
    bindir = _pg_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found")
    run_as: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="cine-pg-"))  # not under pytest's 0700 tmp: see below
    if os.geteuid() == 0:  # initdb refuses to run as root: use an unprivileged account
        account = next((a for a in ("postgres", "nobody") if _has_account(a)), None)
        if account is None:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip("running as root without a `postgres` or `nobody` account")
        entry = pwd.getpwnam(account)
        os.chown(root, entry.pw_uid, entry.pw_gid)
        run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    data, log = root / "data", root / "server.log"
    port = _free_loopback_port()
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )

    def pg(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), capture_output=True, text=True, timeout=timeout, check=False, **run_as
        )

    try:
        init = pg(str(bindir / "initdb"), "-D", str(data), "-U", "dagster", "--auth=trust",
                  "-E", "UTF8", "--no-sync")  # fmt: skip
        if init.returncode != 0:
            pytest.skip(f"initdb failed: {init.stderr.strip()[-500:]}")
        start = pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                   "-o", options, "start")  # fmt: skip
        if start.returncode != 0:
            tail = log.read_text(errors="replace")[-800:] if log.exists() else start.stderr
            pytest.skip(f"PostgreSQL did not start: {tail.strip()}")
        yield {**PG_ENV, "DAGSTER_POSTGRES_PORT": str(port)}
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _has_account(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@dg.asset
def deployment_probe() -> int:
    """A trivial asset materialized against the Postgres-backed instance."""
    return 42


@pytest.mark.slow
def test_materialize_against_real_postgres(
    postgres_server: dict[str, str], dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster._core.launcher import DefaultRunLauncher
    from dagster._core.run_coordinator import QueuedRunCoordinator

    for key, value in postgres_server.items():
        monkeypatch.setenv(key, value)
    home = dagster_home
    shutil.copy(POSTGRES_YAML, home / "dagster.yaml")

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        result = dg.materialize([deployment_probe], instance=instance)
        assert result.success

    with dg.DagsterInstance.from_config(str(home)) as restarted:  # read back from Postgres
        run = restarted.get_run_by_id(result.run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        event = restarted.get_latest_materialization_event(dg.AssetKey("deployment_probe"))
        assert event is not None and event.run_id == result.run_id
        assert isinstance(restarted.run_coordinator, QueuedRunCoordinator)
        assert isinstance(restarted.run_launcher, DefaultRunLauncher)
        concurrency = restarted.get_concurrency_config()
        assert concurrency.run_queue_config.max_concurrent_runs == 4
        assert concurrency.pool_config.default_pool_limit == 1


# --------------------------------------------------------------------------- monitoring


def test_prometheus_scrapes_the_api() -> None:
    [job] = load_yaml(DOCKER / "prometheus/prometheus.yml")["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["api:8000"]


def test_grafana_datasource() -> None:
    [source] = load_yaml(DOCKER / "grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert (source["type"], source["uid"]) == ("prometheus", "prometheus")
    assert source["url"] == "http://prometheus:9090"


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (functions, labels and numbers removed)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(?:by|without)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"(?<![\w.])\d+(?:\.\d+)?(?:e[-+]?\d+)?", "", expr)  # numbers
    return set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr)) - PROMQL_FUNCTIONS


def test_dashboard_uses_only_the_served_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    used = set().union(*(metric_names(e) for e in exprs))
    assert used == DASHBOARD_METRICS
    # ... and the API really exposes every one of them (one request, then a scrape).
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.model_store import ModelStore
    from serving.sources import DirectorySource

    never_loads = ModelStore(DirectorySource(DASHBOARD.parent / "missing"))
    with TestClient(create_app(never_loads, watch=False)) as client:
        client.get("/health")
        scraped = client.get("/metrics").text
    families = {line.split()[2] for line in scraped.splitlines() if line.startswith("# TYPE ")}
    for name in used:
        family = name.removesuffix("_bucket").removesuffix("_total")
        assert family in families or name in families, name
    uids = {p["datasource"]["uid"] for p in panels} | {
        t["datasource"]["uid"] for p in panels for t in p["targets"]
    }
    assert uids == {"prometheus"}
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("request rate", "p50", "p99", "5xx", "model version", "reload", "recommendation"):
        assert topic in titles, topic
    version_panel = next(p for p in panels if "model version" in p["title"].lower())
    assert "{{version}}" in version_panel["targets"][0]["legendFormat"]


def test_metric_name_parser() -> None:
    expr = 'histogram_quantile(0.95, sum by (le, route) (rate(x_bucket{status=~"5.."}[5m]))) / 1e-9'
    assert metric_names(expr) == {"x_bucket"}


# --------------------------------------------------------------------------- CI helper


def test_ci_optional_packages_script_never_fails() -> None:
    script = ROOT / ".ci" / "optional-packages.sh"
    assert os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    env = {k: v for k, v in os.environ.items() if k != "CI"}  # never installs outside CI
    done = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("optional-packages.sh: ")
