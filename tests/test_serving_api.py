"""The serving API over a real tiny bundle registered in a temp MLflow store.

Fast tests use a store that never loads (no bundle needed). The slow ones share one tiny bundle
(built once per session) registered as `test` v1 = champion, plus a second good bundle as v2;
tests that move the alias get their own registered model (`fresh_model`) with copied versions.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from recommender_lib.registry.client import Registry as LibRegistry
from serving import schemas
from serving.app import create_app
from serving.logs import ACCESS_LOGGER_NAME, JsonFormatter
from serving.model_store import ModelStore
from serving.settings import ServingSettings
from serving.sources import DirectorySource, RegistrySource
from serving.view import ServingView
from tests.support.serving import (
    TEST_MODEL,
    add_version,
    artifact_dir,
    copy_version,
    live_server,
    promote_champion,
    register,
    shared_registered_tiny_store,
    tamper_bundle_file,
    variant_bundle,
    wait_for,
)

MODEL_ENDPOINTS = [
    ("GET", "/titles/search?q=toy", None),
    ("GET", "/titles/1", None),
    ("GET", "/titles/1/similar", None),
    ("POST", "/recommendations", {"ratings": []}),
    ("GET", "/movielens-users/1/recommendations", None),
    ("POST", "/scores", {"candidates": ["1"]}),
    ("GET", "/version", None),
]
_names = itertools.count(1)


def _settings(tmp: Path, **env: str) -> ServingSettings:
    return ServingSettings.from_env({"CINE_DATA_DIR": str(tmp), **env})


def _metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text exposition (None when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


# ------------------------------------------------------------------ fast: no model loaded
@pytest.fixture
def unloaded(tmp_path: Path) -> Iterator[TestClient]:
    """An app whose store never loads (its bundle directory does not exist)."""
    settings = _settings(tmp_path, CINE_MAX_BODY_BYTES="2048")
    store = ModelStore(DirectorySource(tmp_path / "missing"), interval_s=0.05)
    with TestClient(create_app(store, settings)) as client:
        yield client


def test_settings_from_env() -> None:
    settings = ServingSettings.from_env(
        {
            "CINE_DATA_DIR": "/srv/cine",
            "CINE_CORS_ORIGINS": "https://a.example, https://b.example,",
            "CINE_MODEL_ALIAS": "@staging",
            "CINE_RELOAD_INTERVAL_S": "2.5",
        }
    )
    assert settings.bundle_dir is None
    assert settings.tracking_uri == "sqlite:////srv/cine/mlflow/mlflow.db"
    assert settings.model_name == "cine-reco" and settings.model_alias == "staging"
    assert settings.serving_dir == Path("/srv/cine/serving")
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.reload_interval_s == 2.5 and settings.max_body_bytes == 256 * 1024
    with pytest.raises(ValueError, match="CINE_RELOAD_INTERVAL_S"):
        ServingSettings.from_env({"CINE_RELOAD_INTERVAL_S": "soon"})


def test_before_the_first_load_model_endpoints_answer_503(unloaded: TestClient) -> None:
    assert unloaded.get("/health").json() == {"status": "ok", "model_version": None}
    assert unloaded.get("/ready").status_code == 503
    for method, path, body in MODEL_ENDPOINTS:
        response = unloaded.request(method, path, json=body)
        assert response.status_code == 503, path
        assert response.json() == {"detail": "no model loaded yet"}
    store = unloaded.app.state.store
    wait_for(lambda: store.reload_failures >= 2, 10, "failed refreshes")
    metrics = unloaded.get("/metrics").text
    assert _metric(metrics, "cine_model_reload_failures_total") >= 2
    assert _metric(metrics, "cine_model_reloads_total") == 0


def test_request_ids_are_echoed_when_sane(unloaded: TestClient) -> None:
    echoed = unloaded.get("/health", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    for bad in ("x" * 65, "has space", "<script>"):
        rid = unloaded.get("/health", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert rid != bad and len(rid) == 32
    assert len(unloaded.get("/nowhere").headers["x-request-id"]) == 32


def test_big_bodies_get_413(unloaded: TestClient) -> None:
    body = json.dumps({"ratings": [{"title": "tt0114709", "rating": 4.5}] * 100})
    response = unloaded.post(
        "/recommendations", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and "2048" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
        yield body.encode()

    response = unloaded.post(
        "/recommendations", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_unexpected_errors_are_500_without_a_stack_trace(unloaded: TestClient) -> None:
    def boom() -> None:
        raise RuntimeError("secret internals")

    unloaded.app.add_api_route("/boom", boom)
    response = unloaded.get("/boom", headers={"X-Request-ID": "req-1"})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error", "request_id": "req-1"}
    assert "secret" not in response.text


def test_access_log_is_one_json_line_per_request(unloaded: TestClient) -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(ACCESS_LOGGER_NAME)
    logger.addHandler(handler)
    try:
        unloaded.get("/titles/tt0114709/similar", headers={"X-Request-ID": "log-1"})
    finally:
        logger.removeHandler(handler)
    (line,) = [json.loads(JsonFormatter().format(r)) for r in records]
    assert line["request_id"] == "log-1" and line["method"] == "GET"
    assert line["route"] == "/titles/{ref}/similar" and line["status"] == 503
    assert line["duration_ms"] >= 0 and line["model_version"] is None


def test_cors_is_closed_unless_origins_are_configured(tmp_path: Path) -> None:
    store = ModelStore(DirectorySource(tmp_path / "missing"))
    headers = {"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}
    closed = TestClient(create_app(store, _settings(tmp_path), watch=False))
    assert "access-control-allow-origin" not in closed.options("/health", headers=headers).headers
    settings = _settings(tmp_path, CINE_CORS_ORIGINS="https://app.example")
    opened = TestClient(create_app(store, settings, watch=False))
    response = opened.options("/health", headers=headers)
    assert response.headers["access-control-allow-origin"] == "https://app.example"


def test_openapi_documents_the_models(unloaded: TestClient) -> None:
    spec = unloaded.get("/openapi.json").json()
    for path in ("/titles/search", "/titles/{ref}", "/titles/{ref}/similar", "/recommendations",
                 "/movielens-users/{user_id}/recommendations", "/movielens-users", "/scores",
                 "/health", "/ready", "/version", "/metrics"):  # fmt: skip
        assert path in spec["paths"], path
    names = spec["components"]["schemas"]
    assert {"RecommendationRequest", "RecommendationResponse", "SimilarResponse"} <= names.keys()
    post = spec["paths"]["/recommendations"]["post"]["responses"]
    assert {"200", "404", "422", "503"} <= post.keys()
    params = spec["paths"]["/titles/{ref}/similar"]["get"]["parameters"]
    assert {"k", "title_type", "genres", "min_year", "max_year", "min_votes"} <= {
        p["name"] for p in params
    }


def test_index_page_is_served_when_present(
    unloaded: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import serving.app

    monkeypatch.setattr(serving.app, "INDEX_FILE", tmp_path / "absent.html")
    assert unloaded.get("/").status_code == 404
    page = tmp_path / "index.html"
    page.write_text("<!doctype html><title>Ciné-Reco</title>")
    monkeypatch.setattr(serving.app, "INDEX_FILE", page)
    response = unloaded.get("/")
    assert response.status_code == 200 and "Ciné-Reco" in response.text
    assert response.headers["content-type"].startswith("text/html")


# ------------------------------------------------------------------ slow: a real tiny bundle
@dataclass(frozen=True)
class Registry:
    root: Path
    uri: str
    bundle_dir: Path
    v2: str  # TEST_MODEL version holding a second good bundle (never champion of TEST_MODEL)
    v2_bundle_version: str

    def store(self, model: str = TEST_MODEL, **kwargs: Any) -> ModelStore:
        cache = self.root / "caches" / f"{model}-{next(_names)}"
        return ModelStore(RegistrySource(self.uri, model, "champion", cache), **kwargs)

    def fresh_model(self, *versions: str) -> str:
        """A new registered model whose versions 1.. copy TEST_MODEL `versions`; v1 champion."""
        name = f"fresh-{next(_names)}"
        for version in versions:
            copy_version(self.uri, TEST_MODEL, version, name)
        self.promote(name, "1")
        return name

    def promote(self, model: str, version: str, *, force: bool = False) -> None:
        if not force:
            promote_champion(self.uri, model, version, self.root / "promotions.jsonl")
            return
        registry = LibRegistry(self.uri, model, self.root / "promotions.jsonl")
        registry.promote(version, reason="test", actor="tests", force=True)


@pytest.fixture(scope="session")
def registry(sample_mirror, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        root = tmp_path_factory.mktemp("serving_registry")
        uri, model, bundle_dir = shared_registered_tiny_store(tmp_path_factory, sample_mirror)
        assert model == TEST_MODEL
        second = variant_bundle(bundle_dir, root / "bundle-v2", "feedfacecafe0002")
        v2 = register(uri, TEST_MODEL, second, root / "artifacts")
        yield Registry(root, uri, bundle_dir, v2, "feedfacecafe0002")


@dataclass(frozen=True)
class Served:
    client: TestClient
    store: ModelStore

    @property
    def version(self) -> str:
        current = self.store.current
        assert current is not None
        return current.model_version


@pytest.fixture(scope="module")
def served(registry: Registry) -> Served:
    """The champion (TEST_MODEL v1) loaded once; no watcher."""
    store = registry.store()
    assert store.refresh() == "loaded"
    app = create_app(store, _settings(registry.root), watch=False)
    return Served(TestClient(app), store)


def _a_title_with_genres(served: Served) -> dict[str, Any]:
    meta = served.store.current.view.meta  # type: ignore[union-attr]
    return next(m for m in meta if m["movie_id"] and len(m["genres"]) >= 2 and m["tconst"])


@pytest.mark.slow
def test_search_lists_candidates(served: Served) -> None:
    title = served.client.get("/titles/1").json()["title"]["title"]
    body = served.client.get("/titles/search", params={"q": title[:-1], "limit": 5}).json()
    parsed = schemas.SearchResponse.model_validate(body)
    assert parsed.model_version == served.version and 1 <= len(parsed.candidates) <= 5
    assert parsed.candidates[0].movie_id == 1
    assert parsed.candidates[0].match in ("prefix", "fuzzy", "exact")
    for params in ({"q": "x", "limit": 51}, {"q": ""}, {"q": "!!!"}):
        response = served.client.get("/titles/search", params=params)
        assert response.status_code == 422, params
        assert response.json()["detail"][0]["field"] in ("limit", "q")


@pytest.mark.slow
def test_title_lookup_by_tconst_or_movie_id_and_404_with_suggestions(served: Served) -> None:
    by_id = served.client.get("/titles/1").json()
    schemas.TitleResponse.model_validate(by_id)
    tconst = by_id["title"]["tconst"]
    assert served.client.get(f"/titles/{tconst}").json() == by_id
    title = by_id["title"]["title"]
    missing = served.client.get(f"/titles/{title.lower()}")
    assert missing.status_code == 404
    body = schemas.TitleNotFoundResponse.model_validate(missing.json())
    assert body.suggestions and body.suggestions[0].movie_id == 1
    assert served.client.get("/titles/tt9999999999").status_code == 404


@pytest.mark.slow
def test_similar_titles_with_filters(served: Served) -> None:
    title = _a_title_with_genres(served)
    path = f"/titles/{title['ref']}/similar"
    body = served.client.get(path, params={"k": 5}).json()
    parsed = schemas.SimilarResponse.model_validate(body)
    assert parsed.title.ref == title["ref"] and len(parsed.items) == 5
    assert title["ref"] not in [i.ref for i in parsed.items]
    sims = [i.similarity for i in parsed.items]
    assert sims == sorted(sims, reverse=True)
    view = served.store.current.view  # type: ignore[union-attr]
    hits = view.similar_body.cache_info().hits  # type: ignore[attr-defined]
    assert served.client.get(path, params={"k": 5}).json() == body  # served from the LRU
    assert view.similar_body.cache_info().hits == hits + 1  # type: ignore[attr-defined]
    uncached = ServingView.build(view.recommender, similar_cache_size=0)
    assert json.loads(uncached.similar_body(view.recommender.row(title["ref"]), 5, None)) == body

    genre = title["genres"][0]
    filtered = served.client.get(
        path,
        params=[("k", "8"), ("genres", f"{genre.lower()},{title['genres'][1]}"),
                ("title_type", "movie"), ("title_type", "tvSeries"), ("min_year", "1900")],
    ).json()  # fmt: skip
    wanted = {genre, title["genres"][1]}
    for item in filtered["items"]:
        assert wanted & set(item["genres"]) and item["title_type"] in ("movie", "tvSeries")
        assert item["year"] >= 1900

    for params, field in (
        ({"genres": "Drama,Nope"}, "genres"),
        ({"title_type": "podcast"}, "title_type"),
        ({"min_year": 2000, "max_year": 1990}, "min_year"),
        ({"k": 0}, "k"),
        ({"k": 101}, "k"),
    ):
        response = served.client.get(path, params=params)
        assert response.status_code == 422, params
        (problem,) = response.json()["detail"]
        assert problem["field"] == field and field in problem["message"]
    unknown_genre = served.client.get(path, params={"genres": "Nope"}).json()
    assert "allowed" in unknown_genre["detail"][0]["message"]
    assert "Drama" in unknown_genre["detail"][0]["message"]
    assert served.client.get("/titles/tt9999999999/similar").status_code == 404


@pytest.mark.slow
def test_recommendations_from_ratings(served: Served) -> None:
    liked = served.client.get("/titles/1").json()["title"]
    request = {"ratings": [{"title": liked["tconst"], "rating": 4.5}], "k": 6, "exclude": ["2"]}
    response = served.client.post("/recommendations", json=request)
    assert response.status_code == 200
    body = schemas.RecommendationResponse.model_validate(response.json())
    assert body.strategy == "two_tower" and body.model_version == served.version
    assert len(body.items) == 6
    refs = {i.ref for i in body.items} | {str(i.movie_id) for i in body.items}
    assert liked["ref"] not in refs and "2" not in refs
    for item in body.items:
        assert 0.5 <= item.predicted_rating <= 5 and round(item.predicted_rating, 2) == (
            item.predicted_rating
        )
        assert item.because is not None and item.because.ref == liked["ref"]
        assert item.because.rating == 4.5
        assert item.explanation == f"Because you rated {liked['title']} (4.5★)"

    filtered = served.client.post(
        "/recommendations",
        json={**request, "filters": {"title_types": ["movie"], "min_year": 1990}},
    ).json()
    assert all(i["title_type"] == "movie" and i["year"] >= 1990 for i in filtered["items"])


@pytest.mark.slow
def test_recommendations_cold_start_from_zero_ratings(served: Served) -> None:
    body = served.client.post("/recommendations", json={"k": 4}).json()
    parsed = schemas.RecommendationResponse.model_validate(body)
    assert parsed.strategy == "popular" and "popular" in parsed.note and len(parsed.items) == 4
    assert all(i.because is None for i in parsed.items)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("request_body", "field"),
    [
        ({"ratings": [{"title": "1", "rating": 4.3}]}, "ratings.0.rating"),
        ({"ratings": [{"title": "1", "rating": 6}]}, "ratings.0.rating"),
        ({"ratings": [{"title": "1", "rating": 0}]}, "ratings.0.rating"),
        ({"ratings": [{"title": "1"}]}, "ratings.0.rating"),
        ({"ratings": [{"rating": 4}]}, "ratings.0.title"),
        ({"ratings": [{"title": str(i), "rating": 3} for i in range(501)]}, "ratings"),
        ({"exclude": [str(i) for i in range(501)]}, "exclude"),
        ({"ratings": [{"title": "1", "rating": 4}, {"title": "1", "rating": 2}]}, "ratings"),
        ({"k": 0}, "k"),
        ({"k": 101}, "k"),
        ({"filters": {"genres": ["Nope"]}}, "filters.genres"),
        ({"filters": {"title_types": ["podcast"]}}, "filters.title_types"),
        ({"filters": {"min_year": 2001, "max_year": 2000}}, "filters.min_year"),
        ({"ratngs": []}, "ratngs"),
    ],
)
def test_recommendation_input_errors_name_the_field(
    served: Served, request_body: dict[str, Any], field: str
) -> None:
    response = served.client.post("/recommendations", json=request_body)
    assert response.status_code == 422
    problems = schemas.ValidationErrorResponse.model_validate(response.json()).detail
    assert problems[0].field == field and field in problems[0].message


@pytest.mark.slow
def test_the_same_title_twice_by_two_refs_is_422(served: Served) -> None:
    tconst = served.client.get("/titles/1").json()["title"]["tconst"]
    ratings = [{"title": "1", "rating": 4}, {"title": tconst, "rating": 2}]
    response = served.client.post("/recommendations", json={"ratings": ratings})
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "ratings.1.title"


@pytest.mark.slow
def test_unknown_titles_are_404_with_suggestions_for_each(served: Served) -> None:
    title = served.client.get("/titles/1").json()["title"]["title"]
    request = {
        "ratings": [{"title": "1", "rating": 4}, {"title": title.lower(), "rating": 3}],
        "exclude": ["tt9999999999"],
    }
    response = served.client.post("/recommendations", json=request)
    assert response.status_code == 404
    body = schemas.UnknownTitlesResponse.model_validate(response.json())
    assert [(u.field, u.ref) for u in body.unknown] == [
        ("ratings.1.title", title.lower()),
        ("exclude.0", "tt9999999999"),
    ]
    assert body.unknown[0].suggestions[0].movie_id == 1


@pytest.mark.slow
def test_known_user_recommendations(served: Served) -> None:
    rec = served.store.current.view.recommender  # type: ignore[union-attr]
    user = int(rec.user_ids[0])
    seen = set(rec.history_items[rec.history_offsets[0] : rec.history_offsets[1]].tolist())
    body = served.client.get(f"/movielens-users/{user}/recommendations", params={"k": 5}).json()
    parsed = schemas.RecommendationResponse.model_validate(body)
    assert parsed.strategy == "two_tower" and len(parsed.items) == 5
    assert not seen & {i.movie_id for i in parsed.items}
    assert all(i.because and i.explanation.startswith("Because you rated") for i in parsed.items)
    missing = served.client.get("/movielens-users/999999999/recommendations")
    assert missing.status_code == 404 and missing.json() == {"detail": "unknown user 999999999"}


@pytest.mark.slow
def test_scores_are_aligned_with_candidates(served: Served) -> None:
    rec = served.store.current.view.recommender  # type: ignore[union-attr]
    tconst = served.client.get("/titles/2").json()["title"]["tconst"]
    request = {"ratings": [{"title": 1, "rating": 5}], "candidates": ["2", 3, tconst]}
    body = served.client.post("/scores", json=request).json()
    parsed = schemas.ScoreResponse.model_validate(body)
    assert parsed.candidates == ["2", "3", tconst]
    expected = rec.score([("1", 5.0)], ["2", "3", tconst])
    assert parsed.predicted_ratings == [round(float(x), 4) for x in expected]
    assert parsed.predicted_ratings[0] == parsed.predicted_ratings[2]
    too_many = served.client.post("/scores", json={"candidates": ["1"] * 1001})
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["field"] == "candidates"
    unknown = served.client.post("/scores", json={"candidates": ["1", "tt9999999999"]})
    assert unknown.status_code == 404 and unknown.json()["unknown"][0]["field"] == "candidates.1"


@pytest.mark.slow
def test_scores_for_a_known_user_use_their_stored_history(served: Served) -> None:
    """`/scores` with `user_id` equals `/scores` with that user's full, timed history."""
    rec = served.store.current.view.recommender  # type: ignore[union-attr]
    user = int(rec.user_ids[2])
    pos = 2
    seen = rec.history_items[rec.history_offsets[pos] : rec.history_offsets[pos + 1]]
    candidates = ["1", "2", "3", "5"]
    by_id = served.client.post("/scores", json={"user_id": user, "candidates": candidates})
    assert by_id.status_code == 200
    expected = rec.score_for_user(user, candidates)
    assert by_id.json()["predicted_ratings"] == [round(float(x), 4) for x in expected]
    history = rec.history_frame(user)
    ratings = [
        {"title": int(m), "rating": float(r), "rated_at": int(t)}
        for m, r, t in zip(
            history["movie_id"], history["rating"], history["rating_ts"], strict=True
        )
    ]
    assert len(ratings) == len(seen)
    by_history = served.client.post("/scores", json={"ratings": ratings, "candidates": candidates})
    assert by_history.json()["predicted_ratings"] == by_id.json()["predicted_ratings"]
    both = served.client.post(
        "/scores", json={"user_id": user, "ratings": ratings[:1], "candidates": candidates}
    )
    assert both.status_code == 422
    missing = served.client.post("/scores", json={"user_id": 999999999, "candidates": ["1"]})
    assert missing.status_code == 404 and missing.json() == {"detail": "unknown user 999999999"}


