"""Download failures and the one rule for which of them a retry can fix (docs/architecture.md §4).

`is_transient_status` decides it for HTTP answers: 408, 425, 429 and every 5xx may not repeat.
The downloader retries those itself (`with_retries`); `is_permanent_download_error` tells the
orchestration which failures a later retry of the whole step cannot fix either.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from recommender_lib.sources.integrity import IntegrityError

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_RETRY_AFTER_S = 30.0
# 4xx answers that a later attempt may not repeat.
TRANSIENT_CLIENT_ERRORS = frozenset({408, 425, 429})
# Answers that say the file is not there (an optional checksum file may be missing).
NOT_FOUND = (404, 410)


class DownloadError(Exception):
    """A network, HTTP or file-access failure (after retries where they apply)."""

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class Retryable(Exception):
    """A transient failure: try again after a delay."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def is_transient_status(status: int) -> bool:
    """True for HTTP answers a later attempt may not repeat: 408, 425, 429 and 5xx."""
    return status in TRANSIENT_CLIENT_ERRORS or 500 <= status < 600


def is_permanent_download_error(exc: BaseException) -> bool:
    """True for failures a retry cannot fix: a verified body that is bad, or a 4xx answer.

    Raise such errors as `dg.Failure(..., allow_retries=False)` so the step fails at once
    instead of waiting through `network_retry_policy`'s delays.
    """
    if isinstance(exc, IntegrityError):
        return True
    if isinstance(exc, DownloadError) and exc.status is not None:
        return 400 <= exc.status < 500 and not is_transient_status(exc.status)
    return False


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header; None when absent, bad or too far away."""
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


def with_retries(url: str, attempt: Callable[[], T], *, retries: int, backoff_s: float) -> T:
    """Run `attempt`, retrying Retryable failures with exponential backoff."""
    last: Retryable | None = None
    for n in range(retries + 1):
        try:
            return attempt()
        except Retryable as exc:
            last = exc
            if n == retries:
                break
            delay = backoff_s * 2**n if exc.retry_after is None else exc.retry_after
            log.warning(
                "%s: attempt %d/%d failed (%s); retrying in %.2fs",
                url,
                n + 1,
                retries + 1,
                exc,
                delay,
            )
            time.sleep(delay)
    assert last is not None
    raise DownloadError(
        f"GET {url} failed after {retries + 1} attempts: {last}",
        url=url,
        status=last.status,
    ) from last
