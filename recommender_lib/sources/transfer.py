"""One transfer of a source file: an HTTP GET that resumes, or a file:// copy (docs/architecture.md
§4).

HTTP answers are sorted by `retry.is_transient_status`: transient ones raise `Retryable` (with
the server's Retry-After), the rest `DownloadError`. A broken body is kept in a `Partial` so the
next attempt can ask for the rest with `Range` + `If-Range`. For file:// URLs, Last-Modified is the
file's mtime and the ETag is a synthetic `"file-<size hex>-<mtime_ns hex>"` (`file_validators`),
so an untouched file is recognised without reading it.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests
import urllib3

from recommender_lib import __version__
from recommender_lib.sources.retry import (
    NOT_FOUND,
    DownloadError,
    Retryable,
    is_transient_status,
    parse_retry_after,
)

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
MAX_CHECKSUM_BYTES = 1 << 16
SUPPORTED_SCHEMES = ("http", "https", "file")
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


@dataclass
class Received:
    """What a completed transfer told us about the body."""

    etag: str | None
    last_modified: str | None


@dataclass
class Partial:
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
class TransferOptions:
    """How one file is transferred: its URL, the timeout and the progress callback."""

    url: str
    timeout_s: float
    progress: Callable[[DownloadProgress], None] | None
    progress_every_s: float
    started: float = field(default_factory=time.monotonic)


# --------------------------------------------------------------------------- HTTP


def http_get(
    session: requests.Session,
    opts: TransferOptions,
    target: Path,
    partial: Partial,
    conditional: dict[str, str],
) -> Received | None:
    """GET the body into `target` (resuming `partial`); None on 304 to the `conditional` headers."""
    url = opts.url
    headers = {"Accept-Encoding": "identity", "User-Agent": USER_AGENT}
    validator = partial.resume_validator()
    if validator is not None:
        headers |= {"Range": f"bytes={partial.done}-", "If-Range": validator}
    else:
        headers |= conditional
    resp = request(session, url, headers, opts.timeout_s)
    with resp:
        status = resp.status_code
        if status == 304 and ("If-None-Match" in headers or "If-Modified-Since" in headers):
            return None
        if status == 206 and validator is not None and _range_start(resp) == partial.done:
            log.info("%s: resuming at byte %d", url, partial.done)
        elif status == 200:
            _restart(partial, resp, target)
        else:
            raise_for_status(url, resp, resuming=validator is not None, partial=partial)
        _stream(opts, resp, target, partial)
    return Received(etag=partial.etag, last_modified=partial.last_modified)


def _stream(opts: TransferOptions, resp: requests.Response, target: Path, partial: Partial) -> None:
    """Append the body to `target`; Retryable when the connection breaks or it comes up short."""
    report = Reporter(opts, partial.total)
    chunks = resp.raw.stream(CHUNK_SIZE, decode_content=False)
    with open(target, "ab" if partial.done else "wb") as out:
        while True:
            try:
                chunk = next(chunks, None)
            except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
                raise Retryable(
                    f"connection broken after {partial.done} of "
                    f"{_fmt_total(partial.total)} bytes: {_describe(exc)}"
                ) from exc
            if chunk is None:
                break
            out.write(chunk)
            partial.done += len(chunk)
            report.update(partial.done)
    if partial.total is not None and partial.done != partial.total:
        raise Retryable(
            f"body truncated: expected {partial.total} bytes (Content-Length), got {partial.done}"
        )
    report.final(partial.done)


def fetch_text(session: requests.Session, url: str, timeout_s: float) -> str | None:
    """A small text file (checksum); None when it does not exist."""
    if urlsplit(url).scheme == "file":
        try:
            with open(local_path(url), "rb") as fh:
                return fh.read(MAX_CHECKSUM_BYTES).decode("utf-8", "replace")
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise Retryable(f"reading {url} failed: {exc}") from exc
    headers = {"User-Agent": USER_AGENT}
    resp = request(session, url, headers, timeout_s)
    with resp:
        if resp.status_code in NOT_FOUND:
            return None
        if resp.status_code != 200:
            raise_for_status(url, resp, resuming=False, partial=None)
        try:
            return resp.content[:MAX_CHECKSUM_BYTES].decode("utf-8", "replace")
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise Retryable(f"reading {url} failed: {exc}") from exc


def request(
    session: requests.Session, url: str, headers: dict[str, str], timeout_s: float
) -> requests.Response:
    """A streamed GET; connection failures are Retryable, a malformed URL a DownloadError."""
    try:
        return session.get(url, headers=headers, stream=True, timeout=(timeout_s, timeout_s))
    except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema) as exc:
        raise DownloadError(f"GET {url}: invalid URL ({exc})", url=url) from exc
    except requests.RequestException as exc:
        raise Retryable(f"{type(exc).__name__}: {exc}") from exc


def _restart(partial: Partial, resp: requests.Response, target: Path) -> None:
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


def raise_for_status(
    url: str, resp: requests.Response, *, resuming: bool, partial: Partial | None
) -> None:
    """Raise Retryable for a transient answer (or a failed resume), else DownloadError."""
    status = resp.status_code
    what = f"HTTP {status} {resp.reason or ''}".strip()
    if is_transient_status(status):
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        raise Retryable(what, status=status, retry_after=retry_after)
    if resuming and partial is not None and status in (206, 416):
        partial.done, partial.accept_ranges = 0, False  # server cannot resume: start over
        raise Retryable(f"{what}: the range request failed, restarting from byte 0", status=status)
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


@contextlib.contextmanager
def session_scope(session: requests.Session | None) -> Iterator[requests.Session]:
    """The caller's session, or an own one closed at the end."""
    if session is not None:
        yield session
        return
    with requests.Session() as own:
        yield own


