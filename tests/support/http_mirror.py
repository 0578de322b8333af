"""A loopback HTTP mirror of a directory, with conditional requests and fault injection.

    with HttpMirror(tmp_path / "www") as mirror:
        mirror.put("imdb/title.basics.tsv.gz", data)
        mirror.inject("imdb/title.basics.tsv.gz", Fault.status(503), Fault.truncate(100))
        url = mirror.url_for("imdb/title.basics.tsv.gz")

Serves GET and HEAD from 127.0.0.1 only, with Content-Length, a strong `ETag` (quoted sha256
prefix of the content), `Last-Modified` (the file's mtime; see `put`/`set_mtime`), 304 answers
to If-None-Match / If-Modified-Since, single `Range: bytes=a-b` requests (with If-Range) and
404 for missing files. Faults are queued per path and each request consumes one.
`request_log` holds (method, path, headers) per request, `response_log` (path, status, body
bytes sent) per answer, so tests can count requests and see 304s.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Self
from urllib.parse import quote, unquote, urlsplit

CORRUPT_SPAN = 16  # bytes flipped by Fault.corrupt()
COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class Fault:
    """One misbehaviour, applied to the next request for a path."""

    kind: str
    code: int = 0
    n_bytes: int = 0
    seconds: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def status(cls, code: int, headers: Mapping[str, str] | None = None) -> Fault:
        """Answer with this status (e.g. 500, or 429 with {"Retry-After": "0"}) and no body."""
        return cls("status", code=code, headers=dict(headers or {}))

    @classmethod
    def truncate(cls, n_bytes: int) -> Fault:
        """Send the full Content-Length but only the first n bytes, then close."""
        return cls("truncate", n_bytes=n_bytes)

    @classmethod
    def no_content_length_truncate(cls, n_bytes: int) -> Fault:
        """Send no Content-Length, only the first n bytes, then close (looks complete)."""
        return cls("no_content_length_truncate", n_bytes=n_bytes)

    @classmethod
    def corrupt(cls) -> Fault:
        """Send the full length with bytes flipped in the middle."""
        return cls("corrupt")

    @classmethod
    def close(cls) -> Fault:
        """Close the connection without answering."""
        return cls("close")

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Wait before answering normally (to exercise client timeouts)."""
        return cls("delay", seconds=seconds)


class LoggedRequest(NamedTuple):
    method: str
    path: str
    headers: dict[str, str]


