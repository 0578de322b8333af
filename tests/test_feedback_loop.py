"""Application feedback into training: the incremental, gated `app_feedback` copy (a real DuckDB
file and a real SQLite store), `training_ratings`, `feedback_sensor`, and the loop end to end:
events posted to the API → one `retrain` request → a run trained on them → a champion that
knows the application user."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import dagster as dg
import pytest
from fastapi.testclient import TestClient

from orchestration.feedback_sensor import (
    ENV_FEEDBACK_MIN_RATINGS,
    TAG_FEEDBACK_WATERMARK,
    feedback_sensor,
    min_new_ratings,
)
from orchestration.resources import FeedbackStoreResource
from recommender_lib.engine.recommender import Recommender
from recommender_lib.modeling import splits
from recommender_lib.registry.client import Registry
from recommender_lib.sources.feedback import (
    APP_USER_ID_BASE,
    FeedbackEvent,
    FeedbackStore,
    sqlite_url,
    training_user_id,
)
from recommender_lib.sources.integrity import extract_zip
from recommender_lib.warehouse import tables as warehouse
from recommender_lib.warehouse.app_feedback import (
    APP_FEEDBACK,
    TRAINING_RATINGS,
    build_training_ratings,
    copy_feedback,
)
from recommender_lib.warehouse.catalog import CatalogFilters, build_catalog, imdb_only_item_id

NOW = int(time.time())
ALICE_TRAINING_ID = 1_165_262_452_267_355_648  # training_user_id("alice"): pinned, never moves


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def built_warehouse(sample_mirror, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real warehouse file with the sample's MovieLens tables, IMDb titles and catalogue."""
    scratch = tmp_path_factory.mktemp("feedback_wh")
    release = extract_zip(sample_mirror.movielens_zip, scratch) / "ml-latest-small"
    path = scratch / "warehouse.duckdb"
    conn = warehouse.connect(path)
    warehouse.load_movielens_release(conn, release)
    warehouse.load_imdb_titles(conn, sample_mirror.basics, sample_mirror.ratings)
    build_catalog(conn, CatalogFilters(min_votes=0))
    conn.close()
    return path


@pytest.fixture
def wh(built_warehouse: Path, tmp_path: Path):
    path = tmp_path / "warehouse.duckdb"
    shutil.copy(built_warehouse, path)
    conn = warehouse.connect(path)
    yield conn
    conn.close()


@pytest.fixture
def store(tmp_path: Path):
    with FeedbackStore.open(sqlite_url(tmp_path / "feedback" / "events.db")) as opened:
        yield opened


def _titles(conn, n: int = 3, imdb_only: bool = False) -> list[tuple[str, int]]:
    """(ref, item_id) of `n` catalogue titles: MovieLens ones, or IMDb-only ones."""
    where = "item_id < 0" if imdb_only else "item_id > 0"
    rows = conn.execute(
        f"SELECT tconst, movie_id, item_id FROM catalog WHERE {where} ORDER BY item_id LIMIT {n}"
    ).fetchall()
    return [(tconst or str(movie_id), int(item_id)) for tconst, movie_id, item_id in rows]


def _event(eid: str, user: str, title: tuple[str, int], kind: str = "rating",
           value: float | None = 4.0, at: int = NOW - 3600) -> FeedbackEvent:  # fmt: skip
    return FeedbackEvent(eid, user, title[0], title[1], kind, value, at)


def _rows(conn, sql: str) -> list[tuple]:
    return conn.execute(sql).fetchall()


# ------------------------------------------------------------------------ incremental copy