@pytest.mark.slow
def test_version_ready_and_model_version_header(served: Served, registry: Registry) -> None:
    ready = served.client.get("/ready")
    assert ready.json() == {"status": "ready", "model_version": served.version}
    version = schemas.VersionResponse.model_validate(served.client.get("/version").json())
    assert version.registry is not None and version.registry.version == "1"
    assert version.registry.alias == "champion" and version.source == "mlflow"
    assert "files" not in version.manifest and version.manifest["dagster_run_id"] == "test"
    assert version.manifest["bundle_version"] == version.model_version == served.version
    assert served.client.get("/health").headers["x-model-version"] == served.version
    # what the served model was trained on, and how it ranks
    assert version.served_model is not None
    assert version.served_model.trained_on["kind"] == "full refit"
    assert version.served_model.trained_on["ratings"] > 0
    assert version.served_model.ranking_rule.startswith(
        version.manifest["model"]["ranking_rule"]["kind"]
    )


@pytest.mark.slow
def test_metrics_use_route_templates(served: Served) -> None:
    served.client.get("/titles/1/similar", params={"k": 3})
    served.client.get("/titles/2/similar")
    served.client.post("/recommendations", json={"ratings": [{"title": "1", "rating": 4}]})
    text = served.client.get("/metrics").text
    route = "/titles/{ref}/similar"
    assert _metric(text, "http_requests_total", route=route, method="GET", status="200") >= 2
    assert _metric(text, "http_request_duration_seconds_count", route=route, method="GET") >= 2
    assert _metric(text, "cine_recommendation_duration_seconds_count", kind="ratings") >= 1
    assert _metric(text, "cine_model_version_info", version="1", bundle_version=served.version) == 1
    assert _metric(text, "cine_model_reloads_total") == 1
    assert _metric(text, "cine_model_reload_failures_total") == 0
    assert "/titles/1/similar" not in text and "/titles/2/similar" not in text


