"""Versioned, atomic downloads of the source files (DESIGN.md §4).

`fetch_versioned(url, store_dir)` keeps one folder per dump version:

    store_dir/
      CURRENT                      the current version's name (replaced atomically)
      20261121T101500Z/            a version: named from Last-Modified, else ETag, else content
        title.basics.tsv.gz        the verified file
        source.json                where it came from: the FetchedFile fields except `changed`
        ml-latest-small/           with extract_zip=True: the extracted archive

A download streams into a hidden temp folder inside `store_dir`, is verified (size, the caller's
`verify`, the published MD5) and only then renamed into place; CURRENT moves last. Any failure
leaves the previous version and CURRENT untouched and removes the temp files. Re-running is
cheap: conditional requests (ETag / Last-Modified) answer "unchanged" without a body, and an
interrupted body is resumed with a Range request when the server supports it.

For file:// URLs, Last-Modified is the file's mtime and the ETag is a synthetic
`"file-<size hex>-<mtime_ns hex>"`, so an untouched file is recognised without reading it.
Conditional headers are only sent when the current version came from the same URL.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import requests
import urllib3

from recommender_lib import __version__
from recommender_lib.atomic import write_text_atomic
from recommender_lib.sources import integrity
from recommender_lib.sources.integrity import IntegrityError, file_md5, file_sha256, parse_md5_file

try:  # POSIX advisory lock: two fetches into one store wait for each other.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DownloadError",
    "DownloadProgress",
    "FetchedFile",
    "IntegrityError",
    "current_version",
    "fetch_versioned",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

CHUNK_SIZE = 1 << 20
MAX_RETRY_AFTER_S = 30.0
MAX_CHECKSUM_BYTES = 1 << 16
CURRENT_FILE = "CURRENT"
SOURCE_FILE = "source.json"
LOCK_FILE = ".lock"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
STALE_PREFIXES = (TMP_PREFIX, TRASH_PREFIX, f".{CURRENT_FILE}.")
USER_AGENT = f"cine-reco/{__version__} (+recommender_lib.sources.download)"


@dataclass(frozen=True)
class DownloadProgress:
    """A progress report for one transfer."""

    url: str
    bytes_done: int
    bytes_total: int | None
    elapsed_s: float

    @property
    def rate_bytes_per_s(self) -> float:
        return self.bytes_done / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True)
class FetchedFile:
    """A verified file inside its version folder."""

    path: Path
    version: str
    url: str
    sha256: str
    size_bytes: int
    etag: str | None
    last_modified: str | None
    fetched_at: str
    changed: bool
    extracted_dir: Path | None = None
    md5_verified: bool = False

    @property
    def version_dir(self) -> Path:
        return self.path.parent

    def to_metadata(self) -> dict[str, object]:
        """A plain JSON-able dict (paths as strings) for run metadata."""
        data = asdict(self)
        data["path"] = str(self.path)
        data["extracted_dir"] = None if self.extracted_dir is None else str(self.extracted_dir)
        return data

    def _source_record(self) -> dict[str, object]:
        """source.json: every field but `changed`, paths relative to the version folder."""
        data = self.to_metadata()
        del data["changed"]
        data["path"] = self.path.name
        if self.extracted_dir is not None:
            data["extracted_dir"] = self.extracted_dir.relative_to(self.version_dir).as_posix()
        return data

    @classmethod
    def _from_source_record(cls, data: dict[str, object], version_dir: Path) -> FetchedFile:
        extracted = data.get("extracted_dir")
        return cls(
            path=version_dir / str(data["path"]),
            version=str(data["version"]),
            url=str(data["url"]),
            sha256=str(data["sha256"]),
            size_bytes=int(data["size_bytes"]),  # type: ignore[arg-type]
            etag=_opt_str(data.get("etag")),
            last_modified=_opt_str(data.get("last_modified")),
            fetched_at=str(data["fetched_at"]),
            changed=False,
            extracted_dir=None if extracted is None else version_dir / str(extracted),
            md5_verified=bool(data.get("md5_verified", False)),
        )


class DownloadError(Exception):
    """A network, HTTP or file-access failure (after retries where they apply)."""

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class _Retryable(Exception):
    """A transient failure: try again after a delay."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass
