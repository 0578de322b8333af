"""Model registry: register bundles, champion alias, promotion log, rollback and the CLI.

Runs against a real SQLite MLflow store in a temp folder. Bundles are logged through the real
`Registry.register_bundle` path once per module; tests that move aliases get their own
registered model whose versions point at those logged models, so they do not depend on each
other's order.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from recommender_lib.bundle.format import BundleError, read_manifest, write_bundle
from recommender_lib.config import Settings
from recommender_lib.registry.cli import main
from recommender_lib.registry.client import CHAMPION, Registry, default_promotion_log
from recommender_lib.registry.records import PromotionLog, RegistryError

BASE = "cine-reco-test"
_names = itertools.count(1)


def _echo_model():
    """A tiny pyfunc that reads the bundle manifest at load time and returns its version."""
    import mlflow.pyfunc

    class BundleEcho(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            manifest = Path(context.artifacts["bundle"]) / "manifest.json"
            self.bundle_version = json.loads(manifest.read_text())["bundle_version"]

        def predict(self, context, model_input, params=None):
            return [self.bundle_version] * len(model_input)

    return BundleEcho()


@dataclass(frozen=True)
class Store:
    root: Path
    uri: str
    bundles: dict[str, Path]
    registered: list  # RegisteredVersion of BASE versions 1, 2, 3

    def client(self):
        """MLflow's client, for runs and for moving an alias behind the registry's back."""
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def registry(self, model: str = BASE, log: Path | None = None) -> Registry:
        return Registry(self.uri, model, log)


def _make_bundle(root: Path, name: str, payload: bytes) -> Path:
    src = root / "src" / name
    src.mkdir(parents=True)
    (src / "two_tower.keras").write_bytes(payload)
    (src / "vocab.txt").write_text("tt0111161\n")
    return write_bundle(
        root / "bundles" / name,
        {"model/two_tower.keras": src / "two_tower.keras", "vocab.txt": src / "vocab.txt"},
        {
            "git_commit": "deadbeef",
            "metrics": {
                "P1.two_tower.rmse": 0.87,
                "P1.two_tower.ndcg_at_10": 0.31,
                "P1.most_popular.ndcg_at_10": 0.09,
                "P1.ease.ndcg_at_10": 0.13,
            },
            "model": {
                "trained_on": {
                    "kind": "full refit",
                    "ratings": 1234,
                    "users": 56,
                    "titles": 78,
                    "first_rating_at": "2001-02-03T00:00:00+00:00",
                    "last_rating_at": "2019-08-07T00:00:00+00:00",
                },
                "ranking_rule": {"kind": "retrieval", "description": "retrieval: u·v/τ + b"},
            },
            "source_versions": {"movielens": "2024-01", "imdb": "2024-02-03"},
        },
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        root = tmp_path_factory.mktemp("registry")
        uri = f"sqlite:///{root}/mlflow.db"
        bundles = {"a": _make_bundle(root, "a", b"weights-a"), "b": _make_bundle(root, "b", b"b")}
        registered = [
            Registry(uri, BASE).register_bundle(
                bundles[key],
                python_model=_echo_model(),
                artifact_root=root / "artifacts",
                tags={"trigger": f"test-{i}"},
                pip_requirements=["mlflow"],
            )
            for i, key in enumerate(["a", "a", "b"], start=1)
        ]
        yield Store(root, uri, bundles, registered)


@pytest.fixture
def model(store: Store) -> str:
    """A fresh registered model whose versions 1-3 are copies of BASE versions 1-3."""
    base = store.registry()
    name = f"fresh-{next(_names)}"
    fresh = store.registry(name)
    for mv in base.list_versions():
        fresh.add_version(base.artifact_uri(mv.version), run_id=mv.run_id, tags=mv.tags)
    return name


# --------------------------------------------------------------------------- register


def test_register_twice_gives_two_tagged_versions(store: Store) -> None:
    first, second, third = store.registered
    assert [r.version for r in store.registered] == ["1", "2", "3"]
    assert first.bundle_version == second.bundle_version != third.bundle_version
    assert first.run_id != second.run_id
    assert first.model_uri == f"models:/{BASE}/1"
    versions = store.registry().list_versions()
    assert [v.version for v in versions] == ["1", "2", "3"]
    tags = versions[0].tags
    assert tags["bundle_version"] == read_manifest(store.bundles["a"])["bundle_version"]
    assert tags["metric.P1.two_tower.rmse"] == "0.87"
    assert tags["source.imdb"] == "2024-02-03"
    assert tags["trigger"] == "test-1"
    assert versions[1].tags["trigger"] == "test-2"
    assert all(v.status == "READY" and not v.is_champion for v in versions)
    run = store.client().get_run(first.run_id)
    assert run.info.status == "FINISHED"


def test_versions_carry_the_gated_metrics_and_a_description(store: Store) -> None:
    """The model page stays readable: only the gated metrics as tags (every metric is in the
    run), and a description of the training data and the headline numbers."""
    version = store.registry().list_versions()[0]
    metric_tags = {k for k in version.tags if k.startswith("metric.")}
    assert metric_tags == {"metric.P1.two_tower.rmse", "metric.P1.two_tower.ndcg_at_10"}
    description = store.client().get_model_version(BASE, version.version).description
    assert "full refit: 1,234 ratings by 56 users of 78 titles (2001-02-03 to 2019-08-07)" in (
        description
    )
    assert "Ranking: retrieval: u·v/τ + b." in description
    assert "P1 NDCG@10 0.3100, most popular 0.0900, RMSE 0.8700" in description


def test_register_resumes_given_run_and_restores_global_uri(store: Store) -> None:
    import mlflow

    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    client = store.client()
    experiment = client.get_experiment_by_name("cine-reco")
    run = client.create_run(experiment.experiment_id)
    resumed = store.registry("resumed")
    registered = resumed.register_bundle(
        store.bundles["b"],
        python_model=_echo_model(),
        run_id=run.info.run_id,
        pip_requirements=["mlflow"],
    )
    assert registered.run_id == run.info.run_id
    assert resumed.resolve(registered.version).run_id == run.info.run_id
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert (mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None) == before
    assert mlflow.active_run() is None


def test_register_refuses_invalid_bundle(store: Store, tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(BundleError, match="bad manifest JSON"):
        store.registry("never").register_bundle(tmp_path, python_model=_echo_model())


def test_failed_logging_marks_run_failed(store: Store) -> None:
    import threading

    import mlflow

    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    unpicklable = _echo_model()
    unpicklable.lock = threading.Lock()
    with pytest.raises(Exception, match="serialize"):
        store.registry("broken").register_bundle(
            store.bundles["a"],
            python_model=unpicklable,
            experiment_name="failures",
            artifact_root=store.root / "artifacts-failures",
            pip_requirements=["mlflow"],
        )
    client = store.client()
    experiment = client.get_experiment_by_name("failures")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"
    assert mlflow.active_run() is None
    assert (mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None) == before
    assert store.registry("broken").list_versions() == []


def test_logged_pyfunc_reads_bundle(store: Store) -> None:
    import mlflow.pyfunc

    uri = store.registry().artifact_uri("3")
    loaded = mlflow.pyfunc.load_model(uri)
    assert loaded.predict([1, 2]) == [store.registered[2].bundle_version] * 2


# --------------------------------------------------------------------------- download


def test_download_champion_bundle(store: Store, model: str, tmp_path: Path) -> None:
    registry = store.registry(model, tmp_path / "promotions.jsonl")
    registry.promote("3", reason="better ndcg", actor="test")
    dest = tmp_path / "serving" / "current"
    got = store.registry().download_bundle(f"models:/{model}@champion", dest)
    assert got == dest
    assert read_manifest(dest)["bundle_version"] == store.registered[2].bundle_version
    assert (dest / "model" / "two_tower.keras").read_bytes() == b"b"
    # Re-download another version over it: replaced atomically, nothing left beside it.
    store.registry().download_bundle(f"models:/{model}/1", dest)
    assert (dest / "model" / "two_tower.keras").read_bytes() == b"weights-a"
    registry.download_bundle("@champion", dest)
    registry.download_bundle("2", dest)
    assert [p.name for p in dest.parent.iterdir()] == ["current"]


@pytest.mark.parametrize("ref", ["models:/{m}@champion", "models:/{m}/99", "models:/nope/1", "x"])
def test_download_unknown_alias_or_version(
    store: Store, model: str, tmp_path: Path, ref: str
) -> None:
    with pytest.raises(RegistryError, match=r"has no (alias|version)"):
        store.registry(model).download_bundle(ref.format(m=model), tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_tampered_artifact_store_copy_is_refused(store: Store, tmp_path: Path) -> None:
    tampered = store.registry("tampered")
    registered = tampered.register_bundle(
        store.bundles["a"], python_model=_echo_model(), pip_requirements=["mlflow"]
    )
    dest = tmp_path / "current"
    tampered.download_bundle(registered.model_uri, dest)
    location = tampered.artifact_uri(registered.version)
    stored = Path(location.removeprefix("file://")) / "artifacts" / "a" / "vocab.txt"
    assert stored.is_file(), stored
    stored.write_text("tt0111162\n")
    with pytest.raises(BundleError, match=r"'vocab.txt' sha256 mismatch"):
        tampered.download_bundle(registered.model_uri, dest)
    assert (dest / "vocab.txt").read_text() == "tt0111161\n"  # previous copy untouched
    assert [p.name for p in tmp_path.iterdir()] == ["current"]


# --------------------------------------------------------------------------- promote / rollback


def test_promote_moves_alias_and_logs(store: Store, model: str, tmp_path: Path) -> None:
    log = tmp_path / "log" / "promotions.jsonl"
    registry = store.registry(model, log)
    assert registry.champion() is None
    first = registry.promote("1", reason="first", actor="dagster run r1")
    second = registry.promote("2", reason="retrained", actor="alice")
    assert (first.from_version, first.to_version, first.action) == (None, "1", "promote")
    assert (second.from_version, second.to_version) == ("1", "2")
    current = registry.champion()
    assert current is not None and current.version == "2" and current.is_champion
    assert current.tags["promotion_reason"] == "retrained"
    assert current.tags["promoted_at"] == second.at
    assert registry.promotions() == [first, second]
    assert [v.version for v in registry.list_versions() if v.is_champion] == ["2"]
    lines = log.read_text().splitlines()
    assert json.loads(lines[1])["actor"] == "alice"


def test_promote_missing_version_keeps_champion(store: Store, model: str, tmp_path: Path) -> None:
    log = tmp_path / "promotions.jsonl"
    registry = store.registry(model, log)
    registry.promote("1", reason="first", actor="t")
    with pytest.raises(RegistryError, match="has no version '42'"):
        registry.promote("42", reason="typo", actor="t")
    with pytest.raises(RegistryError, match="already the champion"):
        registry.promote("1", reason="again", actor="t")
    assert registry.champion().version == "1"
    assert len(registry.promotions()) == 1


def test_rollback_walks_back_through_promotions(store: Store, model: str, tmp_path: Path) -> None:
    log = tmp_path / "promotions.jsonl"
    registry = store.registry(model, log)
    for version in ("1", "2", "3"):
        registry.promote(version, reason=f"v{version}", actor="t")
    back = registry.rollback(actor="oncall")
    assert (back.from_version, back.to_version, back.action) == ("3", "2", "rollback")
    assert back.reason == "manual rollback"
    assert registry.champion().version == "2"
    assert registry.rollback(actor="oncall").to_version == "1"
    with pytest.raises(RegistryError, match="no champion before version 1"):
        registry.rollback(actor="oncall")
    explicit = registry.rollback(actor="oncall", to_version="3")
    assert (explicit.from_version, explicit.to_version) == ("1", "3")
    assert [r.action for r in registry.promotions()] == ["promote"] * 3 + ["rollback"] * 3


def test_rollback_without_history(store: Store, model: str, tmp_path: Path) -> None:
    log = tmp_path / "promotions.jsonl"
    registry = store.registry(model, log)
    with pytest.raises(RegistryError, match="no champion to roll back from"):
        registry.rollback(actor="t")
    store.client().set_registered_model_alias(model, CHAMPION, "2")  # moved outside the log
    with pytest.raises(RegistryError, match="records no champion before version 2"):
        registry.rollback(actor="t")
    assert registry.champion().version == "2"
    assert not log.exists()


def test_read_promotion_log(tmp_path: Path) -> None:
    log = tmp_path / "promotions.jsonl"
    assert PromotionLog(log).read() == []
    good = {
        "at": "2025-01-01T00:00:00+00:00",
        "model_name": "m",
        "from_version": None,
        "to_version": "1",
        "actor": "a",
        "reason": "r",
        "action": "promote",
    }
    log.write_text(json.dumps(good) + "\n\n" + "{oops\n")
    with pytest.raises(RegistryError, match="line 3"):
        PromotionLog(log).read()
    log.write_text(json.dumps(good) + "\n" + json.dumps({**good, "action": "delete"}) + "\n")
    with pytest.raises(RegistryError, match="line 2"):
        PromotionLog(log).read()


# --------------------------------------------------------------------------- CLI


def test_cli(
    store: Store,
    model: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CINE_DATA_DIR", str(tmp_path / "data"))
    log = default_promotion_log(Settings.from_env())
    assert log == tmp_path / "data" / "registry" / "promotions.jsonl"

    def cli(*args: str) -> tuple[int, str, str]:
        code = main(["--tracking-uri", store.uri, "--model-name", model, *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = cli("list")
    assert code == 0 and out.splitlines()[0].split() == [
        "VERSION", "STATUS", "BUNDLE", "CREATED", "RUN", "METRICS"
    ]  # fmt: skip
    assert "two_tower.rmse=0.8700" in out and len(out.splitlines()) == 4
    assert cli("log")[1].startswith("no promotions")
    assert cli("rollback")[:2] == (1, "")
    assert cli("promote", "1", "--reason", "first")[0] == 0
    code, out, err = cli("promote", "7", "--reason", "typo")
    assert code == 1 and err.startswith("error: ") and "Traceback" not in err
    assert cli("--actor", "bob", "promote", "2", "--reason", "retrained")[1] == (
        f"promote: {model} champion 1 -> 2\n"
    )
    code, out, _ = cli("list")
    assert [line.split()[1] for line in out.splitlines() if line.startswith("*")] == ["2"]
    code, out, _ = cli("rollback", "--reason", "bad canary")
    assert code == 0 and out == f"rollback: {model} champion 2 -> 1\n"
    code, out, _ = cli("log")
    assert code == 0 and len(out.splitlines()) == 4
    assert "bad canary" in out and "bob" in out
    actions = [r.action for r in store.registry(model, log).promotions()]
    assert actions == ["promote", "promote", "rollback"]
    assert cli("rollback", "--to", "99")[0] == 1


def test_cli_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{tmp_path}/nope/mlflow.db"
    assert main(["--tracking-uri", uri, "--promotion-log", str(tmp_path / "p.jsonl"), "list"]) == 1
    assert "no MLflow database" in capsys.readouterr().err
    assert not (tmp_path / "nope").exists()