@pytest.mark.slow
def test_ready_turns_200_after_the_first_refresh(registry: Registry) -> None:
    store = registry.store()
    client = TestClient(create_app(store, _settings(registry.root), watch=False))
    assert client.get("/ready").status_code == 503
    assert store.refresh() == "loaded"
    assert client.get("/ready").status_code == 200
    assert store.refresh() == "unchanged"
    source = store.source
    assert isinstance(source, RegistrySource)
    assert [p.name for p in source.cache_dir.iterdir()] == [f"{TEST_MODEL}-v1"]


@pytest.mark.slow
def test_a_broken_version_is_refused_and_the_old_one_keeps_serving(
    registry: Registry, tmp_path: Path
) -> None:
    model = registry.fresh_model("1")
    store = registry.store(model, backoff_s=3600)
    client = TestClient(create_app(store, _settings(registry.root), watch=False))
    assert store.refresh() == "loaded"
    good = client.get("/version").json()

    # version 2: registered from a copy of v1's artifacts, then one bundle file is altered
    broken_src = shutil.copytree(artifact_dir(registry.uri, model, "1"), tmp_path / "broken")
    copy_tags = {"bundle_version": good["model_version"]}
    assert add_version(registry.uri, model, broken_src, copy_tags) == "2"
    tamper_bundle_file(broken_src / "artifacts" / "bundle")
    registry.promote(model, "2", force=True)  # `promote` refuses it without force (issue 12)

    assert store.refresh() == "failed"
    assert store.refresh() == "skipped"  # not retried in a hot loop
    refused = client.get("/version").json()  # v1 still served, now reported as a fallback
    assert refused["fallback"]["wanted"]["version"] == "2"
    assert {**refused, "fallback": None, "registry": good["registry"]} == good
    assert client.get("/titles/1/similar").status_code == 200
    text = client.get("/metrics").text
    assert _metric(text, "cine_model_reload_failures_total") == 1
    assert _metric(text, "cine_model_version_info", version="1") == 1

    # the alias moves on to a good version: loaded; the failed download is gone
    assert copy_version(registry.uri, TEST_MODEL, registry.v2, model) == "3"
    registry.promote(model, "3")
    assert store.refresh() == "loaded"
    assert client.get("/version").json()["registry"]["version"] == "3"
    assert client.get("/ready").json()["model_version"] == registry.v2_bundle_version
    cache = store.source.cache_dir  # type: ignore[attr-defined]
    assert sorted(p.name for p in cache.iterdir()) == [f"{model}-v1", f"{model}-v3"]

    missing = registry.store("no-such-model")
    assert missing.refresh() == "failed" and missing.reload_failures == 1