def test_copy_is_incremental_and_a_rerun_adds_nothing(wh, store) -> None:
    a, b, c = _titles(wh)
    store.add([_event("e1", "alice", a, value=4.5), _event("e2", "alice", b, "impression", None),
               _event("e3", "bob", c, "watched", None)])  # fmt: skip
    first = copy_feedback(wh, store)
    assert first.published and first.previous_watermark == 0 and first.watermark == 3
    assert dict(first.copied) == {"impression": 1, "rating": 1, "watched": 1}
    assert first.total_rows == 3 and first.forgotten_users == 0

    again = copy_feedback(wh, store)
    assert again.published and again.new_rows == 0 and again.total_rows == 3
    assert again.previous_watermark == again.watermark == 3

    store.add([_event("e1", "alice", a, value=1.0), _event("e4", "bob", a, "dismissed", None)])
    third = copy_feedback(wh, store)  # e1 was a duplicate in the store: only e4 is new
    assert third.previous_watermark == 3 and dict(third.copied) == {"dismissed": 1}
    rows = _rows(wh, f"SELECT event_id, seq, value FROM {APP_FEEDBACK} ORDER BY seq")
    assert [r[0] for r in rows] == ["e1", "e2", "e3", "e4"] and rows[0][2] == 4.5
    assert rows[1][2] is None  # no value on an impression: NULL, not NaN
    assert not warehouse.table_exists(wh, warehouse.staging_table(APP_FEEDBACK))


def test_training_user_ids_follow_the_documented_mapping(wh, store) -> None:
    (a,) = _titles(wh, 1)
    store.add([_event("e1", "alice", a), _event("e2", "bob@example.org", a)])
    copy_feedback(wh, store)
    ids = dict(_rows(wh, f"SELECT app_user, training_user_id FROM {APP_FEEDBACK}"))
    assert ids == {u: training_user_id(u) for u in ("alice", "bob@example.org")}
    assert ids["alice"] == ALICE_TRAINING_ID and min(ids.values()) >= APP_USER_ID_BASE
    max_movielens = _rows(wh, "SELECT max(user_id) FROM movielens_ratings")[0][0]
    assert max_movielens < APP_USER_ID_BASE


@pytest.mark.parametrize(
    ("bad", "failing"),
    [
        (FeedbackEvent("x", "carol", "tt9999999", -9_999_999, "rating", 4.0, NOW),
         "known_titles"),
        (FeedbackEvent("x", "carol", "1", 1, "rating", 4.3, NOW), "pandera_schema"),
        (FeedbackEvent("x", "carol", "1", 1, "watched", 3.0, NOW), "pandera_schema"),
        (FeedbackEvent("x", "carol", "1", 1, "rating", 4.0, 500_000_000), "pandera_schema"),
        (FeedbackEvent("x", "carol", "1", 1, "rating", 4.0, NOW + 86_400), "pandera_schema"),
        (FeedbackEvent("x", "carol", "1", 1, "liked", None, NOW), "pandera_schema"),
    ],
    ids=["unknown-title", "not-half-stars", "value-on-watched", "before-1990", "future",
         "unknown-type"],
)  # fmt: skip
def test_bad_rows_block_the_copy_and_nothing_is_appended(wh, store, bad, failing) -> None:
    (a,) = _titles(wh, 1)
    store.add([_event("ok-1", "alice", a)])
    copy_feedback(wh, store)
    store.add([_event("ok-2", "alice", a, "watched", None), bad])  # the store takes anything
    blocked = copy_feedback(wh, store)
    assert not blocked.published
    assert {n for n, r in blocked.checks.items() if not r.passed} == {failing}
    assert blocked.rejected_table == f"{APP_FEEDBACK}__rejected"
    assert blocked.total_rows == 1 and blocked.watermark == 1  # ok-2 not appended either
    assert _rows(wh, f"SELECT count(*) FROM {APP_FEEDBACK}__rejected") == [(2,)]
    assert blocked.rejected_table in blocked.checks[failing].summary
    assert copy_feedback(wh, store).published is False  # still there: still blocked

    store.forget("carol")  # the offending user is forgotten: the copy passes again
    passed = copy_feedback(wh, store)
    assert passed.published and passed.total_rows == 2 and passed.watermark == 2
    assert not warehouse.table_exists(wh, f"{APP_FEEDBACK}__rejected")