class Received:
    """What a completed transfer told us about the body."""

    etag: str | None
    last_modified: str | None


@dataclass
class _Partial:
    """State of a body in flight, kept across attempts so a broken one can resume."""

    done: int = 0
    total: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    accept_ranges: bool = False

    def resume_validator(self) -> str | None:
        """The If-Range value when resuming is possible, else None."""
        if not self.done or not self.accept_ranges or self.total is None:
            return None
        if self.done >= self.total:
            return None
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified


@dataclass
class _Options:
    url: str
    store_dir: Path
    filename: str
    verify: Callable[[Path], object] | None
    extract_zip: bool
    md5_url: str | None
    retries: int
    backoff_s: float
    timeout_s: float
    progress: Callable[[DownloadProgress], None] | None
    progress_every_s: float
    started: float = field(default_factory=time.monotonic)


# --------------------------------------------------------------------------- public API


def fetch_versioned(
    url: str,
    store_dir: Path,
    *,
    verify: Callable[[Path], object] | None = None,
    filename: str | None = None,
    extract_zip: bool = False,
    md5_url: str | None = None,
    retention: int = 3,
    retries: int = 4,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    progress: Callable[[DownloadProgress], None] | None = None,
    progress_every_s: float = 5.0,
    session: requests.Session | None = None,
) -> FetchedFile:
    """Fetch `url` into a new version folder of `store_dir` unless it is unchanged.

    Raises DownloadError (network/HTTP/file access, after `retries` retries for transient
    failures) or IntegrityError (a complete body that fails a check; not retried).
    """
    if retention < 1:
        raise ValueError(f"retention must be at least 1, got {retention}")
    _check_scheme(url)
    if md5_url is not None:
        _check_scheme(md5_url)
    store_dir = Path(store_dir)
    store_dir.mkdir(parents=True, exist_ok=True)
    opts = _Options(
        url=url,
        store_dir=store_dir,
        filename=filename or filename_from_url(url),
        verify=verify,
        extract_zip=extract_zip,
        md5_url=md5_url,
        retries=max(0, retries),
        backoff_s=backoff_s,
        timeout_s=timeout_s,
        progress=progress,
        progress_every_s=progress_every_s,
    )
    with _store_lock(store_dir), _session_scope(session) as sess:
        _sweep_stale(store_dir)
        result = _Fetch(opts, sess, current_version(store_dir)).run()
        _apply_retention(store_dir, retention)
    return result


