"""Source probes and the dump sensors, against the loopback HTTP mirror and file:// sources."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from orchestration.jobs import full_refresh_job
from orchestration.policies import network_retry_policy
from orchestration.resources import RawSourcesResource
from orchestration.sensors import (
    IMDB_INTERVAL_S,
    MOVIELENS_INTERVAL_S,
    TAG_DUMP_VERSION,
    TAG_SOURCE,
    daily_refresh_schedule,
    dump_cursor,
    imdb_dump_sensor,
    load_cursor,
    movielens_release_sensor,
    schedules,
    sensor_interval_s,
    sensors,
)
from recommender_lib.sources.download import fetch_versioned
from recommender_lib.sources.formats import (
    IMDB_AKAS_FILE,
    IMDB_BASICS_FILE,
    IMDB_RATINGS_FILE,
    MOVIELENS_DEFAULT_ZIP,
)
from recommender_lib.sources.integrity import IntegrityError
from recommender_lib.sources.probe import (
    ProbeState,
    SourceProbeError,
    md5_url_for,
    probe_source,
)
from recommender_lib.sources.retry import DownloadError, is_permanent_download_error
from tests.support.http_mirror import Fault, HttpMirror
from tests.support.mirror_edit import copy_mirror, edit_gzip_lines
from tests.support.platform import MirrorUrls, build_platform

BASICS = f"imdb/{IMDB_BASICS_FILE}"
RATINGS = f"imdb/{IMDB_RATINGS_FILE}"
AKAS = f"imdb/{IMDB_AKAS_FILE}"
ML_ZIP = f"movielens/{MOVIELENS_DEFAULT_ZIP}"
ML_MD5 = f"{ML_ZIP}.md5"
T1 = datetime(2026, 11, 21, 10, 15, tzinfo=UTC)
T2 = datetime(2026, 11, 22, 10, 15, tzinfo=UTC)
V1, V2 = "20261121T101500Z", "20261122T101500Z"
SensorOutput = dg.SensorResult | dg.SkipReason


@pytest.fixture
def www(sample_mirror, tmp_path: Path) -> Path:
    """A private copy of the sample mirror, every file last modified at T1."""
    root = copy_mirror(sample_mirror.root, tmp_path / "www")
    for path in root.rglob("*"):
        if path.is_file():
            set_mtime(path, T1)
    return root


@pytest.fixture
def mirror(www: Path) -> Iterator[HttpMirror]:
    with HttpMirror(www) as served:
        yield served


def raw_sources(tmp_path: Path, imdb_base_url: str, movielens_url: str) -> RawSourcesResource:
    """The platform's `raw_sources` resource for these URLs (raw store under `tmp_path`)."""
    return build_platform(tmp_path, MirrorUrls(imdb_base_url, movielens_url)).resource(
        "raw_sources"
    )


def http_sources(tmp_path: Path, mirror: HttpMirror) -> RawSourcesResource:
    return build_platform(tmp_path, mirror).resource("raw_sources")


def evaluate(sensor: dg.SensorDefinition, raw: RawSourcesResource, cursor: str | None = None):
    """One tick, as the daemon would run it after a restart: a fresh context and the cursor."""
    context = dg.build_sensor_context(cursor=cursor, resources={"raw_sources": raw})
    return sensor(context)


def run_requests(output: SensorOutput) -> list[dg.RunRequest]:
    return list(output.run_requests or []) if isinstance(output, dg.SensorResult) else []


def skip_message(output: SensorOutput) -> str:
    if isinstance(output, dg.SkipReason):
        return output.skip_message or ""
    assert output.skip_reason is not None, "expected a skip"
    return output.skip_reason.skip_message or ""


def cursor_of(output: SensorOutput) -> str | None:
    return output.cursor if isinstance(output, dg.SensorResult) else None


def set_mtime(path: Path, when: datetime) -> None:
    os.utime(path, (when.timestamp(), when.timestamp()))


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- IMDb over HTTP


def test_first_tick_requests_one_run_then_unchanged_with_conditional_head(
    mirror: HttpMirror, tmp_path: Path
) -> None:
    raw = http_sources(tmp_path, mirror)
    first = evaluate(imdb_dump_sensor, raw)
    [request] = run_requests(first)
    version = f"title.basics={V1},title.ratings={V1},title.akas={V1}"
    assert request.run_key == version
    assert request.tags == {TAG_SOURCE: "imdb", TAG_DUMP_VERSION: version}
    assert request.job_name is None  # the sensor's own target: full_refresh
    assert not mirror.requests_for(BASICS, "GET"), "a probe never downloads the body"

    mirror.clear_log()
    second = evaluate(imdb_dump_sensor, raw, cursor_of(first))
    assert run_requests(second) == []
    assert skip_message(second).startswith("unchanged: ")
    for rel in (BASICS, RATINGS):
        [head] = mirror.requests_for(rel)
        assert head.method == "HEAD"
        assert head.headers.get("If-None-Match") and head.headers.get("If-Modified-Since")
        assert [r.status for r in mirror.responses_for(rel)] == [304]