def test_duplicate_event_ids_across_copies_are_blocked(wh, store) -> None:
    a, b = _titles(wh, 2)
    store.add([_event("e1", "alice", a)])
    copy_feedback(wh, store)
    wh.execute(f"UPDATE {APP_FEEDBACK} SET event_id = 'e2'")  # e2 is in the table already
    store.add([_event("e2", "alice", b)])
    blocked = copy_feedback(wh, store)
    assert not blocked.published and not blocked.checks["unique_key"].passed
    assert blocked.total_rows == 1


def test_forgotten_users_leave_the_warehouse_on_the_next_copy(wh, store) -> None:
    a, b = _titles(wh, 2)
    store.add([_event("a1", "alice", a), _event("a2", "alice", b, value=2.0),
               _event("b1", "bob", a, value=5.0)])  # fmt: skip
    copy_feedback(wh, store)
    assert build_training_ratings(wh).app_users == 2
    assert store.forget("alice") == 2
    copied = copy_feedback(wh, store)
    assert (copied.forgotten_users, copied.forgotten_rows, copied.total_rows) == (1, 2, 1)
    assert _rows(wh, f"SELECT DISTINCT app_user FROM {APP_FEEDBACK}") == [("bob",)]
    trained = build_training_ratings(wh)
    assert (trained.app_rows, trained.app_users) == (1, 1)
    alice = wh.execute(
        f"SELECT count(*) FROM {TRAINING_RATINGS} WHERE user_id = ?", [ALICE_TRAINING_ID]
    ).fetchall()
    assert alice == [(0,)]
    again = copy_feedback(wh, store)
    assert again.forgotten_users == 0 and again.total_rows == 1


# ------------------------------------------------------------------------ training ratings


def test_training_ratings_add_the_latest_application_ratings(wh, store) -> None:
    a, b = _titles(wh, 2)
    (imdb_only,) = _titles(wh, 1, imdb_only=True)
    assert imdb_only[1] == imdb_only_item_id(imdb_only[0])
    store.add([
        _event("r1", "alice", a, value=2.0, at=NOW - 7200),
        _event("r2", "alice", a, value=4.5, at=NOW - 3600),  # the latest of alice x a wins
        _event("r3", "alice", imdb_only, value=3.5),
        _event("w1", "alice", b, "watched", None),
        _event("d1", "bob", b, "dismissed", None),  # no rating: bob is not a training user
    ])  # fmt: skip
    copy_feedback(wh, store)
    counts = build_training_ratings(wh)
    movielens = warehouse.row_count(wh, "movielens_ratings")
    assert (counts.movielens_rows, counts.app_rows, counts.app_users) == (movielens, 2, 1)
    rows = wh.execute(
        f"SELECT movie_id, rating, rating_ts FROM {TRAINING_RATINGS} WHERE user_id = ? "
        "ORDER BY movie_id",
        [ALICE_TRAINING_ID],
    ).fetchall()
    assert rows == sorted([(imdb_only[1], 3.5, NOW - 3600), (a[1], 4.5, NOW - 3600)])
    splits.build_splits(wh, ratings_table=TRAINING_RATINGS)
    in_splits = wh.execute(
        f"SELECT count(*) FROM {splits.SPLITS_TABLE} WHERE user_id = ? AND protocol = 'P1'",
        [ALICE_TRAINING_ID],
    ).fetchall()
    assert in_splits == [(2,)]