def current_version(store_dir: Path) -> FetchedFile | None:
    """The version CURRENT points at (changed=False), or None when there is none or it is broken."""
    store_dir = Path(store_dir)
    try:
        name = (store_dir / CURRENT_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if not name or "/" in name or "\\" in name or name.startswith("."):
        log.warning("%s: ignoring invalid CURRENT pointer %r", store_dir, name)
        return None
    found = _read_version(store_dir / name)
    if found is None:
        log.warning("%s: CURRENT points at %r, which is missing or incomplete", store_dir, name)
    return found


# --------------------------------------------------------------------------- one fetch


class _Fetch:
    """One call of fetch_versioned, inside the store lock."""

    def __init__(
        self, opts: _Options, session: requests.Session, current: FetchedFile | None
    ) -> None:
        self.opts = opts
        self.session = session
        self.current = current
        self.is_file = urlsplit(opts.url).scheme == "file"

    def run(self) -> FetchedFile:
        tmp_dir = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self.opts.store_dir))
        try:
            target = tmp_dir / self.opts.filename
            received = self._download(target)
            if received is None:
                assert self.current is not None
                log.info("%s unchanged: keeping version %s", self.opts.url, self.current.version)
                return self.current
            return self._install(tmp_dir, target, received)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)

    # -- transfer
    def _download(self, target: Path) -> Received | None:
        """Fetch the body into `target`; None when the source is unchanged."""
        if self.is_file:
            return _with_retries(self.opts, self.opts.url, lambda: self._copy_file(target))
        partial = _Partial()
        return _with_retries(self.opts, self.opts.url, lambda: self._http_get(target, partial))

    def _comparable_current(self) -> FetchedFile | None:
        """The current version, when it can stand for this request's result."""
        cur = self.current
        if cur is None or (self.opts.extract_zip and cur.extracted_dir is None):
            return None
        return cur

    def _conditional_headers(self) -> dict[str, str]:
        cur = self._comparable_current()
        if cur is None or cur.url != self.opts.url:
            return {}
        return conditional_headers(cur.etag, cur.last_modified)

    def _http_get(self, target: Path, partial: _Partial) -> Received | None:
        url = self.opts.url
        headers = {"Accept-Encoding": "identity", "User-Agent": USER_AGENT}
        validator = partial.resume_validator()
        if validator is not None:
            headers |= {"Range": f"bytes={partial.done}-", "If-Range": validator}
        else:
            headers |= self._conditional_headers()
        resp = _request(self.session, url, headers, self.opts.timeout_s)
        with resp:
            status = resp.status_code
            if status == 304 and ("If-None-Match" in headers or "If-Modified-Since" in headers):
                return None
            if status == 206 and validator is not None and _range_start(resp) == partial.done:
                log.info("%s: resuming at byte %d", url, partial.done)
            elif status == 200:
                _restart(partial, resp, target)
            else:
                _raise_for_status(url, resp, resuming=validator is not None, partial=partial)
            self._stream(resp, target, partial)
        return Received(etag=partial.etag, last_modified=partial.last_modified)

    def _stream(self, resp: requests.Response, target: Path, partial: _Partial) -> None:
        report = _Reporter(self.opts, partial.total)
        chunks = resp.raw.stream(CHUNK_SIZE, decode_content=False)
        with open(target, "ab" if partial.done else "wb") as out:
            while True:
                try:
                    chunk = next(chunks, None)
                except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
                    raise _Retryable(
                        f"connection broken after {partial.done} of "
                        f"{_fmt_total(partial.total)} bytes: {_describe(exc)}"
                    ) from exc
                if chunk is None:
                    break
                out.write(chunk)
                partial.done += len(chunk)
                report.update(partial.done)
        if partial.total is not None and partial.done != partial.total:
            raise _Retryable(
                f"body truncated: expected {partial.total} bytes (Content-Length), "
                f"got {partial.done}"
            )
        report.final(partial.done)

    def _copy_file(self, target: Path) -> Received | None:
        src = local_path(self.opts.url)
        before = _stat_source(self.opts.url, src)
        etag = f'"file-{before.st_size:x}-{before.st_mtime_ns:x}"'
        last_modified = email.utils.formatdate(before.st_mtime, usegmt=True)
        cur = self._comparable_current()
        if cur is not None and cur.url == self.opts.url and cur.etag == etag:
            return None  # same size and mtime: unchanged, not even read
        report = _Reporter(self.opts, before.st_size)
        done = 0
        try:
            with open(src, "rb") as fh, open(target, "wb") as out:
                while chunk := fh.read(CHUNK_SIZE):
                    out.write(chunk)
                    done += len(chunk)
                    report.update(done)
        except OSError as exc:
            raise _Retryable(f"reading {src} failed after {done} bytes: {exc}") from exc
        report.final(done)
        after = _stat_source(self.opts.url, src)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise _Retryable(f"{src} changed while it was being copied")
        if done != before.st_size:
            raise _Retryable(f"{src}: expected {before.st_size} bytes, read {done}")
        return Received(etag=etag, last_modified=last_modified)

    # -- checks and installation
    def _install(self, tmp_dir: Path, target: Path, received: Received) -> FetchedFile:
        sha = file_sha256(target)
        size = target.stat().st_size
        cur = self._comparable_current()
        if cur is not None and cur.sha256 == sha:
            return _refresh_validators(self.opts.store_dir, cur, self.opts.url, received)
        if self.opts.verify is not None:
            self.opts.verify(target)
        md5_verified = self._check_md5(target)
        extracted = self._extract(target, tmp_dir) if self.opts.extract_zip else None
        version, reuse = _choose_version(self.opts, received, sha)
        version_dir = self.opts.store_dir / version
        fetched = FetchedFile(
            path=version_dir / target.name,
            version=version,
            url=self.opts.url,
            sha256=sha,
            size_bytes=size,
            etag=received.etag,
            last_modified=received.last_modified,
            fetched_at=datetime.now(UTC).isoformat(),
            changed=True,
            extracted_dir=None if extracted is None else version_dir / extracted.name,
            md5_verified=md5_verified,
        )
        if reuse is not None:  # identical content already kept under that name: point at it
            fetched = replace(fetched, extracted_dir=reuse.extracted_dir)
            fetched = replace(fetched, md5_verified=md5_verified or reuse.md5_verified)
            _write_source(version_dir, fetched)
        else:
            _write_source(tmp_dir, fetched)
            os.rename(tmp_dir, version_dir)
        write_text_atomic(self.opts.store_dir / CURRENT_FILE, version + "\n")
        log.info("%s: new version %s (%d bytes)", self.opts.url, version, size)
        return fetched

    def _check_md5(self, target: Path) -> bool:
        md5_url = self.opts.md5_url
        if md5_url is None:
            return False
        text = _with_retries(self.opts, md5_url, lambda: self._fetch_text(md5_url))
        if text is None:
            log.warning("%s not found: MD5 not checked for %s", md5_url, self.opts.url)
            return False
        expected = expected_md5(md5_url, text, filename_from_url(self.opts.url))
        actual = file_md5(target)
        if actual != expected:
            raise IntegrityError(
                f"{self.opts.url}: MD5 mismatch: {md5_url} says {expected}, "
                f"the downloaded {target.stat().st_size} bytes hash to {actual}"
            )
        return True

    def _fetch_text(self, url: str) -> str | None:
        """A small text file (checksum); None when it does not exist."""
        if urlsplit(url).scheme == "file":
            try:
                with open(local_path(url), "rb") as fh:
                    return fh.read(MAX_CHECKSUM_BYTES).decode("utf-8", "replace")
            except (FileNotFoundError, NotADirectoryError):
                return None
            except OSError as exc:
                raise _Retryable(f"reading {url} failed: {exc}") from exc
        headers = {"User-Agent": USER_AGENT}
        resp = _request(self.session, url, headers, self.opts.timeout_s)
        with resp:
            if resp.status_code in (404, 410):
                return None
            if resp.status_code != 200:
                _raise_for_status(url, resp, resuming=False, partial=None)
            try:
                return resp.content[:MAX_CHECKSUM_BYTES].decode("utf-8", "replace")
            except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
                raise _Retryable(f"reading {url} failed: {exc}") from exc

    def _extract(self, target: Path, tmp_dir: Path) -> Path:
        top = integrity.zip_top_folder(target)
        if top is not None and top not in (target.name, SOURCE_FILE):
            integrity.extract_zip(target, tmp_dir)
            return tmp_dir / top
        dest = tmp_dir / "extracted"
        integrity.extract_zip(target, dest)
        return dest