def test_changed_dump_gives_exactly_one_run_keyed_by_the_new_version(
    mirror: HttpMirror, www: Path, tmp_path: Path
) -> None:
    raw = http_sources(tmp_path, mirror)
    cursor = cursor_of(evaluate(imdb_dump_sensor, raw))
    edit_gzip_lines(www / BASICS, lambda lines: lines[:-1])
    mirror.set_mtime(BASICS, T2)

    changed = evaluate(imdb_dump_sensor, raw, cursor)
    [request] = run_requests(changed)
    assert request.run_key == f"title.basics={V2},title.ratings={V1},title.akas={V1}"
    assert request.tags[TAG_DUMP_VERSION] == request.run_key
    assert [r.status for r in mirror.responses_for(BASICS)][-1] == 200

    again = evaluate(imdb_dump_sensor, raw, cursor_of(changed))
    assert run_requests(again) == []


def test_cursor_survives_a_restart(mirror: HttpMirror, tmp_path: Path) -> None:
    raw = http_sources(tmp_path, mirror)
    cursor = cursor_of(evaluate(imdb_dump_sensor, raw))
    assert cursor is not None
    states = load_cursor(cursor)
    assert set(states) == {f"{mirror.base_url}/{f}" for f in (BASICS, RATINGS, AKAS)}
    assert all(s.version == V1 and s.etag for s in states.values())
    assert load_cursor(dump_cursor(states)) == states

    # A new process: a fresh resource object and context, only the stored cursor string.
    restarted = http_sources(tmp_path, mirror)
    assert run_requests(evaluate(imdb_dump_sensor, restarted, json.loads(json.dumps(cursor)))) == []


def test_server_error_skips_with_the_reason_and_keeps_the_cursor(
    mirror: HttpMirror, tmp_path: Path
) -> None:
    raw = http_sources(tmp_path, mirror)
    cursor = cursor_of(evaluate(imdb_dump_sensor, raw))
    mirror.inject(RATINGS, Fault.status(500))

    failed = evaluate(imdb_dump_sensor, raw, cursor)
    assert isinstance(failed, dg.SkipReason)  # no cursor update, no run
    message = skip_message(failed)
    assert mirror.url_for(RATINGS) in message and "HTTP 500" in message

    assert run_requests(evaluate(imdb_dump_sensor, raw, cursor)) == []  # recovered, same cursor


