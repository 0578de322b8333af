"""A loopback fake of TMDb API v3 (`/3/movie/{id}`) and its image server (`/t/p/{size}/{file}`).

    with FakeTmdb(api_key="k") as tmdb:
        tmdb.add_movie(603, "/matrix.jpg")       # 200 {"poster_path": "/matrix.jpg"}
        tmdb.add_movie(604, None)                # 200 {"poster_path": null}
        tmdb.queue(603, Answer.status(429, retry_after="1"), Answer.slow(3))
        tmdb.queue(605, Answer.status(503, sticky=True))  # 503 forever
        client = TmdbClient("k", api_base_url=tmdb.api_base_url)

Unknown ids answer 404 (with `every_id_a_movie`, poster `/<id>.jpg`); a wrong or missing key
(query `api_key` or `Authorization: Bearer`) answers 401 with TMDb's JSON body. Queued answers
are consumed one per request (a sticky one stays). Every request is logged (`requests`: id,
monotonic time, raw path, headers), so tests count requests per id and measure the gaps between
them. Any `/t/p/<size>/<file>` is a tiny valid PNG, so a browser can render a "poster" from
loopback.
"""

from __future__ import annotations

import contextlib
import json
import re
import struct
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import NamedTuple, Self
from urllib.parse import parse_qs, urlsplit

_MOVIE = re.compile(r"^/3/movie/(\d+)$")
_IMAGE = re.compile(r"^/t/p/[a-z0-9]+/[\w.-]+$")
INVALID_KEY = {"status_code": 7, "status_message": "Invalid API key: You must be granted a "
               "valid key.", "success": False}  # fmt: skip
NOT_FOUND = {"status_code": 34, "status_message": "The resource you requested could not be "
             "found.", "success": False}  # fmt: skip


def tiny_png(width: int = 2, height: int = 3, rgb: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    """A valid RGB PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


POSTER_PNG = tiny_png()


@dataclass(frozen=True)
class Answer:
    """One queued misbehaviour for a movie id."""

    code: int = 0  # 0: answer normally (after `sleep_s`)
    retry_after: str | None = None
    sleep_s: float = 0.0
    sticky: bool = False  # never consumed: every later request gets it too

    @classmethod
    def status(cls, code: int, *, retry_after: str | None = None, sticky: bool = False) -> Answer:
        """Answer `code` (with TMDb's JSON error body and an optional Retry-After)."""
        return cls(code=code, retry_after=retry_after, sticky=sticky)

    @classmethod
    def slow(cls, seconds: float, *, sticky: bool = False) -> Answer:
        """Sleep `seconds` (past the client's timeout), then answer normally."""
        return cls(sleep_s=seconds, sticky=sticky)


class LoggedRequest(NamedTuple):
    tmdb_id: int | None  # None for image and other paths
    at: float  # time.monotonic() when the request arrived
    path: str  # raw path with the query string
    headers: dict[str, str]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeTmdb

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        """Clients that hung up (timeouts) are expected."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        fake = self.server.fake
        parts = urlsplit(self.path)
        movie = _MOVIE.match(parts.path)
        tmdb_id = int(movie.group(1)) if movie else None
        fake._log(LoggedRequest(tmdb_id, time.monotonic(), self.path, dict(self.headers.items())))
        if _IMAGE.match(parts.path):
            self._send(200, POSTER_PNG, "image/png")
            return
        if tmdb_id is None:
            self._json(404, NOT_FOUND)
            return
        if not fake._authorised(parse_qs(parts.query), self.headers.get("Authorization")):
            self._json(401, INVALID_KEY)
            return
        answer = fake._next_answer(tmdb_id)
        if answer is not None and answer.sleep_s:
            time.sleep(answer.sleep_s)
        if answer is not None and answer.code:
            extra = {"Retry-After": answer.retry_after} if answer.retry_after else {}
            body = {"status_code": 25, "status_message": f"HTTP {answer.code}", "success": False}
            self._json(answer.code, body, extra)
            return
        with fake._lock:
            known = tmdb_id in fake.movies or fake.every_id_a_movie
            poster = fake.movies.get(tmdb_id, f"/{tmdb_id}.jpg")
        if not known:
            self._json(404, NOT_FOUND)
            return
        self._json(200, {"id": tmdb_id, "title": f"Movie {tmdb_id}", "poster_path": poster})

    def _json(self, code: int, body: object, headers: dict[str, str] | None = None) -> None:
        self._send(code, json.dumps(body).encode(), "application/json;charset=utf-8", headers)

    def _send(
        self, code: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        with contextlib.suppress(OSError):  # a client that timed out is gone
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)


class FakeTmdb:
    """TMDb on http://127.0.0.1:<free port>; a context manager."""

    def __init__(self, api_key: str = "fake-tmdb-key", *, every_id_a_movie: bool = False) -> None:
        self.api_key = api_key
        self.every_id_a_movie = every_id_a_movie  # unknown ids: a movie with poster /<id>.jpg
        self.movies: dict[int, str | None] = {}
        self.requests: list[LoggedRequest] = []
        self._answers: dict[int, deque[Answer]] = {}
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
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

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeTmdb is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def api_base_url(self) -> str:
        return f"{self.url}/3"

    @property
    def image_base_url(self) -> str:
        return f"{self.url}/t/p/w342"

    def add_movie(self, tmdb_id: int, poster_path: str | None) -> None:
        """A movie answered 200 with this `poster_path` (None: JSON null)."""
        with self._lock:
            self.movies[tmdb_id] = poster_path

    def queue(self, tmdb_id: int, *answers: Answer) -> None:
        """Answers given to the next requests for `tmdb_id`, before its normal one."""
        with self._lock:
            self._answers.setdefault(tmdb_id, deque()).extend(answers)

    def clear_answers(self, tmdb_id: int) -> None:
        with self._lock:
            self._answers.pop(tmdb_id, None)

    def requests_for(self, tmdb_id: int) -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.requests if r.tmdb_id == tmdb_id]

    def movie_requests(self) -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.requests if r.tmdb_id is not None]

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def _log(self, entry: LoggedRequest) -> None:
        with self._lock:
            self.requests.append(entry)

    def _authorised(self, query: dict[str, list[str]], authorization: str | None) -> bool:
        return query.get("api_key") == [self.api_key] or authorization == f"Bearer {self.api_key}"

    def _next_answer(self, tmdb_id: int) -> Answer | None:
        with self._lock:
            queue = self._answers.get(tmdb_id)
            if not queue:
                return None
            return queue[0] if queue[0].sticky else queue.popleft()
