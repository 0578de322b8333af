"""Retry policies shared by assets that talk to the network.

Which failures a retry can fix is decided once, in `recommender_lib.sources.retry`
(`is_transient_status`, `is_permanent_download_error`); this module only holds the Dagster side.
"""

from __future__ import annotations

import dagster as dg

# For the raw assets: a failed download (after the downloader's own retries of transient HTTP
# errors) is retried as a whole step after 10 s, 30 s and 70 s (Dagster's exponential backoff is
# (2^n - 1) x delay), each moved by up to ±10 s so parallel runs do not retry in lockstep.
network_retry_policy = dg.RetryPolicy(
    max_retries=3,
    delay=10,
    backoff=dg.Backoff.EXPONENTIAL,
    jitter=dg.Jitter.PLUS_MINUS,
)