def test_connection_refused_skips_without_raising(tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{closed_port()}/imdb"
    failed = evaluate(imdb_dump_sensor, raw_sources(tmp_path, base, f"{base}/x.zip"))
    assert isinstance(failed, dg.SkipReason)
    assert f"{base}/{IMDB_BASICS_FILE}" in skip_message(failed)
    assert "refused" in skip_message(failed).lower()


def test_missing_file_skips(mirror: HttpMirror, tmp_path: Path) -> None:
    mirror.remove(RATINGS)
    failed = evaluate(imdb_dump_sensor, http_sources(tmp_path, mirror))
    assert isinstance(failed, dg.SkipReason)
    assert "HTTP 404" in skip_message(failed)


def test_unreadable_cursor_counts_as_none(mirror: HttpMirror, tmp_path: Path) -> None:
    assert load_cursor("not json") == {}
    assert load_cursor(json.dumps({"format": 99, "sources": {}})) == {}
    [request] = run_requests(evaluate(imdb_dump_sensor, http_sources(tmp_path, mirror), "{"))
    assert V1 in (request.run_key or "")


def test_raw_store_version_counts_as_seen_on_the_first_tick(
    mirror: HttpMirror, tmp_path: Path
) -> None:
    """After `make platform`, a daemon that starts with no cursor does not retrain again."""
    raw = http_sources(tmp_path, mirror)
    for name in (IMDB_BASICS_FILE, IMDB_RATINGS_FILE, IMDB_AKAS_FILE):
        fetched = fetch_versioned(f"{raw.imdb_base_url}/{name}", raw.imdb_store(name))
        assert fetched.version == V1  # the probe derives versions exactly like the download
    fetch_versioned(raw.movielens_url, raw.movielens_store, md5_url=md5_url_for(raw.movielens_url))
    mirror.clear_log()

    imdb = evaluate(imdb_dump_sensor, raw)
    assert run_requests(imdb) == [] and skip_message(imdb).startswith("unchanged")
    assert [r.status for r in mirror.responses_for(BASICS)] == [304]
    movielens = evaluate(movielens_release_sensor, raw)
    assert run_requests(movielens) == [] and cursor_of(movielens) is not None


# --------------------------------------------------------------------------- MovieLens


def test_movielens_md5_is_the_version(mirror: HttpMirror, www: Path, tmp_path: Path) -> None:
    raw = http_sources(tmp_path, mirror)
    first = evaluate(movielens_release_sensor, raw)
    [request] = run_requests(first)
    assert request.run_key == md5_of(www / ML_ZIP)
    assert request.tags == {TAG_SOURCE: "movielens", TAG_DUMP_VERSION: request.run_key}
    assert not mirror.requests_for(ML_ZIP), "the checksum file alone tells the version"

    mirror.clear_log()
    second = evaluate(movielens_release_sensor, raw, cursor_of(first))
    assert run_requests(second) == []
    [get] = mirror.requests_for(ML_MD5)
    assert get.method == "GET" and get.headers.get("If-None-Match")
    assert [r.status for r in mirror.responses_for(ML_MD5)] == [304]

    new_zip = (www / ML_ZIP).read_bytes() + b"\0"  # a new release: zip and .md5 both change
    mirror.put(ML_ZIP, new_zip, mtime=T2)
    digest = hashlib.md5(new_zip).hexdigest()
    mirror.put(ML_MD5, f"MD5 ({MOVIELENS_DEFAULT_ZIP}) = {digest}\n".encode(), mtime=T2)
    [request] = run_requests(evaluate(movielens_release_sensor, raw, cursor_of(second)))
    assert request.run_key == digest


def test_movielens_without_md5_uses_the_zip_validators(mirror: HttpMirror, tmp_path: Path) -> None:
    mirror.remove(ML_MD5)
    raw = http_sources(tmp_path, mirror)
    first = evaluate(movielens_release_sensor, raw)
    [request] = run_requests(first)
    assert request.run_key == V1
    assert [r.method for r in mirror.requests_for(ML_ZIP)] == ["HEAD"]

    second = evaluate(movielens_release_sensor, raw, cursor_of(first))
    assert run_requests(second) == []
    assert [r.status for r in mirror.responses_for(ML_ZIP)] == [200, 304]


def test_md5_server_error_skips(mirror: HttpMirror, tmp_path: Path) -> None:
    mirror.inject(ML_MD5, Fault.status(503))
    failed = evaluate(movielens_release_sensor, http_sources(tmp_path, mirror))
    assert isinstance(failed, dg.SkipReason)
    assert md5_url_for(mirror.url_for(ML_ZIP)) in skip_message(failed)
    assert "503" in skip_message(failed)


# --------------------------------------------------------------------------- file:// sources


def test_file_sources(www: Path, tmp_path: Path) -> None:
    raw = raw_sources(tmp_path, (www / "imdb").as_uri(), (www / ML_ZIP).as_uri())
    first = evaluate(imdb_dump_sensor, raw)
    [request] = run_requests(first)
    assert request.run_key == f"title.basics={V1},title.ratings={V1},title.akas={V1}"
    assert run_requests(evaluate(imdb_dump_sensor, raw, cursor_of(first))) == []

    edit_gzip_lines(www / BASICS, lambda lines: lines[:-1])
    set_mtime(www / BASICS, T2)
    [request] = run_requests(evaluate(imdb_dump_sensor, raw, cursor_of(first)))
    assert request.run_key == f"title.basics={V2},title.ratings={V1},title.akas={V1}"

    [request] = run_requests(evaluate(movielens_release_sensor, raw))
    assert request.run_key == md5_of(www / ML_ZIP)
    (www / ML_MD5).unlink()
    [request] = run_requests(evaluate(movielens_release_sensor, raw))
    assert request.run_key == V1


def test_missing_file_source_skips(tmp_path: Path) -> None:
    missing = (tmp_path / "nowhere").as_uri()
    failed = evaluate(imdb_dump_sensor, raw_sources(tmp_path, missing, f"{missing}/x.zip"))
    assert isinstance(failed, dg.SkipReason) and "no such file" in skip_message(failed)


# --------------------------------------------------------------------------- probe details


def test_head_not_allowed_falls_back_to_a_ranged_conditional_get(mirror: HttpMirror) -> None:
    url = mirror.url_for(BASICS)
    mirror.inject(BASICS, Fault.status(405))
    first = probe_source(url, previous=None, timeout_s=5)
    assert first.changed and first.version == V1 and first.how == "GET 206"
    ranged = mirror.requests_for(BASICS, "GET")[-1]
    assert ranged.headers.get("Range") == "bytes=0-0"
    assert [r.body_bytes for r in mirror.responses_for(BASICS)] == [0, 1]

    mirror.inject(BASICS, Fault.status(501))
    second = probe_source(url, previous=first.state, timeout_s=5)
    assert not second.changed and second.how == "GET 304"
    assert mirror.requests_for(BASICS, "GET")[-1].headers.get("If-None-Match")


def test_probe_timeout_is_a_clear_error(mirror: HttpMirror) -> None:
    url = mirror.url_for(RATINGS)
    mirror.inject(RATINGS, Fault.delay(1.0))
    with pytest.raises(SourceProbeError, match="timed out") as caught:
        probe_source(url, previous=None, timeout_s=0.2)
    assert caught.value.url == url


def test_probe_result_is_json_and_ignores_state_of_another_url(mirror: HttpMirror) -> None:
    url = mirror.url_for(BASICS)
    result = probe_source(url, previous=None)
    round_trip = json.loads(json.dumps(result.to_json()))
    assert ProbeState.from_json(round_trip["state"]) == result.state
    other = ProbeState(url="http://127.0.0.1:1/else", version="x", checked_url="x", etag='"e"')
    again = probe_source(url, previous=other)
    assert again.changed and not mirror.requests_for(BASICS)[-1].headers.get("If-None-Match")
    with pytest.raises(ValueError):
        ProbeState.from_json({"url": url})


class _NoValidatorsHandler(BaseHTTPRequestHandler):
    """Serves one body with neither ETag nor Last-Modified."""

    body = b"tconst\taverageRating\tnumVotes\n" * 50

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def _answer(self, *, with_body: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        if with_body:
            self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def test_no_validators_versions_by_content_like_the_download(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoValidatorsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{IMDB_RATINGS_FILE}"
        first = probe_source(url, previous=None)
        assert (
            first.version == f"sha256-{hashlib.sha256(_NoValidatorsHandler.body).hexdigest()[:16]}"
        )
        assert fetch_versioned(url, tmp_path / "store").version == first.version
        assert not probe_source(url, previous=first.state).changed
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_unsupported_scheme() -> None:
    with pytest.raises(SourceProbeError, match="only http"):
        probe_source("ftp://127.0.0.1/x", previous=None)


# --------------------------------------------------------------------------- definitions


def test_sensor_interval_env() -> None:
    assert sensor_interval_s(3600, {}) == 3600
    assert sensor_interval_s(3600, {"CINE_SENSOR_INTERVAL_S": "30"}) == 30
    assert sensor_interval_s(3600, {"CINE_SENSOR_INTERVAL_S": "soon"}) == 3600
    assert sensor_interval_s(3600, {"CINE_SENSOR_INTERVAL_S": "-5"}) == 3600


def test_sensors_schedule_and_policy_definitions() -> None:
    assert {s.name for s in sensors} == {"imdb_dump_sensor", "movielens_release_sensor"}
    for sensor in sensors:
        assert sensor.job_name == full_refresh_job.name
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        assert sensor.required_resource_keys == {"raw_sources"}
    assert imdb_dump_sensor.minimum_interval_seconds == sensor_interval_s(IMDB_INTERVAL_S)
    assert movielens_release_sensor.minimum_interval_seconds == sensor_interval_s(
        MOVIELENS_INTERVAL_S
    )
    assert schedules == [daily_refresh_schedule]
    assert daily_refresh_schedule.cron_schedule == "0 4 * * *"
    assert daily_refresh_schedule.job_name == full_refresh_job.name
    assert daily_refresh_schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert network_retry_policy.max_retries == 3
    assert network_retry_policy.backoff == dg.Backoff.EXPONENTIAL
    assert network_retry_policy.jitter == dg.Jitter.PLUS_MINUS


def test_permanent_download_errors_skip_the_retry_policy() -> None:
    url = "http://127.0.0.1:1/x"
    assert is_permanent_download_error(IntegrityError("MD5 mismatch"))
    assert is_permanent_download_error(DownloadError("gone", url=url, status=404))
    assert not is_permanent_download_error(DownloadError("slow down", url=url, status=429))
    assert not is_permanent_download_error(DownloadError("down", url=url, status=503))
    assert not is_permanent_download_error(DownloadError("refused", url=url))
    assert not is_permanent_download_error(RuntimeError("bug"))


def test_sensors_load_with_the_code_location() -> None:
    """The code location's sensors and schedule resolve against full_refresh."""
    from orchestration.definitions import defs

    repo = defs.get_repository_def()
    assert repo.get_sensor_def("imdb_dump_sensor").job_name == "full_refresh"
    assert repo.has_schedule_def("daily_refresh_schedule")