# --------------------------------------------------------------------------- file://


def copy_file(opts: TransferOptions, target: Path, known_etag: str | None) -> Received | None:
    """Copy a file:// source into `target`; None when its validators equal `known_etag`."""
    src = local_path(opts.url)
    before = _stat_source(opts.url, src)
    etag, last_modified = file_validators(before)
    if known_etag == etag:
        return None  # same size and mtime: unchanged, not even read
    report = Reporter(opts, before.st_size)
    done = 0
    try:
        with open(src, "rb") as fh, open(target, "wb") as out:
            while chunk := fh.read(CHUNK_SIZE):
                out.write(chunk)
                done += len(chunk)
                report.update(done)
    except OSError as exc:
        raise Retryable(f"reading {src} failed after {done} bytes: {exc}") from exc
    report.final(done)
    after = _stat_source(opts.url, src)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise Retryable(f"{src} changed while it was being copied")
    if done != before.st_size:
        raise Retryable(f"{src}: expected {before.st_size} bytes, read {done}")
    return Received(etag=etag, last_modified=last_modified)


def file_validators(st: os.stat_result) -> tuple[str, str]:
    """(ETag, Last-Modified) of a local file: `"file-<size hex>-<mtime_ns hex>"` and its mtime."""
    etag = f'"file-{st.st_size:x}-{st.st_mtime_ns:x}"'
    return etag, email.utils.formatdate(st.st_mtime, usegmt=True)


def local_path(url: str) -> Path:
    """The local path of a file:// URL (DownloadError for another host)."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise DownloadError(f"{url}: file URLs on another host are not supported", url=url)
    return Path(urllib.request.url2pathname(parts.path))


def _stat_source(url: str, src: Path) -> os.stat_result:
    """stat() of a file:// source: DownloadError when it is missing or not a file."""
    try:
        st = src.stat()
    except FileNotFoundError as exc:
        raise DownloadError(f"{url}: no such file {src}", url=url) from exc
    except OSError as exc:
        raise Retryable(f"cannot stat {src}: {exc}") from exc
    if not src.is_file():
        raise DownloadError(f"{url}: {src} is not a regular file", url=url)
    return st


# --------------------------------------------------------------------------- small helpers


class Reporter:
    """Calls the progress callback at most every `progress_every_s`, plus once at the end."""

    def __init__(self, opts: TransferOptions, total: int | None) -> None:
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


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None


def _describe(exc: BaseException) -> str:
    """urllib3 wraps the useful text as the first argument of a ProtocolError."""
    if isinstance(exc, urllib3.exceptions.ProtocolError) and exc.args:
        return str(exc.args[0])
    return f"{type(exc).__name__}: {exc}"


def _fmt_total(total: int | None) -> str:
    return "an unknown number of" if total is None else str(total)