class LoggedResponse(NamedTuple):
    path: str
    status: int  # 0: the connection was closed without an answer
    body_bytes: int  # body bytes in the answer (after a truncation fault)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    mirror: HttpMirror

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        """Clients hanging up (timeouts, truncation tests) are expected; keep other errors."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        self.mirror.server_errors.append(exc)  # type: ignore[arg-type]
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def setup(self) -> None:
        super().setup()
        self.server.mirror._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.mirror._track(self.connection, add=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _serve(self, *, body: bool) -> None:
        mirror = self.server.mirror
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        self._rel = rel
        mirror._log(LoggedRequest(self.command, rel, dict(self.headers.items())))
        fault = mirror._next_fault(rel)
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
            fault = None
        if fault is not None and fault.kind == "close":
            self.close_connection = True
            mirror._log_response(LoggedResponse(rel, 0, 0))
            return
        if fault is not None and fault.kind == "status":
            self._send_empty(fault.code, fault.headers)
            return
        file = mirror._resolve(rel)
        if file is None:
            self._send_empty(HTTPStatus.NOT_FOUND)
            return
        st = file.stat()
        validators = {"ETag": mirror._etag_for(file, st), "Last-Modified": _http_date(st.st_mtime)}
        if self._not_modified(validators["ETag"], st.st_mtime):
            self._send_empty(HTTPStatus.NOT_MODIFIED, validators)
            return
        self._send_file(file, st.st_size, validators, fault, body=body)

    def _not_modified(self, etag: str, mtime: float) -> bool:
        inm = self.headers.get("If-None-Match")
        if inm is not None:  # takes precedence over If-Modified-Since (RFC 9110 §13.2.2)
            tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
            return "*" in tags or etag in tags
        since = _parse_http_date(self.headers.get("If-Modified-Since"))
        return since is not None and int(mtime) <= since

    def _range(self, size: int, etag: str, last_modified: str) -> tuple[int, int] | None:
        spec = self.headers.get("Range")
        if not spec or not self.server.mirror.ranges:
            return None
        if_range = self.headers.get("If-Range")
        if if_range is not None and if_range not in (etag, last_modified):
            return None
        unit, _, span = spec.partition("=")
        first, _, last = span.partition("-")
        if unit.strip() != "bytes" or "," in span or not first.strip().isdigit():
            return None
        start = int(first)
        end = int(last) if last.strip().isdigit() else size - 1
        return (start, min(end, size - 1))

    def _send_file(
        self, file: Path, size: int, validators: dict[str, str], fault: Fault | None, *, body: bool
    ) -> None:
        status, start, length = HTTPStatus.OK, 0, size
        headers = dict(validators)
        if self.server.mirror.ranges:
            headers["Accept-Ranges"] = "bytes"
        span = self._range(size, validators["ETag"], validators["Last-Modified"])
        if span is not None:
            first, last = span
            if first >= size or first > last:
                headers["Content-Range"] = f"bytes */{size}"
                self._send_empty(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, headers)
                return
            status, start, length = HTTPStatus.PARTIAL_CONTENT, first, last - first + 1
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        kind = fault.kind if fault is not None else "ok"
        sent = length
        if fault is not None and kind in ("truncate", "no_content_length_truncate"):
            sent = min(length, fault.n_bytes)
            self.close_connection = True
        headers["Content-Type"] = "application/octet-stream"
        if kind == "no_content_length_truncate":
            headers["Connection"] = "close"
        else:
            headers["Content-Length"] = str(length)
        # Logged before anything is sent, so a client that has its answer finds it logged.
        self.server.mirror._log_response(LoggedResponse(self._rel, status, sent * body))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            flip = _corrupt_window(length) if kind == "corrupt" else None
            self._copy(file, start, sent, flip)

    def _copy(self, file: Path, start: int, count: int, flip: tuple[int, int] | None) -> None:
        """Stream `count` bytes of `file` from `start`, XOR-ing the body bytes in `flip`."""
        pos = 0
        try:
            with open(file, "rb") as fh:
                fh.seek(start)
                while pos < count and (chunk := fh.read(min(COPY_CHUNK, count - pos))):
                    if flip is not None:
                        chunk = _flip(chunk, pos, flip)
                    self.wfile.write(chunk)
                    pos += len(chunk)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _send_empty(self, code: int, headers: Mapping[str, str] | None = None) -> None:
        self.server.mirror._log_response(LoggedResponse(self._rel, int(code), 0))
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if code != HTTPStatus.NOT_MODIFIED:
            self.send_header("Content-Length", "0")
        self.end_headers()


def _corrupt_window(length: int) -> tuple[int, int]:
    mid = length // 2
    return max(0, mid - CORRUPT_SPAN // 2), min(length, mid + CORRUPT_SPAN // 2)


def _flip(chunk: bytes, pos: int, window: tuple[int, int]) -> bytes:
    lo, hi = max(window[0], pos) - pos, min(window[1], pos + len(chunk)) - pos
    if lo >= hi:
        return chunk
    return chunk[:lo] + bytes(b ^ 0xFF for b in chunk[lo:hi]) + chunk[hi:]


def _file_etag(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as fh:
        while block := fh.read(COPY_CHUNK):
            digest.update(block)
    return f'"{digest.hexdigest()[:16]}"'


def _http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


def _parse_http_date(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(email.utils.parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError):
        return None


class HttpMirror:
    """Serve `root` on http://127.0.0.1:<free port>/; a context manager."""

    def __init__(self, root: Path | str, *, ranges: bool = True) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.ranges = ranges
        self.request_log: list[LoggedRequest] = []
        self.response_log: list[LoggedResponse] = []
        self.server_errors: list[BaseException] = []  # unexpected handler exceptions
        self._faults: dict[str, deque[Fault]] = {}
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._etags: dict[tuple[str, int, int, int, int], str] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> Self:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.mirror = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        with self._lock:
            for conn in list(self._connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType
    ) -> None:
        self.stop()

    # -- addresses and content
    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("HttpMirror is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url_for(self, rel_path: str) -> str:
        return f"{self.base_url}/{quote(rel_path.lstrip('/'))}"

    def put(self, rel_path: str, data: bytes, *, mtime: datetime | float | None = None) -> Path:
        """Write a file under root (optionally with its mtime = the served Last-Modified)."""
        target = self.root / rel_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        if mtime is not None:
            self.set_mtime(rel_path, mtime)
        return target

    def set_mtime(self, rel_path: str, mtime: datetime | float) -> None:
        stamp = mtime.timestamp() if isinstance(mtime, datetime) else float(mtime)
        os.utime(self.root / rel_path.lstrip("/"), (stamp, stamp))

    def remove(self, rel_path: str) -> None:
        (self.root / rel_path.lstrip("/")).unlink(missing_ok=True)

    # -- faults and the log
    def inject(self, rel_path: str, *faults: Fault) -> None:
        """Queue faults for a path; each request for it consumes the next one."""
        with self._lock:
            self._faults.setdefault(rel_path.lstrip("/"), deque()).extend(faults)

    def pending_faults(self, rel_path: str) -> int:
        with self._lock:
            return len(self._faults.get(rel_path.lstrip("/"), ()))

    def requests_for(self, rel_path: str, method: str | None = None) -> list[LoggedRequest]:
        rel = rel_path.lstrip("/")
        with self._lock:
            return [r for r in self.request_log if r.path == rel and method in (None, r.method)]

    def responses_for(self, rel_path: str) -> list[LoggedResponse]:
        rel = rel_path.lstrip("/")
        with self._lock:
            return [r for r in self.response_log if r.path == rel]

    def clear_log(self) -> None:
        with self._lock:
            self.request_log.clear()
            self.response_log.clear()

    # -- used by the handler
    def _log(self, entry: LoggedRequest) -> None:
        with self._lock:
            self.request_log.append(entry)

    def _log_response(self, entry: LoggedResponse) -> None:
        with self._lock:
            self.response_log.append(entry)

    def _next_fault(self, rel: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(rel)
            return queue.popleft() if queue else None

    def _etag_for(self, file: Path, st: os.stat_result) -> str:
        """Quoted sha256 prefix of the content, cached while the file is untouched."""
        key = (str(file), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            cached = self._etags.get(key)
        if cached is None:
            cached = _file_etag(file)
            with self._lock:
                self._etags[key] = cached
        return cached

    def _resolve(self, rel: str) -> Path | None:
        target = (self.root / rel).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            return None
        return target

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)