@pytest.mark.slow
def test_swap_under_concurrent_requests_drops_nothing(registry: Registry) -> None:
    model = registry.fresh_model("1")
    settings = _settings(
        registry.root,
        MLFLOW_TRACKING_URI=registry.uri,
        CINE_MODEL_NAME=model,
        CINE_SERVING_DIR=str(registry.root / "caches" / model),
        CINE_RELOAD_INTERVAL_S="0.2",
    )
    app = create_app(settings=settings)
    store: ModelStore = app.state.store
    results: list[list[tuple[int, str | None]]] = [[] for _ in range(4)]
    stop = threading.Event()

    def hammer(n: int) -> None:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            for i in itertools.count():
                if stop.is_set():
                    return
                if (i + n) % 2:
                    response = http.get("/titles/1/similar", params={"k": 5})
                else:
                    rating = {"title": "1", "rating": 4.5}
                    response = http.post("/recommendations", json={"ratings": [rating], "k": 5})
                version = response.json().get("model_version") if response.is_success else None
                results[n].append((response.status_code, version))

    with live_server(app) as base_url:
        wait_for(lambda: httpx.get(f"{base_url}/ready").status_code == 200, 120, "first load")
        v1 = store.current.model_version  # type: ignore[union-attr]
        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.0)
            version = copy_version(registry.uri, TEST_MODEL, registry.v2, model)  # register
            registry.promote(model, version)
            wait_for(
                lambda: store.current.registry_version == version,  # type: ignore[union-attr]
                60,
                "the watcher to swap",
            )
            time.sleep(1.0)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)

    assert not any(t.is_alive() for t in threads)
    flat = [r for per_thread in results for r in per_thread]
    assert len(flat) > 20 and {status for status, _ in flat} == {200}
    assert {v for _, v in flat} == {v1, registry.v2_bundle_version}
    for per_thread in results:  # each client sees v1 then v2, never back
        versions = [v for _, v in per_thread]
        first_v2 = versions.index(registry.v2_bundle_version)
        assert set(versions[:first_v2]) == {v1} and set(versions[first_v2:]) == {
            registry.v2_bundle_version
        }
    assert not store._thread  # the lifespan stopped the watcher