# --------------------------------------------------------------------------- HTTP helpers


def _request(
    session: requests.Session, url: str, headers: dict[str, str], timeout_s: float
) -> requests.Response:
    try:
        return session.get(url, headers=headers, stream=True, timeout=(timeout_s, timeout_s))
    except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema) as exc:
        raise DownloadError(f"GET {url}: invalid URL ({exc})", url=url) from exc
    except requests.RequestException as exc:
        raise _Retryable(f"{type(exc).__name__}: {exc}") from exc


def _restart(partial: _Partial, resp: requests.Response, target: Path) -> None:
    """A full (200) body starts: forget any partial one."""
    partial.done = 0
    partial.total = _int_or_none(resp.headers.get("Content-Length"))
    partial.etag = resp.headers.get("ETag")
    partial.last_modified = resp.headers.get("Last-Modified")
    partial.accept_ranges = resp.headers.get("Accept-Ranges", "").strip().lower() == "bytes"
    target.unlink(missing_ok=True)


def _range_start(resp: requests.Response) -> int | None:
    """The first byte of a `Content-Range: bytes a-b/total` answer."""
    value = resp.headers.get("Content-Range", "")
    unit, _, span = value.partition(" ")
    first = span.partition("-")[0]
    return int(first) if unit == "bytes" and first.isdigit() else None


