"""The feedback API on the real app, the tiny bundle and a real SQLite event store."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from recommender_lib.engine.app_users import DEMOTE_AFTER_IMPRESSIONS
from recommender_lib.sources.feedback import MAX_BATCH, FeedbackStore, sqlite_url
from serving.app import create_app
from serving.model_store import ModelStore
from serving.settings import ServingSettings
from serving.sources import DirectorySource
from tests.support.serving import shared_registered_tiny_store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, sample_mirror: Any) -> Path:
    return shared_registered_tiny_store(tmp_path_factory, sample_mirror)[2]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, bundle: Path) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("feedback_api")
    db = tmp / "feedback" / "events.db"
    store = ModelStore(DirectorySource(bundle))
    assert store.refresh() == "loaded"
    env = {"CINE_DATA_DIR": str(tmp), "CINE_FEEDBACK_URL": sqlite_url(db)}
    app = create_app(store, ServingSettings.from_env(env), watch=False)
    with TestClient(app) as client:
        yield {"client": client, "app": app, "db": db}


def view(served: dict[str, Any]) -> Any:
    return served["app"].state.store.current.view


def popular_refs(served: dict[str, Any], n: int) -> list[str]:
    """Canonical refs of the n most popular titles (the no-rating fallback's order)."""
    v = view(served)
    order = v.recommender.catalog["popularity"].rank(method="first", ascending=False)
    rows = order.sort_values().index[:n]
    return [v.meta[int(r)]["ref"] for r in rows]


def ev(event_id: str, user: str, title: Any, type: str = "rating", **extra: Any) -> dict[str, Any]:
    body = {"event_id": event_id, "user": user, "title": title, "type": type}
    if type == "rating" and "value" not in extra:
        body["value"] = 4.0
    return body | extra


def post(served: dict[str, Any], *events: Any) -> dict[str, Any]:
    response = served["client"].post("/feedback", json={"events": list(events)})
    assert response.status_code == 200, response.text
    return response.json()


def recs(served: dict[str, Any], user: str, **params: Any) -> dict[str, Any]:
    response = served["client"].get(f"/users/{user}/recommendations", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def rows_of(served: dict[str, Any], user: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(served["db"]) as conn:
        return conn.execute("SELECT * FROM feedback_events WHERE app_user = ?", (user,)).fetchall()


# ------------------------------------------------------------------------------------ tests
def test_events_are_accepted_and_read_back(served: dict[str, Any]) -> None:
    a, b, c = popular_refs(served, 3)
    movie_id = view(served).meta[view(served).recommender.row(a)]["movie_id"]
    out = post(
        served,
        ev("rb-1", "reader", movie_id, value=4.5, at=1_700_000_000),  # a MovieLens id as a number
        ev("rb-2", "reader", b, "watched", at="2024-05-01T12:00:00+02:00"),
        ev("rb-3", "reader", c, "impression"),
    )
    assert out["accepted"] == 3 and out["duplicates"] == 0 and out["rejected"] == 0
    assert [r["status"] for r in out["results"]] == ["accepted"] * 3
    got = served["client"].get("/users/reader/feedback").json()
    assert got["user"] == "reader" and got["total"] == 3
    items = got["items"]
    assert [i["event_id"] for i in items] == ["rb-1", "rb-2", "rb-3"]
    assert [i["title"] for i in items] == [a, b, c]  # canonical refs
    assert items[0]["value"] == 4.5 and items[0]["at"] == 1_700_000_000
    assert items[1]["value"] is None and items[1]["at"] == 1_714_557_600
    assert abs(items[2]["at"] - time.time()) < 60  # default: now
    page = served["client"].get("/users/reader/feedback", params={"limit": 1, "offset": 1}).json()
    assert [i["event_id"] for i in page["items"]] == ["rb-2"] and page["total"] == 3
    assert len(rows_of(served, "reader")) == 3


def test_duplicates_are_ignored_in_a_batch_and_across_batches(served: dict[str, Any]) -> None:
    (a,) = popular_refs(served, 1)
    first = post(served, ev("dup-1", "dupe", a), ev("dup-1", "dupe", a, value=1.0))
    assert [r["status"] for r in first["results"]] == ["accepted", "duplicate"]
    again = post(served, ev("dup-1", "dupe", a, value=2.0), ev("dup-2", "dupe", a, "watched"))
    assert [r["status"] for r in again["results"]] == ["duplicate", "accepted"]
    assert again["duplicates"] == 1 and again["accepted"] == 1
    stored = served["client"].get("/users/dupe/feedback").json()["items"]
    assert [(i["event_id"], i["value"]) for i in stored] == [("dup-1", 4.0), ("dup-2", None)]


def test_invalid_events_are_rejected_one_by_one(served: dict[str, Any]) -> None:
    (a,) = popular_refs(served, 1)
    future = int(time.time()) + 3600
    out = post(
        served,
        ev("bad-1", "picky", a, "liked"),
        ev("bad-2", "picky", a, value=4.3),
        ev("bad-3", "picky", a, "dismissed", value=2.0),
        ev("bad-4", "picky", a, "watched", at=future),
        ev("bad-5", "picky", "tt9999999999"),
        ev("bad-6", "picky", a, value="4"),  # strict: no strings for numbers
        ev("bad-7", "pic ky", a),
        ev("bad-8", "picky", a, colour="red"),
        "not an object",
        ev("ok-1", "picky", a),
    )
    statuses = [r["status"] for r in out["results"]]
    assert statuses == ["rejected"] * 9 + ["accepted"]
    assert out["rejected"] == 9 and out["accepted"] == 1
    fields = [[e["field"] for e in r.get("errors", [])] for r in out["results"]]
    assert fields[:9] == [
        ["events.0.type"], ["events.1.value"], ["events.2.value"], ["events.3.at"],
        ["events.4.title"], ["events.5.value"], ["events.6.user"], ["events.7.colour"],
        ["events.8.event"],
    ]  # fmt: skip
    assert "unknown title 'tt9999999999'" in out["results"][4]["errors"][0]["message"]
    assert out["results"][8]["event_id"] is None
    assert [r[1] for r in rows_of(served, "picky")] == ["ok-1"]


def test_batch_envelope_is_validated_as_a_whole(served: dict[str, Any]) -> None:
    (a,) = popular_refs(served, 1)
    client = served["client"]
    too_many = [{"event_id": f"m{i}", "user": "many", "title": a, "type": "watched"}
                for i in range(MAX_BATCH + 1)]  # fmt: skip
    bodies: list[dict[str, Any]] = [
        {"events": too_many},
        {"events": []},
        {"events": too_many[:2], "x": 1},
        {},
        {"events": {"event_id": "m0"}},
    ]
    for body in bodies:
        response = client.post("/feedback", json=body)
        assert response.status_code == 422, body.keys()
    detail = client.post("/feedback", json={"events": too_many}).json()["detail"]
    assert detail[0]["field"] == "events" and str(MAX_BATCH) in detail[0]["message"]
    assert rows_of(served, "many") == []
    assert client.get("/users/bad%20user/feedback").status_code == 422


def test_forgetting_a_user_removes_every_trace(served: dict[str, Any]) -> None:
    a, b = popular_refs(served, 2)
    post(served, ev("fg-1", "leaver", a, value=5.0), ev("fg-2", "leaver", b, "dismissed"))
    assert recs(served, "leaver")["strategy"] == "two_tower"
    post(served, ev("fg-3", "stayer", a))
    assert served["client"].delete("/users/leaver").status_code == 204
    assert rows_of(served, "leaver") == []
    assert len(rows_of(served, "stayer")) == 1
    assert served["client"].get("/users/leaver/feedback").json() == {
        "user": "leaver", "total": 0, "items": []
    }  # fmt: skip
    after = recs(served, "leaver")
    assert after["strategy"] == "popular"
    assert [i["ref"] for i in after["items"]][:2] == [a, b]  # nothing of them is left
    assert served["client"].delete("/users/leaver").status_code == 204  # idempotent
    assert served["client"].delete("/users/nobody-ever").status_code == 204


def test_recommendations_follow_first_ratings_and_skip_chosen_titles(
    served: dict[str, Any],
) -> None:
    popular = popular_refs(served, 40)
    before = recs(served, "newbie", k=20)
    assert before["strategy"] == "popular" and [i["ref"] for i in before["items"]] == popular[:20]
    rated, dismissed, watched = popular[5:8], popular[0], popular[1]
    post(
        served,
        *[ev(f"nb-{i}", "newbie", ref, value=v) for i, (ref, v) in
          enumerate(zip(rated, (5.0, 4.5, 1.0), strict=True))],
        ev("nb-d", "newbie", dismissed, "dismissed"),
        ev("nb-w", "newbie", watched, "watched"),
    )  # fmt: skip
    after = recs(served, "newbie", k=50)
    refs = [i["ref"] for i in after["items"]]
    assert after["strategy"] == "two_tower" and "3 rating(s)" in after["note"]
    assert refs[:20] != [i["ref"] for i in before["items"]]
    assert not {*rated, dismissed, watched} & set(refs)
    because = [i["because"] for i in after["items"] if i["because"]]
    assert because and all(b["ref"] in rated and b["rating"] in (5.0, 4.5) for b in because)
    # a later rating of the same title wins
    post(served, ev("nb-late", "newbie", rated[0], value=0.5, at=int(time.time())))
    stored = {i["event_id"] for i in served["client"].get("/users/newbie/feedback").json()["items"]}
    assert "nb-late" in stored
    paged = recs(served, "newbie", k=5, offset=5)
    assert len(paged["items"]) == 5 and not {*rated, dismissed} & {i["ref"] for i in paged["items"]}


def test_titles_shown_often_and_never_chosen_are_demoted(served: dict[str, Any]) -> None:
    top = popular_refs(served, 5)
    shown = [
        ev(f"im-{n}", "browser", top[0], "impression") for n in range(DEMOTE_AFTER_IMPRESSIONS - 1)
    ]
    shown += [
        ev(f"im-b{n}", "browser", top[1], "impression") for n in range(DEMOTE_AFTER_IMPRESSIONS)
    ]
    post(served, *shown)
    refs = [i["ref"] for i in recs(served, "browser", k=10)["items"]]
    assert refs[0] == top[0]  # shown twice: not demoted yet
    assert top[1] not in refs  # shown three times, never chosen: behind every other title
    # filters that leave only a few titles: the demoted one comes after all the others
    meta = view(served).meta[view(served).recommender.row(top[1])]
    narrow = {"min_year": meta["year"], "max_year": meta["year"]}
    few = recs(served, "browser", k=100, **narrow)["items"]
    assert 1 < len(few) < 100 and few[-1]["ref"] == top[1]
    assert recs(served, "someone-else", k=100, **narrow)["items"][-1]["ref"] != top[1]
    post(served, ev("im-r", "browser", top[1], value=4.0))  # rated: excluded, no longer demoted
    assert top[1] not in [i["ref"] for i in recs(served, "browser", k=100)["items"]]


def test_feedback_metrics_count_events_by_type_and_rejections(served: dict[str, Any]) -> None:
    (a,) = popular_refs(served, 1)

    def scrape() -> dict[str, float]:
        text = served["client"].get("/metrics").text
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("cine_feedback_") and "_total" in line
        }

    before = scrape()
    post(served, ev("mx-1", "meter", a, "watched"), ev("mx-1", "meter", a, "watched"),
         ev("mx-2", "meter", a, value=4.4), ev("mx-3", "meter", "tt9999999999"))  # fmt: skip
    after = scrape()

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta('cine_feedback_events_total{status="accepted",type="watched"}') == 1
    assert delta('cine_feedback_events_total{status="duplicate",type="watched"}') == 1
    assert delta('cine_feedback_rejected_total{reason="value"}') == 1
    assert delta('cine_feedback_rejected_total{reason="unknown_title"}') == 1


def test_503_without_a_model_and_when_the_store_fails(
    served: dict[str, Any], tmp_path: Path
) -> None:
    never = ModelStore(DirectorySource(tmp_path / "missing"))
    db = tmp_path / "events.db"
    with FeedbackStore.open(sqlite_url(db)) as store:
        app = create_app(never, ServingSettings.from_env({"CINE_DATA_DIR": str(tmp_path)}),
                         watch=False, feedback=store)  # fmt: skip
        with TestClient(app) as client:
            body = {"events": [ev("x-1", "u", "1")]}
            assert client.post("/feedback", json=body).status_code == 503
            assert client.get("/users/u/recommendations").status_code == 503
        loaded = served["app"].state.store
        app = create_app(loaded, ServingSettings.from_env({"CINE_DATA_DIR": str(tmp_path)}),
                         watch=False, feedback=store)  # fmt: skip
        with sqlite3.connect(db) as conn:
            conn.execute("DROP TABLE feedback_events")  # the store breaks under the app
        with TestClient(app) as client:
            (a,) = popular_refs(served, 1)
            response = client.post("/feedback", json={"events": [ev("x-2", "u", a)]})
            assert response.status_code == 503 and response.headers["retry-after"]
            assert "feedback store unavailable" in response.json()["detail"]
            assert client.get("/users/u/feedback").status_code == 503


def test_openapi_documents_the_feedback_endpoints(served: dict[str, Any]) -> None:
    doc = served["client"].get("/openapi.json").json()
    post_doc = doc["paths"]["/feedback"]["post"]
    assert {"200", "413", "422", "503"} <= set(post_doc["responses"])
    assert "/users/{user}/recommendations" in doc["paths"]
    assert "204" in doc["paths"]["/users/{user}"]["delete"]["responses"]


# ------------------------------------------------------------------------------ durability
def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_api(bundle: Path, db: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _port()
    env = {**os.environ, "CINE_BUNDLE_DIR": str(bundle), "CINE_FEEDBACK_URL": sqlite_url(db),
           "CINE_DATA_DIR": str(db.parent)}  # fmt: skip
    cmd = [sys.executable, "-m", "uvicorn", "serving.app:app", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning"]  # fmt: skip
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"API did not start:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.mark.slow
def test_a_killed_api_loses_no_acknowledged_event(bundle: Path, tmp_path: Path) -> None:
    db, log = tmp_path / "store" / "events.db", tmp_path / "api.log"
    proc, base = _start_api(bundle, db, log)
    try:
        ref = httpx.get(f"{base}/titles/search", params={"q": "a"}).json()["candidates"][0]["ref"]
        events = [ev(f"kill-{i}", "durable", ref, "impression") for i in range(50)]
        response = httpx.post(f"{base}/feedback", json={"events": events}, timeout=30)
        proc.send_signal(signal.SIGKILL)  # right after the 2xx: no shutdown, no flush
        proc.wait(10)
        assert response.status_code == 200 and response.json()["accepted"] == 50
    finally:
        if proc.poll() is None:
            proc.kill()
    proc, base = _start_api(bundle, db, log)
    try:
        got = httpx.get(f"{base}/users/durable/feedback", params={"limit": 1000}).json()
        assert got["total"] == 50
        assert [i["event_id"] for i in got["items"]] == [f"kill-{i}" for i in range(50)]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