@pytest.mark.slow
def test_air_gapped_bundle_dir_is_served_and_watched(registry: Registry, tmp_path: Path) -> None:
    bundle = shutil.copytree(registry.bundle_dir, tmp_path / "bundle")
    settings = _settings(tmp_path, CINE_BUNDLE_DIR=str(bundle), CINE_RELOAD_INTERVAL_S="0.1")
    app = create_app(settings=settings)
    store: ModelStore = app.state.store
    with TestClient(app) as client:
        wait_for(lambda: client.get("/ready").status_code == 200, 120, "first load")
        version = client.get("/version").json()
        assert version["source"] == "directory" and version["registry"] is None
        first = version["model_version"]

        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["bundle_version"] = "0123456789abcdef"
        (bundle / "manifest.json").write_text(json.dumps(manifest))
        wait_for(lambda: store.reloads == 2, 60, "the changed manifest to load")
        assert client.get("/ready").json()["model_version"] == "0123456789abcdef" != first

        tamper_bundle_file(bundle)
        manifest["bundle_version"] = "fedcba9876543210"
        (bundle / "manifest.json").write_text(json.dumps(manifest))
        wait_for(lambda: store.reload_failures >= 1, 60, "the tampered bundle to fail")
        assert client.get("/titles/1/similar").json()["model_version"] == "0123456789abcdef"
        assert store.reload_failures == 1  # back-off: not retried every 0.1 s
    assert bundle.is_dir()  # never deleted


