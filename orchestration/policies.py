"""Retry policies shared by assets that talk to the network."""

from __future__ import annotations

import dagster as dg

from recommender_lib.sources.download import DownloadError
from recommender_lib.sources.integrity import IntegrityError

# For the raw assets: a failed download (after the downloader's own retries of transient HTTP
# errors) is retried as a whole step after 10 s, 30 s and 70 s (Dagster's exponential backoff is
# (2^n - 1) x delay), each moved by up to ±10 s so parallel runs do not retry in lockstep.
network_retry_policy = dg.RetryPolicy(
    max_retries=3,
    delay=10,
    backoff=dg.Backoff.EXPONENTIAL,
    jitter=dg.Jitter.PLUS_MINUS,
)

# 4xx answers that a later attempt may not repeat.
TRANSIENT_CLIENT_ERRORS = frozenset({408, 425, 429})


def is_permanent_download_error(exc: BaseException) -> bool:
    """True for failures a retry cannot fix: a verified body that is bad, or a 4xx answer.

    Raise such errors as `dg.Failure(..., allow_retries=False)` so the step fails at once
    instead of waiting through `network_retry_policy`'s delays.
    """
    if isinstance(exc, IntegrityError):
        return True
    if isinstance(exc, DownloadError) and exc.status is not None:
        return 400 <= exc.status < 500 and exc.status not in TRANSIENT_CLIENT_ERRORS
    return False
