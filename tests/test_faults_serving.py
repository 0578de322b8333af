"""Issue 12, faults 2, 3 and 6: a champion that does not verify, promotions of such versions,
HEAD/strict input/OpenAPI, and recovery from an unwritable serving cache.

Real components only: the tiny bundle registered in a temp SQLite MLflow store
(`tests/support/serving.py`), one byte flipped in a version's stored artifacts, the real app
through TestClient.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Route

from recommender_lib.registry.cli import main as registry_cli
from recommender_lib.registry.client import Registry
from recommender_lib.registry.records import RegistryError
from serving.app import create_app
from serving.logs import LOGGER_NAME
from serving.model_store import ModelStore
from serving.settings import ServingSettings
from serving.sources import Candidate, RegistrySource
from tests.support.serving import (
    TEST_MODEL,
    add_version,
    artifact_dir,
    champion_app,
    copy_version,
    shared_registered_tiny_store,
    tamper_bundle_file,
    wait_for,
)

pytestmark = pytest.mark.slow
_names = itertools.count(1)


def _metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


@dataclass(frozen=True)
class Store:
    root: Path
    uri: str
    log: Path

    def registry(self, model: str) -> Registry:
        return Registry(self.uri, model, self.log)

    def model(self, layout: str) -> str:
        """A new registered model: one version per letter, `g` good, `b` one flipped byte."""
        name = f"faults-{next(_names)}"
        for i, kind in enumerate(layout, start=1):
            if kind == "g":
                assert copy_version(self.uri, TEST_MODEL, "1", name) == str(i)
                continue
            src = artifact_dir(self.uri, TEST_MODEL, "1")
            broken = shutil.copytree(src, self.root / f"{name}-v{i}")
            tags = dict(Registry(self.uri, TEST_MODEL).resolve("1").tags)
            assert add_version(self.uri, name, broken, tags) == str(i)
            tamper_bundle_file(broken / "artifacts" / "bundle")  # after registration
        return name

    def settings(self, model: str, **env: str) -> ServingSettings:
        return ServingSettings.from_env(
            {
                "CINE_DATA_DIR": str(self.root),
                "MLFLOW_TRACKING_URI": self.uri,
                "CINE_MODEL_NAME": model,
                "CINE_SERVING_DIR": str(self.root / "caches" / model),
                "CINE_PROMOTION_LOG": str(self.log),
                **env,
            }
        )


@pytest.fixture(scope="module")
def store(sample_mirror: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        uri, model, _ = shared_registered_tiny_store(tmp_path_factory, sample_mirror)
        assert model == TEST_MODEL
        root = tmp_path_factory.mktemp("faults_serving")
        yield Store(root, uri, root / "promotions.jsonl")


@pytest.fixture
def log_events() -> Iterator[list[str]]:
    """The `event` of every record the serving loggers emit during the test."""
    events: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: events.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    yield events
    logger.removeHandler(handler)


# ------------------------------------------------------------ fault 2: champion does not verify
def test_broken_champion_serves_the_previous_one_until_fixed_or_moved(
    store: Store, log_events: list[str]
) -> None:
    # v1 good (champion first), v2 broken (forced champion), v3 good but never champion
    model = store.model("gbg")
    registry = store.registry(model)
    registry.promote("1", reason="first", actor="tests")
    registry.promote("2", reason="broken", actor="tests", force=True)
    source = ModelStore.from_settings(store.settings(model)).source
    assert isinstance(source, RegistrySource)
    # previous champion from the promotion log first, then the newest other version
    assert [c.registry_version for c in source.fallbacks(Candidate("2:x", "x", "2"))] == ["1", "3"]

    normal = ModelStore(RegistrySource(store.uri, TEST_MODEL, "champion", store.root / "n"))
    started = time.perf_counter()
    assert normal.refresh() == "loaded"
    normal_s = time.perf_counter() - started

    app = create_app(settings=store.settings(model, CINE_RELOAD_INTERVAL_S="0.1"))
    started = time.perf_counter()
    with TestClient(app) as client:
        wait_for(lambda: client.get("/ready").status_code == 200, 60 + 3 * normal_s, "ready")
        fallback_s = time.perf_counter() - started
        version = client.get("/version").json()
        assert version["registry"] == {"model_name": model, "version": "1", "alias": None}
        wanted = version["fallback"]["wanted"]
        assert wanted == {
            "alias": "champion",
            "version": "2",
            "bundle_version": wanted["bundle_version"],
        }
        assert "sha256 mismatch" in version["fallback"]["reason"]
        metrics = client.get("/metrics").text
        assert _metric(metrics, "cine_model_fallback") == 1
        assert _metric(metrics, "cine_model_version_info", version="1") == 1
        assert _metric(metrics, "cine_model_reload_failures_total") >= 1
        assert "model_fallback" in log_events and "model_reload_failed" in log_events
        assert client.get("/titles/1/similar").status_code == 200

        served = app.state.store
        tamper_bundle_file(store.root / f"{model}-v2" / "artifacts" / "bundle")  # fixed again
        fixed = time.perf_counter()
        wait_for(lambda: served.current.registry_version == "2", 30, "the fixed champion")
        fixed_s = time.perf_counter() - fixed
        version = client.get("/version").json()
        assert version["fallback"] is None and version["registry"]["alias"] == "champion"
        assert _metric(client.get("/metrics").text, "cine_model_fallback") == 0
        assert "bundle_changed" in log_events

        registry.promote("3", reason="newer", actor="tests")
        moved = time.perf_counter()
        wait_for(lambda: served.current.registry_version == "3", 30, "the alias move")
        moved_s = time.perf_counter() - moved
        assert client.get("/version").json()["registry"]["version"] == "3"
    print(
        f"normal load {normal_s:.2f}s, fallback ready {fallback_s:.2f}s, "
        f"fixed champion {fixed_s:.2f}s, alias move {moved_s:.2f}s"
    )
    assert fallback_s < 2 * normal_s + 5  # one failed download + one normal load
    assert fixed_s < 2 * normal_s + 5  # not after the 300 s backoff
    assert moved_s < 2 * normal_s + 5  # not after the 300 s backoff


def test_a_running_api_says_when_the_alias_names_a_version_it_refuses(store: Store) -> None:
    model = store.model("gb")
    registry = store.registry(model)
    registry.promote("1", reason="first", actor="tests")
    app = create_app(settings=store.settings(model), watch=False)
    client, served = TestClient(app), app.state.store
    assert served.refresh() == "loaded" and client.get("/version").json()["fallback"] is None
    registry.promote("2", reason="broken", actor="tests", force=True)
    assert served.refresh() == "failed"
    version = client.get("/version").json()
    assert version["registry"]["version"] == "1" and version["registry"]["alias"] is None
    assert version["fallback"]["wanted"]["version"] == "2"
    assert _metric(client.get("/metrics").text, "cine_model_fallback") == 1
    registry.rollback(actor="tests")
    assert served.refresh() == "unchanged"
    assert client.get("/version").json()["fallback"] is None


# --------------------------------------------------- fault 3: promote/rollback verify the bundle
def test_promote_and_rollback_refuse_a_bundle_that_does_not_verify(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    model = store.model("gbg")
    registry = store.registry(model)
    registry.promote("1", reason="first", actor="tests")
    with pytest.raises(RegistryError, match=r"refusing to promote .* version 2: .*does not verify"):
        registry.promote("2", reason="broken", actor="tests")
    assert registry.champion().version == "1"  # type: ignore[union-attr]

    def cli(*args: str) -> tuple[int, str, str]:
        base = ["--tracking-uri", store.uri, "--model-name", model]
        code = registry_cli([*base, "--promotion-log", str(store.log), *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = cli("promote", "2", "--reason", "try")
    assert code == 1 and out == "" and "Traceback" not in err
    assert "does not verify" in err and "sha256 mismatch" in err and "--force" in err
    registry.promote("3", reason="good", actor="tests")
    code, _, err = cli("rollback", "--to", "2")
    assert code == 1 and "refusing to rollback" in err
    assert registry.champion().version == "3"  # type: ignore[union-attr]
    assert [r.to_version for r in registry.promotions()] == ["1", "3"]

    code, out, _ = cli("--actor", "oncall", "promote", "2", "--reason", "hotfix", "--force")
    assert (
        code == 0 and out == f"promote (forced, bundle does not verify): {model} champion 3 -> 2\n"
    )
    last = registry.promotions()[-1]
    assert (last.to_version, last.forced, last.actor) == ("2", True, "oncall")
    assert registry.champion().tags["promotion_forced"] == "true"  # type: ignore[union-attr]
    assert "promote (forced)" in cli("log")[1]
    code, out, _ = cli("rollback")
    assert code == 0 and out == f"rollback: {model} champion 2 -> 3\n"
    assert registry.promotions()[-1].forced is False


# ------------------------------------------------------ fault 6: HEAD, strict input, OpenAPI
@pytest.fixture(scope="module")
def client(sample_mirror: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with champion_app(tmp_path_factory, sample_mirror, "faults_http") as app:
        yield TestClient(app)


def _concrete(path: str, client: TestClient) -> str:
    user = int(client.app.state.store.current.view.recommender.user_ids[0])  # type: ignore[attr-defined]
    return path.replace("{ref}", "1").replace("{user_id}", str(user))


def test_head_answers_every_get_route_like_get_without_a_body(client: TestClient) -> None:
    routes = [r for r in client.app.routes if isinstance(r, (APIRoute, Route))]  # type: ignore[attr-defined]
    gets = [r.path for r in routes if "GET" in (r.methods or ())]
    assert {"/health", "/ready", "/version", "/metrics", "/titles/{ref}/similar"} <= set(gets)
    for template in gets:
        path = _concrete(template, client)
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code, path
        assert head.content == b"", path
        same = {k for k in got.headers if k not in ("x-request-id", "content-length", "date")}
        assert {k: head.headers.get(k) for k in same} == {k: got.headers[k] for k in same}, path
        if template != "/metrics":  # its body changes with every request
            assert head.headers.get("content-length") == got.headers.get("content-length"), path
    assert client.head("/health").status_code == 200
    assert client.head("/recommendations").status_code == 405
    metrics = client.get("/metrics").text
    assert _metric(metrics, "http_requests_total", route="/health", method="HEAD") >= 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ratings": [{"title": "1", "rating": True}]}, "ratings.0.rating"),
        ({"ratings": [{"title": "1", "rating": "4"}]}, "ratings.0.rating"),
        ({"ratings": [{"title": True, "rating": 4}]}, "ratings.0.title"),
        ({"ratings": [{"title": "1", "rating": 4, "rated_at": True}]}, "ratings.0.rated_at"),
        ({"k": True}, "k"),
        ({"filters": {"min_year": False}}, "filters.min_year"),
    ],
)
def test_booleans_and_strings_are_not_numbers(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    response = client.post("/recommendations", json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == field
    scores = client.post("/scores", json={"user_id": True, "candidates": ["1"]})
    assert scores.status_code == 422 and scores.json()["detail"][0]["field"] == "user_id"
    assert client.post("/recommendations", json={"ratings": [{"title": 1, "rating": 4}]}).is_success


def test_openapi_documents_every_4xx_the_app_answers(client: TestClient) -> None:
    big = json.dumps({"candidates": ["1"] * 60000}).encode()  # over 256 KiB
    not_utf8 = b'{"ratings": [{"title": "\xff", "rating": 4}]}'
    cases: list[tuple[str, str, str, Any, int]] = [
        ("get", "/titles/search", "/titles/search?q=", None, 422),
        ("get", "/titles/{ref}", "/titles/no-such-title", None, 404),
        ("get", "/titles/{ref}/similar", "/titles/1/similar?k=0", None, 422),
        ("get", "/titles/{ref}/similar", "/titles/no-such-title/similar", None, 404),
        (
            "get",
            "/movielens-users/{user_id}/recommendations",
            "/movielens-users/999999999/recommendations",
            None,
            404,
        ),
        (
            "get",
            "/movielens-users/{user_id}/recommendations",
            "/movielens-users/-1/recommendations",
            None,
            422,
        ),
    ]
    for path, invalid, unknown in (
        ("/recommendations", b'{"k": true}', b'{"exclude": ["no-such-title"]}'),
        ("/scores", b'{"candidates": []}', b'{"candidates": ["no-such-title"]}'),
    ):
        cases += [
            ("post", path, path, not_utf8, 400),
            ("post", path, path, big, 413),
            ("post", path, path, invalid, 422),
            ("post", path, path, unknown, 404),
        ]
    spec = client.get("/openapi.json").json()
    for method, template, path, body, status in cases:
        headers = {"content-type": "application/json"}
        response = client.request(method.upper(), path, content=body, headers=headers)
        assert response.status_code == status, (path, body, response.text)
        documented = spec["paths"][template][method]["responses"]
        assert str(status) in documented, (template, status)
        assert "application/json" in documented[str(status)]["content"]
        if status in (400, 413):
            assert set(response.json()) == {"detail"}  # ErrorResponse
    for template, operations in spec["paths"].items():
        for method, operation in operations.items():
            if template.startswith(("/titles", "/movielens-users", "/recommendations", "/scores")):
                assert {"422", "503"} <= operation["responses"].keys(), (template, method)


# ---------------------------------------------- fault 6: an unwritable cache recovers promptly
def test_an_unwritable_cache_recovers_within_the_capped_retry(store: Store) -> None:
    settings = store.settings(
        TEST_MODEL,
        CINE_SERVING_DIR=str(store.root / "blocked-cache"),
        CINE_RELOAD_INTERVAL_S="0.05",
        CINE_RELOAD_RETRY_MAX_S="0.4",
    )
    assert settings.reload_retry_max_s == 0.4 and settings.reload_backoff_s == 300
    blocker = store.root / "blocked-cache"
    blocker.write_text("not a folder")  # root can write anywhere: a file blocks the cache dir
    app = create_app(settings=settings)
    served: ModelStore = app.state.store
    with TestClient(app) as client:
        wait_for(lambda: served.reload_failures >= 4, 10, "retries (not one per 300 s)")
        assert client.get("/ready").status_code == 503
        failures = served.reload_failures
        time.sleep(1.0)  # capped at 0.4 s: at least two more tries, no faster than the cap
        assert 2 <= served.reload_failures - failures <= 5  # not every 0.05 s either
        blocker.unlink()
        fixed = time.perf_counter()
        wait_for(lambda: client.get("/ready").status_code == 200, 60, "recovery")
        recovered_s = time.perf_counter() - fixed
        assert client.get("/version").json()["fallback"] is None
    print(f"recovered {recovered_s:.2f}s after the cache became writable")
    assert recovered_s < 30