def test_offset_pages_through_the_same_ranking(served: Served) -> None:
    """`offset` + `k` pages join into the list one request of offset + k gives, on every
    endpoint that returns a ranked list ("load more")."""
    title = _a_title_with_genres(served)
    rec = served.store.current.view.recommender  # type: ignore[union-attr]
    user = int(rec.user_ids[0])
    liked = served.client.get("/titles/1").json()["title"]
    body = {"ratings": [{"title": liked["tconst"], "rating": 4.5}]}

    def refs(method: str, path: str, k: int, offset: int) -> list[str]:
        if method == "GET":
            answer = served.client.get(path, params={"k": k, "offset": offset})
        else:
            answer = served.client.post(path, json=body | {"k": k, "offset": offset})
        assert answer.status_code == 200, answer.text
        return [item["ref"] for item in answer.json()["items"]]

    for method, path in (
        ("GET", f"/titles/{title['ref']}/similar"),
        ("POST", "/recommendations"),
        ("GET", f"/movielens-users/{user}/recommendations"),
    ):
        whole = refs(method, path, 9, 0)
        assert len(whole) == 9
        assert refs(method, path, 4, 0) + refs(method, path, 5, 4) == whole, path
    too_far = served.client.get(f"/titles/{title['ref']}/similar", params={"offset": 401})
    assert too_far.status_code == 422 and "offset" in too_far.text
    wrong = served.client.post("/recommendations", json=body | {"offset": -1})
    assert wrong.status_code == 422 and "offset" in wrong.text
