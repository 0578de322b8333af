"""Versioned downloads against a loopback HTTP mirror and file:// URLs."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import random
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from recommender_lib.sources import formats, raw_store, transfer
from recommender_lib.sources.download import fetch_versioned
from recommender_lib.sources.integrity import IntegrityError, verify_gzip_tsv, verify_movielens_zip
from recommender_lib.sources.raw_store import FetchedFile, current_version
from recommender_lib.sources.retry import DownloadError
from recommender_lib.sources.transfer import DownloadProgress

try:
    from tests.support.http_mirror import Fault, HttpMirror
except ModuleNotFoundError:  # `pytest` without the project root on sys.path: tests/ is on it
    from support.http_mirror import Fault, HttpMirror  # type: ignore[no-redef]

BASICS = f"imdb/{formats.IMDB_BASICS_FILE}"
ML_ZIP = f"movielens/{formats.MOVIELENS_DEFAULT_ZIP}"
T1 = datetime(2026, 11, 21, 10, 15, tzinfo=UTC)
T2 = datetime(2026, 11, 22, 10, 15, tzinfo=UTC)
Fetch = Callable[..., FetchedFile]
verify_basics = functools.partial(verify_gzip_tsv, expected_columns=formats.IMDB_BASICS_COLUMNS)


def basics_gz(n_rows: int = 40, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    lines = ["\t".join(formats.IMDB_BASICS_COLUMNS)]
    for i in range(n_rows):
        title = rng.choice(["Carmencita", '"Giliap"', "Le clown et ses chiens", "Pauvre Pierrot"])
        year = rng.choice(["1894", "1975", "2008", r"\N"])
        genres = ",".join(rng.sample(formats.IMDB_GENRES, k=rng.randint(1, 3)))
        lines.append(f"tt{i + 1:07d}\tmovie\t{title}\t{title}\t0\t{year}\t\\N\t{i % 180}\t{genres}")
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)


def movielens_zip(drop: str | None = None) -> bytes:
    rows = {
        "ratings.csv": "1,1,4.0,964982703\r\n",
        "movies.csv": (
            '1,Toy Story (1995),Adventure|Animation\r\n2,"American President, The",IMAX\r\n'
        ),
        "links.csv": "1,0114709,862\r\n2,0112346,\r\n",
        "tags.csv": "2,60756,funny,1445714994\r\n",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, body in rows.items():
            if name != drop:
                header = ",".join(formats.MOVIELENS_FILES[name])
                zf.writestr(f"ml-latest-small/{name}", f"{header}\r\n{body}")
    return buf.getvalue()


def md5_line(data: bytes, name: str = formats.MOVIELENS_DEFAULT_ZIP) -> bytes:
    return f"MD5 ({name}) = {hashlib.md5(data).hexdigest()}\n".encode()


def assert_clean(store: Path) -> None:
    """Only version folders, CURRENT and the lock file: no temp leftovers."""
    leftovers = [p.name for p in store.iterdir() if p.name.startswith(".") and p.name != ".lock"]
    assert leftovers == []


def version_dirs(store: Path) -> list[str]:
    return sorted(p.name for p in store.iterdir() if p.is_dir() and not p.name.startswith("."))


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as sess:
        sess.trust_env = False  # never route loopback requests through a proxy from the env
        yield sess


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[HttpMirror]:
    with HttpMirror(tmp_path / "www") as srv:
        yield srv
    assert srv.server_errors == []


@pytest.fixture
def fetch(session: requests.Session, tmp_path: Path) -> Fetch:
    """fetch_versioned with fast test defaults, into tmp_path/store unless told otherwise."""

    def _fetch(url: str, store: Path | None = None, **kwargs: object) -> FetchedFile:
        kwargs = {"backoff_s": 0.01, "timeout_s": 5.0, "session": session, **kwargs}
        return fetch_versioned(url, store or tmp_path / "store", **kwargs)  # type: ignore[arg-type]

    return _fetch


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


def good_first_version(mirror: HttpMirror, fetch: Fetch, data: bytes | None = None) -> FetchedFile:
    mirror.put(BASICS, data or basics_gz(), mtime=T1)
    first = fetch(mirror.url_for(BASICS), verify=verify_basics)
    mirror.put(BASICS, basics_gz(seed=1), mtime=T2)  # the next dump
    mirror.clear_log()
    return first


def assert_still_first(store: Path, first: FetchedFile) -> None:
    assert (store / "CURRENT").read_text().strip() == first.version
    assert version_dirs(store) == [first.version]
    assert current_version(store) == replace(first, changed=False)
    assert first.path.read_bytes() and hashlib.sha256(first.path.read_bytes()).hexdigest() == (
        first.sha256
    )
    assert_clean(store)


# --------------------------------------------------------------------------- happy paths


def test_happy_path(mirror: HttpMirror, fetch: Fetch, store: Path) -> None:
    data = basics_gz()
    mirror.put(BASICS, data, mtime=T1)
    got = fetch(mirror.url_for(BASICS), verify=verify_basics)

    assert got.changed is True
    assert got.version == "20261121T101500Z"
    assert got.path == store / got.version / formats.IMDB_BASICS_FILE
    assert got.path.read_bytes() == data
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    assert got.size_bytes == len(data)
    assert got.etag == f'"{got.sha256[:16]}"'
    assert got.last_modified == "Sat, 21 Nov 2026 10:15:00 GMT"
    assert datetime.fromisoformat(got.fetched_at).tzinfo is not None
    assert (store / "CURRENT").read_text().strip() == got.version
    source = json.loads((store / got.version / "source.json").read_text())
    expected = {**got.to_metadata(), "path": formats.IMDB_BASICS_FILE}
    del expected["changed"]
    assert source == expected
    assert json.loads(json.dumps(got.to_metadata()))["sha256"] == got.sha256
    assert current_version(store) == replace(got, changed=False)
    assert_clean(store)


def test_unchanged_answers_304_without_a_download(
    mirror: HttpMirror, fetch: Fetch, store: Path
) -> None:
    mirror.put(BASICS, basics_gz(), mtime=T1)
    first = fetch(mirror.url_for(BASICS), verify=verify_basics)
    mirror.clear_log()

    again = fetch(mirror.url_for(BASICS), verify=verify_basics)

    assert again.changed is False
    assert again == replace(first, changed=False)
    [request] = mirror.requests_for(BASICS)
    assert request.headers["If-None-Match"] == first.etag
    assert request.headers["If-Modified-Since"] == first.last_modified
    assert [r.status for r in mirror.responses_for(BASICS)] == [304]
    assert version_dirs(store) == [first.version]
    assert_clean(store)


def test_new_dump_makes_a_new_version_and_keeps_the_old(
    mirror: HttpMirror,
    fetch: Fetch,
    store: Path,
) -> None:
    first = good_first_version(mirror, fetch)
    second = fetch(mirror.url_for(BASICS), verify=verify_basics)

    assert second.changed is True
    assert second.version == "20261122T101500Z"
    assert version_dirs(store) == [first.version, second.version]
    assert first.path.exists()
    assert current_version(store) == replace(second, changed=False)
    assert [r.status for r in mirror.responses_for(BASICS)] == [200]


def test_same_bytes_from_a_new_url_are_unchanged(
    mirror: HttpMirror,
    fetch: Fetch,
    store: Path,
) -> None:
    data = basics_gz()
    first = good_first_version(mirror, fetch, data)
    moved = f"moved/{formats.IMDB_BASICS_FILE}"
    mirror.put(moved, data, mtime=T2)

    again = fetch(mirror.url_for(moved))
    assert "If-None-Match" not in mirror.requests_for(moved)[0].headers  # other URL: no validators
    assert again.changed is False
    assert again.version == first.version
    assert again.url == mirror.url_for(moved)
    assert version_dirs(store) == [first.version]
    # The refreshed source record makes the next check a 304.
    fetch(mirror.url_for(moved))
    assert [r.status for r in mirror.responses_for(moved)] == [200, 304]


def test_touched_file_with_same_bytes_is_unchanged(
    tmp_path: Path, fetch: Fetch, store: Path
) -> None:
    src = tmp_path / formats.IMDB_BASICS_FILE
    src.write_bytes(basics_gz())
    first = fetch(src.as_uri())
    os.utime(src, (T2.timestamp(), T2.timestamp()))
    calls: list[DownloadProgress] = []

    again = fetch(src.as_uri(), progress=calls.append)
    assert again.changed is False and again.version == first.version
    assert calls  # it had to read the file to find out
    assert version_dirs(store) == [first.version]
    calls.clear()
    assert fetch(src.as_uri(), progress=calls.append).changed is False
    assert calls == []  # the new mtime was remembered


def test_retention_keeps_the_newest(mirror: HttpMirror, fetch: Fetch, store: Path) -> None:
    names = []
    for day in range(1, 6):
        mirror.put(BASICS, basics_gz(seed=day), mtime=datetime(2026, 11, day, tzinfo=UTC))
        names.append(fetch(mirror.url_for(BASICS), retention=3).version)
    assert version_dirs(store) == names[-3:]
    assert current_version(store).version == names[-1]  # type: ignore[union-attr]
    assert_clean(store)


def test_retention_never_deletes_the_current_version(
    mirror: HttpMirror,
    fetch: Fetch,
    store: Path,
) -> None:
    names = []
    for day in range(1, 4):
        mirror.put(BASICS, basics_gz(seed=day), mtime=datetime(2026, 11, day, tzinfo=UTC))
        names.append(fetch(mirror.url_for(BASICS)).version)
    (store / "CURRENT").write_text(names[0] + "\n")  # an operator rolled back
    raw_store.apply_retention(store, 1)
    assert version_dirs(store) == [names[0], names[2]]
    assert current_version(store).version == names[0]  # type: ignore[union-attr]


# --------------------------------------------------------------------------- transfer failures


def test_always_truncated_fails_after_retries(
    mirror: HttpMirror, fetch: Fetch, store: Path
) -> None:
    first = good_first_version(mirror, fetch)
    size = (mirror.root / BASICS).stat().st_size
    mirror.inject(BASICS, *[Fault.truncate(10)] * 3)

    with pytest.raises(DownloadError, match="failed after 3 attempts") as err:
        fetch(mirror.url_for(BASICS), verify=verify_basics, retries=2)

    assert mirror.url_for(BASICS) in str(err.value)
    assert str(size) in str(err.value)  # names the expected byte count
    assert len(mirror.requests_for(BASICS)) == 3
    assert_still_first(store, first)


@pytest.mark.parametrize("ranges", [True, False])
def test_truncated_once_then_ok(tmp_path: Path, fetch: Fetch, store: Path, ranges: bool) -> None:
    data = basics_gz(n_rows=2000)
    with HttpMirror(tmp_path / "www", ranges=ranges) as srv:
        srv.put(BASICS, data, mtime=T1)
        srv.inject(BASICS, Fault.truncate(1000))
        got = fetch(srv.url_for(BASICS), verify=verify_basics)
        first, second = srv.requests_for(BASICS)

    assert got.path.read_bytes() == data
    assert got.changed is True
    assert "Range" not in first.headers
    if ranges:  # resumed where the broken body stopped
        assert second.headers["Range"] == "bytes=1000-"
        assert second.headers["If-Range"] == got.etag
    else:
        assert "Range" not in second.headers
    assert_clean(store)


def test_resume_restarts_when_the_file_changed(
    mirror: HttpMirror, fetch: Fetch, store: Path
) -> None:
    mirror.put(BASICS, basics_gz(n_rows=2000), mtime=T1)
    mirror.inject(BASICS, Fault.truncate(1000))
    # Between the attempts a new dump lands: If-Range no longer matches, so a full 200 comes.
    mirror.inject(BASICS, Fault.status(503))
    newer = basics_gz(n_rows=2000, seed=7)

    original = mirror._next_fault

    def swap_then_fault(rel: str) -> Fault | None:
        fault = original(rel)
        if fault is not None and fault.kind == "status":
            mirror.put(BASICS, newer, mtime=T2)
        return fault

    mirror._next_fault = swap_then_fault  # type: ignore[method-assign]
    got = fetch(mirror.url_for(BASICS), verify=verify_basics)
    assert got.path.read_bytes() == newer
    assert got.version == "20261122T101500Z"
    assert [r.status for r in mirror.responses_for(BASICS)] == [200, 503, 200]


def test_missing_content_length_truncation_fails_the_gzip_check(
    mirror: HttpMirror,
    fetch: Fetch,
    store: Path,
) -> None:
    first = good_first_version(mirror, fetch)
    mirror.inject(BASICS, Fault.no_content_length_truncate(200))
    with pytest.raises(IntegrityError, match="truncated gzip stream"):
        fetch(mirror.url_for(BASICS), verify=verify_basics)
    assert len(mirror.requests_for(BASICS)) == 1  # a complete-looking body is not retried
    assert_still_first(store, first)


def test_corrupt_body_fails_the_gzip_check(mirror: HttpMirror, fetch: Fetch, store: Path) -> None:
    first = good_first_version(mirror, fetch)
    mirror.inject(BASICS, Fault.corrupt())
    with pytest.raises(IntegrityError, match="gzip"):
        fetch(mirror.url_for(BASICS), verify=verify_basics)
    assert len(mirror.requests_for(BASICS)) == 1
    assert_still_first(store, first)


@pytest.mark.parametrize(
    "fault",
    [Fault.status(500), Fault.status(429, {"Retry-After": "0"}), Fault.close()],
    ids=["500", "429", "close"],
)
def test_transient_failure_then_success(mirror: HttpMirror, fetch: Fetch, fault: Fault) -> None:
    mirror.put(BASICS, basics_gz(), mtime=T1)
    mirror.inject(BASICS, fault)
    got = fetch(mirror.url_for(BASICS), verify=verify_basics)
    assert got.changed is True
    assert len(mirror.requests_for(BASICS)) == 2


def test_timeout_is_retried(mirror: HttpMirror, fetch: Fetch) -> None:
    mirror.put(BASICS, basics_gz(), mtime=T1)
    mirror.inject(BASICS, Fault.delay(1.0))
    got = fetch(mirror.url_for(BASICS), timeout_s=0.2)
    assert got.changed is True
    assert len(mirror.requests_for(BASICS)) == 2


def test_persistent_5xx_fails_with_the_status(
    mirror: HttpMirror, fetch: Fetch, store: Path
) -> None:
    first = good_first_version(mirror, fetch)
    mirror.inject(BASICS, *[Fault.status(503)] * 2)
    with pytest.raises(DownloadError, match="HTTP 503") as err:
        fetch(mirror.url_for(BASICS), retries=1)
    assert err.value.status == 503
    assert len(mirror.requests_for(BASICS)) == 2
    assert_still_first(store, first)


def test_404_fails_at_once(mirror: HttpMirror, fetch: Fetch, store: Path) -> None:
    first = good_first_version(mirror, fetch)
    mirror.remove(BASICS)
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        fetch(mirror.url_for(BASICS))
    assert err.value.status == 404
    assert mirror.url_for(BASICS) in str(err.value)
    assert len(mirror.requests_for(BASICS)) == 1
    assert_still_first(store, first)


def test_schema_drift_is_rejected(mirror: HttpMirror, fetch: Fetch, store: Path) -> None:
    first = good_first_version(mirror, fetch)
    ratings = "\t".join(formats.IMDB_RATINGS_COLUMNS) + "\ntt0000001\t5.7\t2100\n"
    mirror.put(BASICS, gzip.compress(ratings.encode()), mtime=T2)
    with pytest.raises(IntegrityError, match="schema drift") as err:
        fetch(mirror.url_for(BASICS), verify=verify_basics)
    assert "'averageRating'" in str(err.value)
    assert "'primaryTitle'" in str(err.value)
    assert_still_first(store, first)


# --------------------------------------------------------------------------- zips and MD5


def fetch_zip(mirror: HttpMirror, fetch: Fetch, data: bytes, **kwargs: object) -> FetchedFile:
    mirror.put(ML_ZIP, data, mtime=T1)
    return fetch(mirror.url_for(ML_ZIP), verify=verify_movielens_zip, extract_zip=True, **kwargs)


def test_movielens_zip_is_extracted(mirror: HttpMirror, fetch: Fetch, store: Path) -> None:
    got = fetch_zip(mirror, fetch, movielens_zip())
    assert got.extracted_dir == store / got.version / "ml-latest-small"
    assert (got.extracted_dir / "movies.csv").read_text().startswith("movieId,title,genres")
    assert current_version(store) == replace(got, changed=False)
    assert got.md5_verified is False


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: d.replace(b"Toy Story", b"Toy Storz"), "CRC mismatch"),
        (lambda d: b"<html>Service Unavailable</html>", "not a zip file"),
        (lambda d: movielens_zip(drop="movies.csv"), "movies.csv"),
    ],
    ids=["bad-crc", "not-a-zip", "no-movies"],
)
def test_bad_zip_keeps_the_previous_version(
    mirror: HttpMirror,
    fetch: Fetch,
    store: Path,
    mangle: Callable[[bytes], bytes],
    message: str,
) -> None:
    first = fetch_zip(mirror, fetch, movielens_zip())
    mirror.put(ML_ZIP, mangle(movielens_zip()), mtime=T2)
    with pytest.raises(IntegrityError, match=message):
        fetch(mirror.url_for(ML_ZIP), verify=verify_movielens_zip, extract_zip=True)
    assert_still_first(store, first)
    assert first.extracted_dir is not None and first.extracted_dir.is_dir()


def test_md5_match(mirror: HttpMirror, fetch: Fetch) -> None:
    data = movielens_zip()
    mirror.put(f"{ML_ZIP}.md5", md5_line(data))
    got = fetch_zip(mirror, fetch, data, md5_url=mirror.url_for(f"{ML_ZIP}.md5"))
    assert got.md5_verified is True


def test_md5_mismatch(mirror: HttpMirror, fetch: Fetch, store: Path) -> None:
    data = movielens_zip()
    mirror.put(f"{ML_ZIP}.md5", md5_line(b"other bytes"))
    with pytest.raises(IntegrityError, match="MD5 mismatch") as err:
        fetch_zip(mirror, fetch, data, md5_url=mirror.url_for(f"{ML_ZIP}.md5"))
    assert hashlib.md5(data).hexdigest() in str(err.value)
    assert hashlib.md5(b"other bytes").hexdigest() in str(err.value)
    assert not (store / "CURRENT").exists()
    assert version_dirs(store) == []
    assert_clean(store)


def test_md5_404_is_skipped(mirror: HttpMirror, fetch: Fetch) -> None:
    got = fetch_zip(mirror, fetch, movielens_zip(), md5_url=mirror.url_for(f"{ML_ZIP}.md5"))
    assert got.md5_verified is False
    assert got.changed is True
    assert [r.status for r in mirror.responses_for(f"{ML_ZIP}.md5")] == [404]


# --------------------------------------------------------------------------- file:// sources


def test_file_url_happy_and_unchanged(tmp_path: Path, fetch: Fetch, store: Path) -> None:
    src = tmp_path / "mirror" / formats.IMDB_BASICS_FILE
    src.parent.mkdir()
    src.write_bytes(basics_gz())
    os.utime(src, (T1.timestamp(), T1.timestamp()))
    calls: list[DownloadProgress] = []

    got = fetch(src.as_uri(), verify=verify_basics)
    assert got.changed is True
    assert got.version == "20261121T101500Z"
    assert got.last_modified == "Sat, 21 Nov 2026 10:15:00 GMT"
    assert got.path.read_bytes() == src.read_bytes()

    again = fetch(src.as_uri(), verify=verify_basics, progress=calls.append)
    assert again == replace(got, changed=False)
    assert calls == []  # decided from size + mtime, nothing read

    src.write_bytes(basics_gz(seed=3))
    os.utime(src, (T2.timestamp(), T2.timestamp()))
    newer = fetch(src.as_uri(), verify=verify_basics)
    assert newer.changed is True and newer.version == "20261122T101500Z"
    assert version_dirs(store) == [got.version, newer.version]
    assert_clean(store)


def test_file_url_missing(tmp_path: Path, fetch: Fetch, store: Path) -> None:
    with pytest.raises(DownloadError, match="no such file"):
        fetch((tmp_path / "nope.tsv.gz").as_uri())
    assert_clean(store)


def test_file_url_md5(tmp_path: Path, fetch: Fetch) -> None:
    src = tmp_path / formats.MOVIELENS_DEFAULT_ZIP
    src.write_bytes(movielens_zip())
    md5 = tmp_path / f"{formats.MOVIELENS_DEFAULT_ZIP}.md5"
    md5.write_bytes(md5_line(src.read_bytes()))
    got = fetch(src.as_uri(), verify=verify_movielens_zip, md5_url=md5.as_uri())
    assert got.md5_verified is True


@pytest.mark.shared_data
def test_real_movielens_release_from_file_url(
    shared_movielens: Path, fetch: Fetch, store: Path
) -> None:
    src = shared_movielens / "ml-latest-small.zip"
    md5 = store.parent / "ml-latest-small.zip.md5"
    md5.write_text(f"MD5 (ml-latest-small.zip) = {hashlib.md5(src.read_bytes()).hexdigest()}\n")
    got = fetch(src.as_uri(), verify=verify_movielens_zip, extract_zip=True, md5_url=md5.as_uri())
    assert got.md5_verified is True
    assert got.extracted_dir == store / got.version / "ml-latest-small"
    assert (got.extracted_dir / "README.txt").is_file()  # the licence travels with the data
    ratings = (got.extracted_dir / "ratings.csv").read_bytes()
    assert ratings == (shared_movielens / "ml-latest-small" / "ratings.csv").read_bytes()


# --------------------------------------------------------------------------- misc


def test_progress_reports_increasing_bytes(mirror: HttpMirror, fetch: Fetch) -> None:
    data = random.Random(1).randbytes(3 * transfer.CHUNK_SIZE + 123)
    mirror.put("blob.bin", data, mtime=T1)
    calls: list[DownloadProgress] = []
    got = fetch(mirror.url_for("blob.bin"), progress=calls.append, progress_every_s=0)
    done = [c.bytes_done for c in calls]
    assert len(calls) >= 3
    assert done == sorted(done) and len(set(done[:-1])) == len(done) - 1
    assert done[-1] == len(data) == got.size_bytes
    assert {c.bytes_total for c in calls} == {len(data)}
    assert all(c.rate_bytes_per_s >= 0 for c in calls)


def test_progress_is_throttled(mirror: HttpMirror, fetch: Fetch) -> None:
    mirror.put("blob.bin", b"x" * (3 * transfer.CHUNK_SIZE), mtime=T1)
    calls: list[DownloadProgress] = []
    fetch(mirror.url_for("blob.bin"), progress=calls.append, progress_every_s=60)
    assert [c.bytes_done for c in calls] == [3 * transfer.CHUNK_SIZE]  # only the final call


def test_stale_temp_files_are_swept(mirror: HttpMirror, fetch: Fetch, store: Path) -> None:
    (store / ".tmp-killed").mkdir(parents=True)
    (store / ".tmp-killed" / "half.gz").write_bytes(b"\x1f\x8b")
    mirror.put(BASICS, basics_gz(), mtime=T1)
    fetch(mirror.url_for(BASICS))
    assert_clean(store)


def test_concurrent_fetches_share_one_version(
    mirror: HttpMirror, fetch: Fetch, store: Path
) -> None:
    mirror.put(BASICS, basics_gz(n_rows=5000), mtime=T1)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: fetch(mirror.url_for(BASICS)), range(4)))
    assert sum(r.changed for r in results) == 1  # the store lock serialises them
    assert {r.version for r in results} == {"20261121T101500Z"}
    assert version_dirs(store) == ["20261121T101500Z"]
    assert_clean(store)


def test_mirror_head_conditionals_and_404(mirror: HttpMirror, session: requests.Session) -> None:
    data = basics_gz()
    mirror.put(BASICS, data, mtime=T1)
    head = session.head(mirror.url_for(BASICS), timeout=5)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(data))
    assert head.headers["Last-Modified"] == "Sat, 21 Nov 2026 10:15:00 GMT"
    since = {"If-Modified-Since": head.headers["Last-Modified"]}
    assert session.get(mirror.url_for(BASICS), headers=since, timeout=5).status_code == 304
    ranged = session.get(mirror.url_for(BASICS), headers={"Range": "bytes=10-19"}, timeout=5)
    assert ranged.status_code == 206 and ranged.content == data[10:20]
    assert session.get(mirror.url_for("nope.gz"), timeout=5).status_code == 404
    assert [r.method for r in mirror.request_log] == ["HEAD", "GET", "GET", "GET"]


def test_current_version_of_empty_or_broken_store(tmp_path: Path) -> None:
    assert current_version(tmp_path) is None
    (tmp_path / "CURRENT").write_text("20260101T000000Z\n")
    assert current_version(tmp_path) is None


def test_unsupported_scheme(fetch: Fetch) -> None:
    with pytest.raises(DownloadError, match="only http"):
        fetch("ftp://127.0.0.1/x.gz")