def test_without_application_ratings_the_splits_are_unchanged(wh, store) -> None:
    (a,) = _titles(wh, 1)
    store.add([_event("i1", "alice", a, "impression", None)])  # events, but no rating
    copy_feedback(wh, store)
    assert build_training_ratings(wh).app_rows == 0
    order = "ORDER BY protocol, user_id, movie_id"
    splits.build_splits(wh)
    before = wh.execute(f"SELECT * FROM {splits.SPLITS_TABLE} {order}").fetchall()
    types = warehouse.table_schema(wh, splits.SPLITS_TABLE)
    splits.build_splits(wh, ratings_table=TRAINING_RATINGS)
    assert wh.execute(f"SELECT * FROM {splits.SPLITS_TABLE} {order}").fetchall() == before
    assert warehouse.table_schema(wh, splits.SPLITS_TABLE) == types


# ------------------------------------------------------------------------------ definitions


def test_definitions_wire_the_feedback_loop() -> None:
    from orchestration.definitions import defs

    graph = defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey(APP_FEEDBACK))
    assert node.group_name == "warehouse" and dg.AssetKey("catalog") in node.parent_keys
    assert dg.AssetKey(APP_FEEDBACK) in graph.get(dg.AssetKey("rating_splits")).parent_keys
    checks = {c.name for c in graph.asset_check_keys if c.asset_key == dg.AssetKey(APP_FEEDBACK)}
    assert checks == {"pandera_schema", "unique_key", "known_titles"}
    assert all(graph.get_check_spec(dg.AssetCheckKey(dg.AssetKey(APP_FEEDBACK), c)).blocking
               for c in checks)  # fmt: skip

    def job_assets(name: str) -> set[str]:
        job = defs.resolve_job_def(name)
        return {k.to_user_string() for k in job.asset_layer.executable_asset_keys}

    assert APP_FEEDBACK in job_assets("retrain") and APP_FEEDBACK in job_assets("full_refresh")
    assert APP_FEEDBACK not in job_assets("ingest")
    sensor = defs.resolve_sensor_def("feedback_sensor")
    assert sensor.job_name == "retrain" and "feedback_store" in (defs.resources or {})


# ---------------------------------------------------------------------------------- sensor


def _tick(resource: FeedbackStoreResource, instance: dg.DagsterInstance, cursor: str | None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"feedback_store": resource}
    )
    return feedback_sensor(context)


def test_min_new_ratings_reads_the_environment() -> None:
    assert min_new_ratings({}) == 1000
    assert min_new_ratings({ENV_FEEDBACK_MIN_RATINGS: "25"}) == 25
    assert min_new_ratings({ENV_FEEDBACK_MIN_RATINGS: "-3"}) == 1000
    assert min_new_ratings({ENV_FEEDBACK_MIN_RATINGS: "many"}) == 1000


def test_sensor_counts_ratings_after_its_cursor(
    store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_FEEDBACK_MIN_RATINGS, "3")
    resource = FeedbackStoreResource(url=sqlite_url(tmp_path / "feedback" / "events.db"))
    instance = dg.DagsterInstance.ephemeral()
    a = ("1", 1)
    store.add([_event("r1", "u", a), _event("i1", "u", a, "impression", None),
               _event("r2", "v", a)])  # fmt: skip
    waiting = _tick(resource, instance, None)
    assert isinstance(waiting, dg.SensorResult) and not waiting.run_requests
    assert "2 new ratings after seq 0" in str(waiting.skip_reason) and waiting.cursor == "0"

    store.add([_event("r3", "w", a)])
    fired = _tick(resource, instance, waiting.cursor)
    assert isinstance(fired, dg.SensorResult) and len(fired.run_requests or []) == 1
    request = (fired.run_requests or [])[0]
    assert request.run_key == "feedback-4" and request.tags[TAG_FEEDBACK_WATERMARK] == "4"
    assert fired.cursor == "4"
    after = _tick(resource, instance, fired.cursor)
    assert isinstance(after, dg.SensorResult) and not after.run_requests