def _raise_for_status(
    url: str, resp: requests.Response, *, resuming: bool, partial: _Partial | None
) -> None:
    status = resp.status_code
    what = f"HTTP {status} {resp.reason or ''}".strip()
    if status == 429 or 500 <= status < 600:
        retry_after = _retry_after(resp.headers.get("Retry-After"))
        raise _Retryable(what, status=status, retry_after=retry_after)
    if resuming and partial is not None and status in (206, 416):
        partial.done, partial.accept_ranges = 0, False  # server cannot resume: start over
        raise _Retryable(f"{what}: the range request failed, restarting from byte 0", status=status)
    if 400 <= status < 500:
        raise DownloadError(f"GET {url} failed: {what}", url=url, status=status)
    raise DownloadError(f"GET {url}: unexpected answer {what}", url=url, status=status)


def conditional_headers(etag: str | None, last_modified: str | None) -> dict[str, str]:
    """If-None-Match / If-Modified-Since for the validators we hold (none: unconditional)."""
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    return headers


def expected_md5(md5_url: str, text: str, remote_name: str) -> str:
    """The digest the checksum file gives for `remote_name` (or its only digest)."""
    try:
        return parse_md5_file(text, filename=remote_name)
    except IntegrityError:
        try:
            return parse_md5_file(text)
        except IntegrityError as exc:
            raise IntegrityError(f"{md5_url}: {exc}") from exc


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if seconds <= MAX_RETRY_AFTER_S else None


def _with_retries(opts: _Options, url: str, attempt: Callable[[], T]) -> T:
    """Run `attempt`, retrying _Retryable failures with exponential backoff."""
    last: _Retryable | None = None
    for n in range(opts.retries + 1):
        try:
            return attempt()
        except _Retryable as exc:
            last = exc
            if n == opts.retries:
                break
            delay = opts.backoff_s * 2**n if exc.retry_after is None else exc.retry_after
            log.warning(
                "%s: attempt %d/%d failed (%s); retrying in %.2fs",
                url,
                n + 1,
                opts.retries + 1,
                exc,
                delay,
            )
            time.sleep(delay)
    assert last is not None
    raise DownloadError(
        f"GET {url} failed after {opts.retries + 1} attempts: {last}",
        url=url,
        status=last.status,
    ) from last


@contextlib.contextmanager
def _session_scope(session: requests.Session | None) -> Iterator[requests.Session]:
    if session is not None:
        yield session
        return
    with requests.Session() as own:
        yield own


# --------------------------------------------------------------------------- file:// helpers


def local_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise DownloadError(f"{url}: file URLs on another host are not supported", url=url)
    return Path(urllib.request.url2pathname(parts.path))


def _stat_source(url: str, src: Path) -> os.stat_result:
    try:
        st = src.stat()
    except FileNotFoundError as exc:
        raise DownloadError(f"{url}: no such file {src}", url=url) from exc
    except OSError as exc:
        raise _Retryable(f"cannot stat {src}: {exc}") from exc
    if not src.is_file():
        raise DownloadError(f"{url}: {src} is not a regular file", url=url)
    return st


# --------------------------------------------------------------------------- the store


