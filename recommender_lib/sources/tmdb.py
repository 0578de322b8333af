"""TMDb API v3 client: the poster path of one movie, rate limited and retried.

    with TmdbClient(api_key) as client:
        lookups = client.posters([603, 550])  # PosterLookup per id, in order

`GET {api_base}/movie/{tmdb_id}` answers JSON whose `poster_path` is `/abc.jpg` or null. A v3
API key travels as the `api_key` query parameter; a v4 read access token (a JWT, `eyJ…`) as
`Authorization: Bearer`. Requests share one token bucket (`requests_per_second`, default 20/s,
half TMDb's ~40/s). 408/425/429/5xx answers, timeouts and dropped connections are retried with
backoff (`retry.with_retries`; a 429's `Retry-After` is honoured, capped, and pauses every
worker); after the last attempt the lookup is `failed`, never an exception. 404/410 is a final
`not_found`. Any other 4xx (401: the key is wrong) raises `TmdbError` and stops the whole fetch.
The key never appears in errors or logs: messages are redacted and urllib3's request lines too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Self

import requests

from recommender_lib import __version__
from recommender_lib.sources.retry import (
    NOT_FOUND,
    DownloadError,
    Retryable,
    is_transient_status,
    parse_retry_after,
    with_retries,
)

log = logging.getLogger(__name__)

ENV_TMDB_API_KEY = "TMDB_API_KEY"
TMDB_API_BASE_URL = "https://api.themoviedb.org/3"
TMDB_IMAGE_BASE_URL = "https://image.tmdb.org/t/p/w342"
DEFAULT_REQUESTS_PER_SECOND = 20.0
REDACTED = "***"


class PosterStatus(StrEnum):
    """What a lookup found: a poster, a movie without one, no such movie, or no answer."""

    FOUND = "found"
    MISSING = "missing"
    NOT_FOUND = "not_found"
    FAILED = "failed"


@dataclass(frozen=True)
class PosterLookup:
    """The answer for one TMDb id; `poster_path` only when `status` is FOUND."""

    tmdb_id: int
    status: PosterStatus
    poster_path: str | None = None
    http_status: int | None = None
    error: str | None = None


class TmdbError(RuntimeError):
    """TMDb refused the requests themselves (bad key, forbidden): nothing more can be fetched."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TokenBucket:
    """Thread-safe token bucket: `rate` tokens a second, at most `burst` saved up.

    `hold(seconds)` lends no token before then (a server asked everyone to wait).
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"requests per second must be > 0, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.rate, self.burst = float(rate), burst
        self._clock, self._sleep = clock, sleep
        self._tokens = float(burst)
        self._stamp = clock()
        self._hold_until = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Take one token, sleeping until one is there (waiters queue on the lock)."""
        with self._lock:
            while True:
                now = self._clock()
                elapsed = max(0.0, now - self._stamp)  # the stamp is in the future while held
                self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
                self._stamp = max(self._stamp, now)
                if now < self._hold_until:
                    wait = self._hold_until - now
                elif self._tokens >= 1:
                    self._tokens -= 1
                    return
                else:
                    wait = (1 - self._tokens) / self.rate
                self._sleep(wait)

    def hold(self, seconds: float) -> None:
        """Lend no token for `seconds` from now; tokens accrue again only after that."""
        with self._lock:
            self._hold_until = max(self._hold_until, self._clock() + seconds)
            self._stamp = max(self._stamp, self._hold_until)
            self._tokens = 0.0


def is_bearer_token(api_key: str) -> bool:
    """True for a v4 read access token (a JWT: `eyJ…` in three dot-separated parts)."""
    return api_key.startswith("eyJ") and api_key.count(".") == 2


