"""The Kubernetes deployment (deploy/k8s): Helm values, manifests and image, against the code.

No cluster is needed. The instance settings of the values are rendered as the chart renders them
and loaded by a real `DagsterInstance`; the training jobs' Kubernetes run tag runs through a real
local run; with `helm` on PATH and `DAGSTER_HELM_CHART` naming a local copy of the chart, the
chart itself renders the values.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from orchestration.assets.model import TRAINING_POOL, model_assets
from orchestration.jobs import POOL_TAG, TRAINING_RUN_TAGS, full_refresh_job, jobs, retrain_job
from orchestration.resources import WAREHOUSE_POOL
from recommender_lib import config as platform_config
from recommender_lib.sources import tmdb
from serving import settings as serving_settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
VALUES = K8S / "values.yaml"
README = K8S / "README.md"
K8S_DOCKERFILE = K8S / "Dockerfile"
K8S_TAG = "dagster-k8s/config"
GPU = "nvidia.com/gpu"
MANIFEST_FILES = ("config.yaml", "storage.yaml", "serving.yaml")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def compose_default(value: str) -> str:
    """The default of a `${VAR:-default}` value (the value itself when it is literal)."""
    match = re.fullmatch(r"\$\{\w+:-(.*)\}", value)
    return match.group(1) if match else value


def lock_version(package: str) -> str:
    lock = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(package)}==(\S+)$", lock, re.MULTILINE)
    assert match, f"{package} not in requirements.lock"
    return match.group(1)


def dockerfile_env(path: Path) -> dict[str, str]:
    """`NAME=value` pairs of the ENV instructions of a Dockerfile."""
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    pairs: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", text, re.MULTILINE):
        pairs.update(re.findall(r"(\w+)=(\S+)", line))
    return pairs


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return load_yaml(VALUES)


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """The Kubernetes objects of the manifests, by (kind, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for name in MANIFEST_FILES:
        for doc in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


@pytest.fixture(scope="module")
def code_server(values: dict[str, Any]) -> dict[str, Any]:
    user = values["dagster-user-deployments"]
    assert user["enabled"] and len(user["deployments"]) == 1
    return user["deployments"][0]


@pytest.fixture(scope="module")
def launcher(values: dict[str, Any]) -> dict[str, Any]:
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    return values["runLauncher"]["config"]["k8sRunLauncher"]


@pytest.fixture(scope="module")
def cine_env(manifests: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    return manifests[("ConfigMap", "cine-env")]["data"]


@pytest.fixture(scope="module")
def api(manifests: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return manifests[("Deployment", "cine-api")]


def test_every_yaml_document_parses() -> None:
    files = sorted(K8S.glob("*.yaml"))
    assert {p.name for p in files} == {"values.yaml", *MANIFEST_FILES}
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
        assert docs, path
        if path != VALUES:
            for doc in docs:
                assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path
                assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "cine-reco"


def test_code_server_loads_our_module_from_our_image(code_server: dict[str, Any]) -> None:
    workspace = load_yaml(ROOT / "workspace.yaml")["load_from"][0]["python_module"]
    assert code_server["codeServerArgs"] == ["-m", workspace["module_name"]]
    compose_cmd = load_yaml(ROOT / "docker-compose.yml")["services"]["user_code"]["command"]
    assert code_server["port"] == int(compose_cmd[compose_cmd.index("-p") + 1])
    image = code_server["image"]
    assert image["repository"].endswith("/cine-reco-k8s")
    assert image["tag"] and image["tag"] != "latest"  # run pods start from this exact image
    built = f"{image['repository']}:{image['tag']}"
    assert built in README.read_text(encoding="utf-8")  # the README builds and pushes it
    assert built in K8S_DOCKERFILE.read_text(encoding="utf-8")


def test_run_pods_get_the_code_servers_env_and_volumes(
    code_server: dict[str, Any], launcher: dict[str, Any]
) -> None:
    assert code_server["includeConfigInLaunchedRuns"] == {"enabled": False}  # one place: below
    for key in ("envConfigMaps", "envSecrets", "volumes", "volumeMounts"):
        assert launcher[key] == code_server[key], key
    assert [e["name"] for e in launcher["envConfigMaps"]] == ["cine-env"]
    assert [e["name"] for e in launcher["envSecrets"]] == ["cine-secrets"]
    container = launcher["runK8sConfig"]["containerConfig"]
    assert GPU not in container["resources"]["limits"]  # only training runs ask for a GPU


def test_shared_volume_at_the_data_dir_everywhere(
    values: dict[str, Any],
    manifests: dict[tuple[str, str], dict[str, Any]],
    code_server: dict[str, Any],
    cine_env: dict[str, str],
    api: dict[str, Any],
) -> None:
    pvc = manifests[("PersistentVolumeClaim", "cine-data")]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    (volume,) = code_server["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    mounts = {m["mountPath"]: m for m in code_server["volumeMounts"]}
    data_dir, home = cine_env["CINE_DATA_DIR"], values["global"]["dagsterHome"]
    assert set(mounts) == {data_dir, f"{home}/storage"}
    assert {m["name"] for m in mounts.values()} == {volume["name"]}
    assert Path(cine_env["CINE_WAREHOUSE_PATH"]).is_relative_to(data_dir)
    image_env = dockerfile_env(ROOT / "Dockerfile")
    assert (image_env["CINE_DATA_DIR"], image_env["DAGSTER_HOME"]) == (data_dir, home)

    pod = api["spec"]["template"]["spec"]
    claims = {v["name"]: v for v in pod["volumes"] if "persistentVolumeClaim" in v}
    (api_data,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] in claims]
    assert claims[api_data["name"]]["persistentVolumeClaim"] == volume["persistentVolumeClaim"]
    assert (api_data["mountPath"], api_data["subPath"]) == (data_dir, mounts[data_dir]["subPath"])
    assert api_data["readOnly"] is True


def test_settings_are_the_compose_ones(cine_env: dict[str, str]) -> None:
    compose_env = load_yaml(ROOT / "docker-compose.yml")["x-cine-env"]
    for key, value in cine_env.items():
        assert compose_default(str(compose_env[key])) == value, key


def _platform_env_names() -> set[str]:
    modules = (platform_config, serving_settings)
    names = {v for m in modules for k, v in vars(m).items() if k.startswith("ENV_")}
    return {*names, tmdb.ENV_TMDB_API_KEY}


def test_env_var_names_are_the_platforms(cine_env: dict[str, str], api: dict[str, Any]) -> None:
    known = _platform_env_names()
    assert set(cine_env) <= known
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"] for e in container["env"]} <= known
    secret_keys = set(re.findall(r"--from-literal=([A-Z_]+)=", README.read_text(encoding="utf-8")))
    assert secret_keys == {platform_config.ENV_FEEDBACK_URL, tmdb.ENV_TMDB_API_KEY}


def test_postgres_as_in_compose(values: dict[str, Any]) -> None:
    pg = values["postgresql"]
    compose_env = load_yaml(ROOT / "docker-compose.yml")["x-cine-env"]
    instance = load_yaml(ROOT / "docker" / "dagster.postgres.yaml")
    assert pg["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    assert pg["postgresqlScheme"] == instance["storage"]["postgres"]["postgres_db"]["scheme"]
    assert pg["postgresqlDatabase"] == compose_default(compose_env["DAGSTER_POSTGRES_DB"])
    assert pg["postgresqlUsername"] == compose_default(compose_env["DAGSTER_POSTGRES_USER"])
    assert pg["service"]["port"] == int(compose_env["DAGSTER_POSTGRES_PORT"])
    readme = README.read_text(encoding="utf-8")
    assert f"create secret generic {values['global']['postgresqlSecretName']}" in readme
    assert "--from-literal=postgresql-password=" in readme  # the key the chart reads


def test_training_runs_go_to_a_gpu_node() -> None:
    training = {retrain_job.name, full_refresh_job.name}
    for job in jobs:
        tags = job.tags or {}
        if job.name in training:
            assert tags[POOL_TAG] == TRAINING_POOL
            assert json.loads(tags[K8S_TAG]) == TRAINING_RUN_TAGS[K8S_TAG]
        else:
            assert K8S_TAG not in tags and POOL_TAG not in tags, job.name
    k8s = TRAINING_RUN_TAGS[K8S_TAG]
    assert isinstance(k8s, dict)
    assert k8s["container_config"]["resources"]["limits"] == {GPU: "1"}
    assert k8s["pod_spec_config"]["node_selector"] == {"nvidia.com/gpu.present": "true"}
    (toleration,) = k8s["pod_spec_config"]["tolerations"]
    assert toleration["key"] == GPU and toleration["effect"] == "NoSchedule"


def test_the_kubernetes_tag_is_harmless_locally(tmp_path: Path) -> None:
    """A real run with the training tags on the default run launcher succeeds and keeps them."""

    @dg.asset(pool=TRAINING_POOL)
    def trained() -> int:
        return 1

    job = dg.define_asset_job("tagged", selection=[trained], tags=TRAINING_RUN_TAGS)
    defs = dg.Definitions(assets=[trained], jobs=[job])
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = defs.resolve_job_def("tagged").execute_in_process(instance=instance)
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        assert run is not None and json.loads(run.tags[K8S_TAG]) == TRAINING_RUN_TAGS[K8S_TAG]


KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: unused}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def _run_pod(launcher: Any, job: Any) -> Any:
    """The pod spec dagster-k8s builds for a run of `job` (offline: nothing is sent)."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import construct_dagster_k8s_job

    run = dg.DagsterRun(job_name=job.name, run_id="run", tags=job.tags)
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=True)
    job_config = context.get_k8s_job_config(job_image="cine-reco-k8s:1", run_launcher=launcher)
    k8s_job = construct_dagster_k8s_job(
        job_config, ["dagster"], "dagster-run", user_defined_k8s_config=context.run_k8s_config
    )
    return k8s_job.spec.template.spec


def test_dagster_k8s_builds_gpu_pods_for_training_runs_only(
    values: dict[str, Any], launcher: dict[str, Any], tmp_path: Path
) -> None:
    """With dagster-k8s installed (the Kubernetes image has it), the launcher configured as the
    chart configures it builds the run pods: the training tag deep-merges over `runK8sConfig`."""
    k8s = pytest.importorskip("dagster_k8s")
    (tmp_path / "kubeconfig").write_text(KUBECONFIG, encoding="utf-8")
    run_k8s = {re.sub(r"(?=[A-Z])", "_", k).lower(): v for k, v in launcher["runK8sConfig"].items()}
    run_launcher = k8s.K8sRunLauncher(
        service_account_name="dagster", instance_config_map="dagster-instance",
        dagster_home=values["global"]["dagsterHome"], job_namespace="cine",
        load_incluster_config=False, kubeconfig_file=str(tmp_path / "kubeconfig"),
        image_pull_policy=launcher["imagePullPolicy"],
        env_config_maps=[e["name"] for e in launcher["envConfigMaps"]],
        env_secrets=[e["name"] for e in launcher["envSecrets"]],
        volumes=launcher["volumes"], volume_mounts=launcher["volumeMounts"], run_k8s_config=run_k8s,
    )  # fmt: skip
    limits = launcher["runK8sConfig"]["containerConfig"]["resources"]["limits"]
    for job in jobs:
        pod = _run_pod(run_launcher, job)
        container = pod.containers[0]
        assert [m.mount_path for m in container.volume_mounts] == [
            m["mountPath"] for m in launcher["volumeMounts"]
        ]
        if job.name in {retrain_job.name, full_refresh_job.name}:
            assert pod.node_selector == {"nvidia.com/gpu.present": "true"}
            assert container.resources.limits == {**limits, GPU: "1"}
        else:
            assert pod.node_selector is None and container.resources.limits == limits


def _instance_yaml(values: dict[str, Any]) -> dict[str, Any]:
    """The run queue, pool and run monitoring settings of the values, as the chart renders them
    into the instance's dagster.yaml (templates/helpers/instance/_concurrency.tpl and
    configmap-instance.yaml of the chart)."""
    concurrency, daemon = values["concurrency"], values["dagsterDaemon"]
    assert concurrency["enabled"] and daemon["enabled"]
    coordinator = daemon["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator["config"]["queuedRunCoordinator"]
    runs, monitoring = concurrency["runs"], daemon["runMonitoring"]

    def snake(name: str) -> str:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()

    return {
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {snake(k): v for k, v in queued.items()},
        },
        "concurrency": {
            "pools": {snake(k): v for k, v in concurrency["pools"].items()},
            "runs": {
                "max_concurrent_runs": runs["maxConcurrentRuns"],
                "tag_concurrency_limits": runs["tagConcurrencyLimits"],
            },
        },
        "run_monitoring": {snake(k): v for k, v in monitoring.items()},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }


def test_queue_pools_and_monitoring_load_in_a_real_instance(
    values: dict[str, Any], tmp_path: Path
) -> None:
    rendered = _instance_yaml(values)
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(rendered), encoding="utf-8")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 1
        queue = concurrency.run_queue_config
        assert queue is not None
        assert [(t["key"], t["value"], t["limit"]) for t in queue.tag_concurrency_limits] == [
            (POOL_TAG, TRAINING_POOL, 1)
        ]
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 5

    local = load_yaml(ROOT / "dagster.yaml")  # the same limits as on one machine
    assert rendered["concurrency"]["pools"] == local["concurrency"]["pools"] == {"default_limit": 1}
    max_runs = rendered["concurrency"]["runs"]["max_concurrent_runs"]
    assert max_runs == local["concurrency"]["runs"]["max_concurrent_runs"]
    keep = ("enabled", "free_slots_after_run_end_seconds", "max_resume_run_attempts")
    assert {k: rendered["run_monitoring"][k] for k in keep} == {
        k: local["run_monitoring"][k] for k in keep
    }
    # the limited tag names the pool of the training assets; the other pool is the warehouse's
    pools = {a.op.pool for a in model_assets}
    assert pools == {TRAINING_POOL, WAREHOUSE_POOL}


def test_serving_probes_hit_routes_of_the_app(
    api: dict[str, Any], manifests: dict[tuple[str, str], dict[str, Any]], tmp_path: Path
) -> None:
    from serving.app import create_app
    from serving.model_store import ModelStore
    from serving.settings import ServingSettings
    from serving.sources import DirectorySource

    store = ModelStore(DirectorySource(tmp_path / "missing"))
    app = create_app(store, ServingSettings.from_env({"CINE_DATA_DIR": str(tmp_path)}), watch=False)
    routes = {getattr(route, "path", None) for route in app.routes}
    template = api["spec"]["template"]
    container = template["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    metrics_path = template["metadata"]["annotations"]["prometheus.io/path"]
    assert {"/ready", "/health", metrics_path} <= routes

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    command = container["command"]
    assert ports["http"] == int(command[command.index("--port") + 1])
    compose_api = load_yaml(ROOT / "docker-compose.yml")["services"]["api"]["command"]
    assert command == [compose_default(str(part)) for part in compose_api]

    service = manifests[("Service", "cine-api")]["spec"]
    assert service["ports"][0]["targetPort"] in ports
    labels = template["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    assert api["spec"]["selector"]["matchLabels"].items() <= labels.items()
    env_from = {next(iter(e)): next(iter(e.values()))["name"] for e in container["envFrom"]}
    assert env_from == {"configMapRef": "cine-env", "secretRef": "cine-secrets"}
    assert container["image"] in README.read_text(encoding="utf-8")  # built and pushed there


def test_image_and_chart_versions_match_the_lock() -> None:
    text = K8S_DOCKERFILE.read_text(encoding="utf-8")
    assert f'"dagster-k8s=={lock_version("dagster-postgres")}"' in text
    assert f'"tensorflow[and-cuda]=={lock_version("tensorflow")}"' in text
    assert "--constraint requirements.lock" in text
    chart = set(re.findall(r"--version (\S+)", README.read_text(encoding="utf-8")))
    assert chart == {lock_version("dagster")}


@pytest.mark.skipif(
    not (shutil.which("helm") and os.environ.get("DAGSTER_HELM_CHART")),
    reason="needs helm and DAGSTER_HELM_CHART (a local copy of the dagster chart)",
)
def test_helm_template_renders_the_values() -> None:
    chart = os.environ["DAGSTER_HELM_CHART"]
    out = subprocess.run(
        ["helm", "template", "dagster", chart, "--namespace", "cine", "-f", str(VALUES)],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    (instance_map,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-instance")
    ]
    instance = yaml.safe_load(instance_map["data"]["dagster.yaml"])
    assert instance["run_launcher"]["class"] == "K8sRunLauncher"
    assert instance["concurrency"]["pools"]["default_limit"] == 1
    assert instance["run_storage"]["config"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    user_code = [
        d for d in docs if d["kind"] == "Deployment" and "orchestration.definitions" in str(d)
    ]
    assert len(user_code) == 1