@contextlib.contextmanager
def _store_lock(store_dir: Path) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(store_dir / LOCK_FILE, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _sweep_stale(store_dir: Path) -> None:
    """Remove temp files left by a killed fetch (safe: we hold the store lock)."""
    for entry in store_dir.iterdir():
        if entry.name.startswith(STALE_PREFIXES):
            log.info("removing stale temp entry %s", entry)
            _remove(entry)


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def _read_version(version_dir: Path) -> FetchedFile | None:
    try:
        data = json.loads((version_dir / SOURCE_FILE).read_text(encoding="utf-8"))
        fetched = FetchedFile._from_source_record(data, version_dir)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not fetched.path.is_file():
        return None
    if fetched.extracted_dir is not None and not fetched.extracted_dir.is_dir():
        return None
    return fetched


def _write_source(version_dir: Path, fetched: FetchedFile) -> None:
    text = json.dumps(fetched._source_record(), indent=2, sort_keys=True) + "\n"
    write_text_atomic(version_dir / SOURCE_FILE, text)


def _refresh_validators(
    store_dir: Path, cur: FetchedFile, url: str, received: Received
) -> FetchedFile:
    """Same bytes as the current version: keep it, remembering the new validators."""
    fresh = replace(cur, url=url, etag=received.etag, last_modified=received.last_modified)
    if fresh != cur:
        _write_source(store_dir / cur.version, fresh)
    log.info("%s: content identical to version %s", url, cur.version)
    return replace(fresh, changed=False)


def _choose_version(opts: _Options, received: Received, sha: str) -> tuple[str, FetchedFile | None]:
    """The version folder name, plus the existing version when it already holds this content."""
    base = version_id(received, sha)
    for name in (base, f"{base}-{sha[:8]}"):
        existing_dir = opts.store_dir / name
        if not existing_dir.exists():
            return name, None
        existing = _read_version(existing_dir)
        if (
            existing is not None
            and existing.sha256 == sha
            and existing.path.name == opts.filename
            and (existing.extracted_dir is not None or not opts.extract_zip)
        ):
            return name, existing
    raise DownloadError(
        f"{opts.url}: version folders {base!r} and {base}-{sha[:8]!r} both exist "
        "with other content",
        url=opts.url,
    )


def version_id(received: Received, sha: str) -> str:
    if received.last_modified:
        with contextlib.suppress(TypeError, ValueError):
            when = email.utils.parsedate_to_datetime(received.last_modified)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    if received.etag:
        return f"etag-{hashlib.sha1(received.etag.encode()).hexdigest()[:12]}"
    return f"sha256-{sha[:16]}"


def _apply_retention(store_dir: Path, keep: int) -> None:
    """Keep the newest `keep` versions by fetched_at, and always the current one."""
    current = current_version(store_dir)
    versions = [
        v
        for entry in store_dir.iterdir()
        if entry.is_dir() and not entry.name.startswith(".")
        if (v := _read_version(entry)) is not None
    ]
    versions.sort(key=lambda v: (_parse_time(v.fetched_at), v.version), reverse=True)
    keepers = {v.version for v in versions[:keep]}
    if current is not None:
        keepers.add(current.version)
    for old in versions:
        if old.version not in keepers:
            log.info("retention: removing version %s of %s", old.version, store_dir)
            trash = store_dir / f"{TRASH_PREFIX}{old.version}"
            os.rename(store_dir / old.version, trash)  # never leave a half-deleted version
            shutil.rmtree(trash, ignore_errors=True)


# --------------------------------------------------------------------------- small helpers


class _Reporter:
    """Calls the progress callback at most every `progress_every_s`, plus once at the end."""

    def __init__(self, opts: _Options, total: int | None) -> None:
        self.opts = opts
        self.total = total
        self.last = time.monotonic()

    def update(self, done: int) -> None:
        if self.opts.progress is None:
            return
        now = time.monotonic()
        if now - self.last >= self.opts.progress_every_s:
            self.last = now
            self._emit(done, now)

    def final(self, done: int) -> None:
        if self.opts.progress is not None:
            self._emit(done, time.monotonic())

    def _emit(self, done: int, now: float) -> None:
        assert self.opts.progress is not None
        elapsed = now - self.opts.started
        self.opts.progress(DownloadProgress(self.opts.url, done, self.total, elapsed))


def _check_scheme(url: str) -> None:
    if urlsplit(url).scheme not in ("http", "https", "file"):
        raise DownloadError(f"{url}: only http(s):// and file:// URLs are supported", url=url)


def filename_from_url(url: str) -> str:
    name = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    if not name or name in (".", "..", SOURCE_FILE, CURRENT_FILE):
        raise ValueError(f"cannot derive a file name from {url!r}: pass filename=")
    return name


def _parse_time(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _describe(exc: BaseException) -> str:
    """urllib3 wraps the useful text as the first argument of a ProtocolError."""
    if isinstance(exc, urllib3.exceptions.ProtocolError) and exc.args:
        return str(exc.args[0])
    return f"{type(exc).__name__}: {exc}"


def _fmt_total(total: int | None) -> str:
    return "an unknown number of" if total is None else str(total)