class _RedactFilter(logging.Filter):
    """Replaces the key in records of a logger (urllib3 logs request lines at DEBUG)."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.secret in message:
            record.msg, record.args = message.replace(self.secret, REDACTED), ()
        return True


_URLLIB3_LOGGER = logging.getLogger("urllib3.connectionpool")


class TmdbClient:
    """Poster lookups against TMDb API v3 (see the module docstring for the rules)."""

    def __init__(
        self,
        api_key: str,
        *,
        api_base_url: str = TMDB_API_BASE_URL,
        requests_per_second: float = DEFAULT_REQUESTS_PER_SECOND,
        burst: int = 5,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_retry_after_s: float = 10.0,
        workers: int = 4,
    ) -> None:
        if not api_key:
            raise ValueError(f"a TMDb API key is required (set {ENV_TMDB_API_KEY})")
        self.api_base_url = api_base_url.rstrip("/")
        self.bucket = TokenBucket(requests_per_second, burst)
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.max_retry_after_s, self.workers = max_retry_after_s, max(1, workers)
        self._secret = api_key
        self._params = {} if is_bearer_token(api_key) else {"api_key": api_key}
        self._headers = {"Accept": "application/json", "User-Agent": f"cine-reco/{__version__}"}
        if is_bearer_token(api_key):
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._stopped: TmdbError | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._filter = _RedactFilter(api_key)
        _URLLIB3_LOGGER.addFilter(self._filter)

    def redact(self, text: str) -> str:
        """`text` with the API key replaced by `***`."""
        return text.replace(self._secret, REDACTED)

    def movie_url(self, tmdb_id: int) -> str:
        """The request URL without credentials (safe to log)."""
        return f"{self.api_base_url}/movie/{int(tmdb_id)}"

    def posters(self, tmdb_ids: Sequence[int]) -> list[PosterLookup]:
        """One lookup per id, in order, `workers` requests in flight; TmdbError stops them."""
        if self.workers == 1 or len(tmdb_ids) <= 1:
            return [self.poster(i) for i in tmdb_ids]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tmdb")
        return list(self._pool.map(self.poster, tmdb_ids))

    def poster(self, tmdb_id: int) -> PosterLookup:
        """The poster of one movie; transient failures end as a FAILED lookup."""
        url = self.movie_url(tmdb_id)
        try:
            return with_retries(
                url,
                lambda: self._attempt(tmdb_id),
                retries=self.retries,
                backoff_s=self.backoff_s,
            )
        except DownloadError as exc:
            return PosterLookup(
                tmdb_id, PosterStatus.FAILED, http_status=exc.status, error=self.redact(str(exc))
            )

    def _attempt(self, tmdb_id: int) -> PosterLookup:
        if self._stopped is not None:
            raise self._stopped
        self.bucket.acquire()
        try:
            response = self._session().get(
                self.movie_url(tmdb_id),
                params=self._params,
                headers=self._headers,
                timeout=self.timeout_s,
            )
        except requests.Timeout:
            raise Retryable(f"no answer within {self.timeout_s:g}s") from None
        except requests.RequestException as exc:
            raise Retryable(f"{type(exc).__name__}: {self.redact(str(exc))}") from None
        with response:
            return self._answer(tmdb_id, response)

    def _answer(self, tmdb_id: int, response: requests.Response) -> PosterLookup:
        status = response.status_code
        if status == 200:
            return self._parse(tmdb_id, response)
        if status in NOT_FOUND:
            return PosterLookup(tmdb_id, PosterStatus.NOT_FOUND, http_status=status)
        if is_transient_status(status):
            wait = parse_retry_after(response.headers.get("Retry-After"))
            if wait is not None:
                wait = min(wait, self.max_retry_after_s)
                self.bucket.hold(wait)
            raise Retryable(f"HTTP {status}", status=status, retry_after=wait)
        self._stopped = TmdbError(self._refusal(tmdb_id, response), status=status)
        raise self._stopped

    def _refusal(self, tmdb_id: int, response: requests.Response) -> str:
        status = response.status_code
        try:
            detail = str(response.json().get("status_message") or "")
        except (ValueError, AttributeError):
            detail = ""
        hint = {
            401: f"the API key was refused: check {ENV_TMDB_API_KEY}",
            403: "access forbidden for this key",
        }.get(status, "a request TMDb will not answer")
        said = f" (TMDb: {self.redact(detail)[:200]})" if detail else ""
        return f"TMDb answered HTTP {status} for {self.movie_url(tmdb_id)}: {hint}{said}"

    def _parse(self, tmdb_id: int, response: requests.Response) -> PosterLookup:
        try:
            path = response.json().get("poster_path")
        except (ValueError, AttributeError):
            return PosterLookup(
                tmdb_id, PosterStatus.FAILED, http_status=200, error="answer is not a JSON object"
            )
        if path is None or path == "":
            return PosterLookup(tmdb_id, PosterStatus.MISSING, http_status=200)
        if not isinstance(path, str) or not path.startswith("/"):
            error = f"unexpected poster_path {str(path)[:80]!r}"
            return PosterLookup(tmdb_id, PosterStatus.FAILED, http_status=200, error=error)
        return PosterLookup(tmdb_id, PosterStatus.FOUND, poster_path=path, http_status=200)

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        """Stop the workers, close the connections and stop redacting urllib3's log."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()
        _URLLIB3_LOGGER.removeFilter(self._filter)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