def test_sensor_skips_when_the_store_cannot_be_read(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    resource = FeedbackStoreResource(url=sqlite_url(blocker / "events.db"))
    result = _tick(resource, dg.DagsterInstance.ephemeral(), "7")
    assert isinstance(result, dg.SkipReason)
    assert "feedback store not read, cursor kept" in str(result.skip_message)


# -------------------------------------------------------------------------- end to end

RUN_CONFIG = {
    "ops": {
        "two_tower_model": {
            "config": {"epochs": 2, "embedding_dim": 8, "tower_units": [16], "head_units": [16]}
        },
        "model_evaluation_beats_baselines": {"config": {"ndcg_ratio": 0.0, "cold_ndcg_ratio": 0.0}},
        "model_version_not_worse_than_champion": {"config": {"tolerance": 0.3}},
    }
}


@pytest.mark.slow
def test_posted_feedback_retrains_a_champion_that_knows_the_user(
    sample_mirror,
    tmp_path: Path,
    dagster_home: Path,
    make_platform,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from serving.app import create_app
    from serving.model_store import ModelStore
    from serving.settings import ServingSettings

    platform = make_platform(sample_mirror.root)
    instance = dg.DagsterInstance.get()
    first = platform.defs.resolve_job_def("full_refresh").execute_in_process(
        run_config=RUN_CONFIG, instance=instance, raise_on_error=False
    )
    assert first.success
    registry = Registry.from_settings(platform.settings)
    assert registry.champion().version == "1"

    # An application user rates titles through the real API (same CINE_FEEDBACK_URL).
    serving_settings = ServingSettings.from_env(platform.env)
    model_store = ModelStore.from_settings(serving_settings)
    model_store.refresh()
    conn = warehouse.connect(platform.settings.warehouse_path, read_only=True)
    titles = _titles(conn, 6) + _titles(conn, 2, imdb_only=True)  # IMDb-only titles train too
    movielens = warehouse.row_count(conn, "movielens_ratings")
    conn.close()
    events = [
        {"event_id": f"app-{i}", "user": "app-user-1", "title": ref, "type": "rating",
         "value": 5.0 if i % 2 else 3.5}
        for i, (ref, _) in enumerate(titles)
    ] + [{"event_id": "app-shown", "user": "app-user-1", "title": titles[0][0],
          "type": "impression"}]  # fmt: skip
    with TestClient(create_app(model_store, serving_settings, watch=False)) as client:
        posted = client.post("/feedback", json={"events": events})
        assert posted.status_code == 200, posted.text
        assert posted.json()["accepted"] == len(events), posted.text

    monkeypatch.setenv(ENV_FEEDBACK_MIN_RATINGS, str(len(titles)))
    resource = platform.resource("feedback_store")
    fired = _tick(resource, instance, None)
    assert isinstance(fired, dg.SensorResult) and len(fired.run_requests or []) == 1
    request = (fired.run_requests or [])[0]
    assert fired.cursor is not None
    assert not (_tick(resource, instance, fired.cursor).run_requests or [])  # exactly one

    run = platform.defs.resolve_job_def(feedback_sensor.job_name).execute_in_process(
        run_config=RUN_CONFIG, instance=instance, tags=request.tags, raise_on_error=False
    )
    assert run.success
    meta = {e.asset_key.to_user_string(): e.materialization.metadata
            for e in run.get_asset_materialization_events()}  # fmt: skip
    assert meta["app_feedback"]["copied rating"].value == len(titles)
    assert meta["app_feedback"]["copied impression"].value == 1
    assert meta["rating_splits"]["application_rows"].value == len(titles)
    assert meta["rating_splits"]["application_users"].value == 1
    assert meta["rating_splits"]["movielens_rows"].value == movielens
    assert meta["rating_splits"]["dagster/row_count"].value == movielens + len(titles)
    champion = registry.champion()
    assert champion.version == "2"
    bundle_dir = registry.download_bundle(champion.version, tmp_path / "champion")
    bundle = Recommender.load(bundle_dir)
    assert training_user_id("app-user-1") in set(bundle.user_ids.tolist())
    assert not (_tick(resource, instance, None).run_requests or [])  # the run's watermark
