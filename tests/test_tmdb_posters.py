"""TMDb posters: the client against a loopback fake TMDb (every fault), the warehouse cache, and
the `tmdb_posters` asset in real `dagster.materialize` runs."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import requests

from orchestration.resources import TmdbResource
from recommender_lib.sources.tmdb import (
    ENV_TMDB_API_KEY,
    PosterLookup,
    PosterStatus,
    TmdbClient,
    TmdbError,
    TokenBucket,
)
from recommender_lib.warehouse import posters
from recommender_lib.warehouse.posters import catalog_poster_urls, refresh_posters
from recommender_lib.warehouse.tables import connect
from tests.support.fake_tmdb import POSTER_PNG, Answer, FakeTmdb
from tests.support.platform import MirrorUrls

KEY = "s3cret-tmdb-key-1234"
POSTERS = dg.AssetSelection.assets("tmdb_posters")
NO_MIRROR = MirrorUrls("http://127.0.0.1:9/imdb", "http://127.0.0.1:9/ml.zip")  # never fetched


@pytest.fixture
def tmdb():
    with FakeTmdb(KEY) as fake:
        yield fake


def _client(fake: FakeTmdb, key: str = KEY, **options) -> TmdbClient:
    fast = {"requests_per_second": 1000.0, "burst": 50, "timeout_s": 0.5, "retries": 2,
            "backoff_s": 0.01}  # fmt: skip
    return TmdbClient(key, api_base_url=fake.api_base_url, **{**fast, **options})


def _warehouse(path: Path, links: dict[int, int | None]) -> Path:
    """A warehouse file with a `catalog` (movie ids of `links` + one IMDb-only title) and the
    `movie_links` (movie_id -> tmdb_id) of those movies."""
    with connect(path) as conn:
        conn.execute("CREATE TABLE movie_links (movie_id INTEGER, imdb_id BIGINT, "
                     "tconst VARCHAR, tmdb_id BIGINT)")  # fmt: skip
        conn.execute("CREATE TABLE catalog (item_id BIGINT, tconst VARCHAR, movie_id BIGINT, "
                     "title VARCHAR)")  # fmt: skip
        for movie_id, tmdb_id in links.items():
            tconst = f"tt{movie_id:07d}"
            conn.execute("INSERT INTO movie_links VALUES (?, ?, ?, ?)",
                         [movie_id, movie_id, tconst, tmdb_id])  # fmt: skip
            conn.execute("INSERT INTO catalog VALUES (?, ?, ?, ?)",
                         [movie_id, tconst, movie_id, f"Movie {movie_id}"])  # fmt: skip
        conn.execute("INSERT INTO catalog VALUES (-9999999, 'tt9999999', NULL, 'IMDb only')")
    return path


def _rows(path: Path) -> dict[int, tuple]:
    with connect(path, read_only=True) as conn:
        rows = conn.execute(
            "SELECT tmdb_id, status, poster_path, poster_url, http_status FROM tmdb_posters"
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


# -- the client, fault by fault


def test_found_missing_and_not_found(tmdb: FakeTmdb) -> None:
    tmdb.add_movie(603, "/matrix.jpg")
    tmdb.add_movie(604, None)
    with _client(tmdb) as client:
        found, missing, unknown = client.posters([603, 604, 605])
    assert found == PosterLookup(603, PosterStatus.FOUND, "/matrix.jpg", 200)
    assert missing == PosterLookup(604, PosterStatus.MISSING, None, 200)
    assert unknown == PosterLookup(605, PosterStatus.NOT_FOUND, None, 404)
    assert [len(tmdb.requests_for(i)) for i in (603, 604, 605)] == [1, 1, 1]
    assert "api_key=" + KEY in tmdb.requests_for(603)[0].path  # v3 key: query parameter


def test_429_waits_for_retry_after(tmdb: FakeTmdb) -> None:
    tmdb.add_movie(1, "/one.jpg")
    tmdb.queue(1, Answer.status(429, retry_after="1"))
    with _client(tmdb) as client:
        lookup = client.poster(1)
    assert lookup.status is PosterStatus.FOUND
    first, second = tmdb.requests_for(1)
    assert second.at - first.at >= 0.95  # the server's Retry-After, not the 10 ms backoff


def test_5xx_then_success(tmdb: FakeTmdb) -> None:
    tmdb.add_movie(2, "/two.jpg")
    tmdb.queue(2, Answer.status(503), Answer.status(502))
    with _client(tmdb) as client:
        assert client.poster(2).status is PosterStatus.FOUND
    assert len(tmdb.requests_for(2)) == 3


def test_5xx_forever_is_a_failed_lookup(tmdb: FakeTmdb) -> None:
    tmdb.add_movie(3, "/three.jpg")
    tmdb.queue(3, Answer.status(500, sticky=True))
    with _client(tmdb, retries=2) as client:
        lookup = client.poster(3)
    assert (lookup.status, lookup.http_status, lookup.poster_path) == (PosterStatus.FAILED, 500,
                                                                      None)  # fmt: skip
    assert "3 attempts" in (lookup.error or "")
    assert len(tmdb.requests_for(3)) == 3


def test_slow_answer_times_out_and_is_retried(tmdb: FakeTmdb) -> None:
    tmdb.add_movie(4, "/four.jpg")
    tmdb.add_movie(5, "/five.jpg")
    tmdb.queue(4, Answer.slow(1.5))
    tmdb.queue(5, Answer.slow(1.5, sticky=True))
    with _client(tmdb, timeout_s=0.3, retries=1) as client:
        started = time.monotonic()
        retried, failed = client.posters([4, 5])
        elapsed = time.monotonic() - started
    assert retried.status is PosterStatus.FOUND
    assert failed.status is PosterStatus.FAILED and failed.http_status is None
    assert "no answer within 0.3s" in (failed.error or "")
    assert len(tmdb.requests_for(4)) == 2 and len(tmdb.requests_for(5)) == 2
    assert elapsed < 1.5  # gave up on the client's timeout, not the server's sleep


def test_refused_key_stops_everything_with_a_clear_error(tmdb: FakeTmdb) -> None:
    tmdb.add_movie(6, "/six.jpg")
    with (
        _client(tmdb, key="wrong-key-777", workers=1) as client,
        pytest.raises(TmdbError) as raised,
    ):
        client.posters([6, 7, 8])
    message = str(raised.value)
    assert raised.value.status == 401
    assert "HTTP 401" in message and ENV_TMDB_API_KEY in message and "Invalid API key" in message
    assert "wrong-key-777" not in message
    assert len(tmdb.movie_requests()) == 1  # the first refusal stopped the rest


def test_bearer_token_goes_in_the_authorization_header() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJhdWQiOiJ4In0.c2lnbmF0dXJl"
    with FakeTmdb(token) as fake:
        fake.add_movie(9, "/nine.jpg")
        with _client(fake, key=token) as client:
            assert client.poster(9).status is PosterStatus.FOUND
        (request,) = fake.requests_for(9)
    assert "api_key" not in request.path
    assert request.headers["Authorization"] == f"Bearer {token}"


def test_rate_limit_is_respected(tmdb: FakeTmdb) -> None:
    ids = list(range(100, 130))
    for i in ids:
        tmdb.add_movie(i, f"/{i}.jpg")
    rate, burst = 20.0, 5
    with _client(tmdb, requests_per_second=rate, burst=burst, workers=4) as client:
        started = time.monotonic()
        lookups = client.posters(ids)
        elapsed = time.monotonic() - started
    assert all(lk.status is PosterStatus.FOUND for lk in lookups)
    floor = (len(ids) - burst) / rate  # 1.25 s
    assert elapsed >= floor * 0.98
    arrivals = sorted(r.at for r in tmdb.movie_requests())
    assert arrivals[-1] - arrivals[0] >= floor * 0.95
    # no second of the run saw more than rate + burst (+ the 4 that may be in flight) requests
    busiest = max(sum(1 for a in arrivals if t <= a < t + 1.0) for t in arrivals)
    assert busiest <= rate + burst + 4


def test_token_bucket_arithmetic() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(10.0, burst=2, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        bucket.acquire()
    assert sleeps == pytest.approx([0.1, 0.1])  # 2 from the burst, then one per 1/rate
    bucket.hold(3.0)
    bucket.acquire()
    assert now[0] == pytest.approx(3.2 + 0.1)  # waited out the hold, then for a fresh token
    with pytest.raises(ValueError, match="per second"):
        TokenBucket(0)


def test_key_never_leaks_into_errors_or_logs(
    tmdb: FakeTmdb, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tmdb.add_movie(10, "/ten.jpg")
    with _client(tmdb) as client:
        assert client.poster(10).status is PosterStatus.FOUND
    assert '"GET /3/movie/10?api_key=***' in caplog.text  # urllib3's request line, redacted
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = TmdbClient(KEY, api_base_url=f"http://127.0.0.1:{port}/3", retries=1,
                        backoff_s=0.01, timeout_s=0.5)  # fmt: skip
    with client:
        lookup = client.poster(11)
    assert lookup.status is PosterStatus.FAILED
    assert "ConnectionError" in (lookup.error or "")
    assert KEY not in (lookup.error or "")
    assert "connectionpool" in caplog.text and KEY not in caplog.text


# -- the warehouse cache


def test_refresh_is_incremental_and_keeps_what_it_had(tmp_path: Path, tmdb: FakeTmdb) -> None:
    db = _warehouse(tmp_path / "w.duckdb", {1: 11, 2: 12, 3: 13, 4: None, 5: 11})
    tmdb.add_movie(11, "/eleven.jpg")
    tmdb.add_movie(12, None)
    tmdb.queue(13, Answer.status(503, sticky=True))
    tmdb.add_movie(13, "/thirteen.jpg")
    with _client(tmdb) as client, connect(db) as conn:

        def refresh() -> posters.PosterRefresh:
            return refresh_posters(conn, client, image_base_url=tmdb.image_base_url, limit=100,
                                   batch_size=2)  # fmt: skip

        first = refresh()
        assert (first.fetched, first.found, first.missing, first.failed) == (3, 1, 1, 1)
        assert first.cached_total == 3 and first.error is None
        assert {r.tmdb_id for r in tmdb.movie_requests()} == {11, 12, 13}  # one per TMDb id
        tmdb.clear_log()
        tmdb.clear_answers(13)
        second = refresh()  # only the failed one is due
        assert (second.fetched, second.found) == (1, 1)
        assert [r.tmdb_id for r in tmdb.movie_requests()] == [13]
        tmdb.clear_log()
        assert refresh().fetched == 0
        assert tmdb.movie_requests() == []
        conn.execute("UPDATE tmdb_posters SET fetched_at = fetched_at - INTERVAL 31 DAY "
                     "WHERE tmdb_id = 11")  # fmt: skip
        tmdb.queue(11, Answer.status(500, sticky=True))  # the refresh fails: poster kept
        aged = refresh()
        assert (aged.fetched, aged.failed) == (1, 1)
        urls = catalog_poster_urls(conn)
    assert _rows(db)[11] == ("failed", "/eleven.jpg", f"{tmdb.image_base_url}/eleven.jpg", 500)
    assert urls["item_id"].tolist() == [1, 3, 5]  # movies 1 and 5 share TMDb id 11
    assert urls["poster_url"].tolist() == [
        f"{tmdb.image_base_url}/eleven.jpg",
        f"{tmdb.image_base_url}/thirteen.jpg",
        f"{tmdb.image_base_url}/eleven.jpg",
    ]
    assert str(urls["item_id"].dtype) == "int64"
    poster = requests.get(urls["poster_url"][0], timeout=5)
    assert poster.headers["Content-Type"] == "image/png" and poster.content == POSTER_PNG


def test_titles_to_fetch_order_and_limit(tmp_path: Path, tmdb: FakeTmdb) -> None:
    db = _warehouse(tmp_path / "w.duckdb", {i: 100 + i for i in range(1, 7)})
    with connect(db) as conn:
        with pytest.raises(ValueError, match="no catalog table"), connect(":memory:") as empty:
            posters.titles_to_fetch(empty, posters.DEFAULT_REFRESH_AFTER, 10)
        assert posters.titles_to_fetch(conn, posters.DEFAULT_REFRESH_AFTER, 4) == [101, 102, 103,
                                                                                  104]  # fmt: skip
        posters.store_lookups(conn, [PosterLookup(101, PosterStatus.FAILED, http_status=500),
                                     PosterLookup(102, PosterStatus.FOUND, "/b.jpg", 200)],
                              tmdb.image_base_url)  # fmt: skip
        # never fetched first, then the failed one; the fresh one is not due
        assert posters.titles_to_fetch(conn, posters.DEFAULT_REFRESH_AFTER, 10) == [
            103, 104, 105, 106, 101]  # fmt: skip


def test_interrupted_run_keeps_the_batches_it_committed(tmp_path: Path, tmdb: FakeTmdb) -> None:
    db = _warehouse(tmp_path / "w.duckdb", {i: 200 + i for i in range(1, 7)})
    for i in range(1, 7):
        tmdb.add_movie(200 + i, f"/{i}.jpg")

    class Interrupted:
        def __init__(self, client: TmdbClient) -> None:
            self.client, self.batches = client, 0

        def posters(self, ids: Sequence[int]) -> list[PosterLookup]:
            self.batches += 1
            if self.batches == 3:
                raise KeyboardInterrupt
            return self.client.posters(ids)

    with _client(tmdb) as client, connect(db) as conn, pytest.raises(KeyboardInterrupt):
        refresh_posters(conn, Interrupted(client), image_base_url="http://img", limit=10,
                        batch_size=2)  # fmt: skip
    assert sorted(_rows(db)) == [201, 202, 203, 204]


def test_catalog_poster_urls_without_tables_is_an_empty_frame(tmp_path: Path) -> None:
    with connect(tmp_path / "empty.duckdb") as conn:
        frame = catalog_poster_urls(conn)
    assert frame.empty and list(frame.columns) == ["item_id", "poster_url"]
    assert str(frame["item_id"].dtype) == "int64"


# -- the asset, in real materialize runs


def _meta(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_asset_is_off_without_the_key(
    make_platform, tmdb: FakeTmdb, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_TMDB_API_KEY, raising=False)
    default = make_platform(NO_MIRROR)
    assert default.resource("tmdb").enabled is False  # the default resources load without it
    tmdb.add_movie(1, "/one.jpg")
    resource = TmdbResource.from_env(api_base_url=tmdb.api_base_url)
    platform = make_platform(NO_MIRROR, resource_overrides={"tmdb": resource})
    _warehouse(platform.settings.warehouse_path, {1: 1})
    result = platform.materialize(POSTERS)
    assert result.success
    meta = _meta(result)
    assert meta["enabled"] is False and meta["fetched"] == 0 and meta["cached_total"] == 0
    assert tmdb.requests == []


def _resource(tmdb: FakeTmdb) -> TmdbResource:
    return TmdbResource.from_env(api_base_url=tmdb.api_base_url,
                                 image_base_url=tmdb.image_base_url, requests_per_second=200.0,
                                 timeout_s=2.0, retries=1, backoff_s=0.01)  # fmt: skip


def test_refused_key_fails_a_non_blocking_check_only(
    make_platform, tmdb: FakeTmdb, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_TMDB_API_KEY, "not-the-key-4242")
    platform = make_platform(NO_MIRROR, resource_overrides={"tmdb": _resource(tmdb)})
    _warehouse(platform.settings.warehouse_path, {1: 1, 2: 2})
    result = platform.materialize(POSTERS)
    assert result.success  # downstream assets still run
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "tmdb_requests_accepted" and not check.passed
    assert "HTTP 401" in (check.description or "") and ENV_TMDB_API_KEY in check.description
    assert _meta(result)["error"] == check.description
    assert "not-the-key-4242" not in str(result.all_events)


def test_pipeline_materializes_posters_from_the_fake_tmdb(
    sample_mirror, make_platform, tmdb: FakeTmdb, monkeypatch: pytest.MonkeyPatch
) -> None:
    """raw -> warehouse -> catalog -> tmdb_posters from the sample mirror, then an incremental
    second run that asks TMDb nothing."""
    monkeypatch.setenv(ENV_TMDB_API_KEY, KEY)
    tmdb.every_id_a_movie = True
    platform = make_platform(sample_mirror.root, resource_overrides={"tmdb": _resource(tmdb)})
    selection = dg.AssetSelection.groups("raw", "warehouse") | dg.AssetSelection.assets(
        "catalog", "tmdb_posters"
    )
    instance = dg.DagsterInstance.ephemeral()
    result = platform.materialize(selection, instance=instance)
    assert result.success
    with duckdb.connect(str(platform.settings.warehouse_path), read_only=True) as conn:
        (expected,) = conn.execute(
            "SELECT count(DISTINCT l.tmdb_id) FROM catalog c JOIN movie_links l USING (movie_id)"
        ).fetchall()[0]
        urls = catalog_poster_urls(conn)
    meta = _meta_of(result, "tmdb_posters")
    assert meta["enabled"] is True and meta["found"] == meta["fetched"] == expected > 0
    assert meta["cached_total"] == expected and meta["failed"] == 0
    assert len(urls) >= expected and urls["poster_url"].str.startswith(tmdb.image_base_url).all()
    assert KEY not in str(result.all_events)
    tmdb.clear_log()
    again = platform.materialize(POSTERS, instance=instance)
    assert again.success and _meta(again)["fetched"] == 0 and tmdb.requests == []


def _meta_of(result: dg.ExecuteInProcessResult, key: str) -> dict[str, object]:
    events = result.get_asset_materialization_events()
    (event,) = [e for e in events if e.asset_key == dg.AssetKey(key)]
    return {k: v.value for k, v in event.materialization.metadata.items()}
