"""Prometheus metrics of one app, in its own `CollectorRegistry` (several apps per process work).

HTTP metrics are labelled by route template (`/titles/{ref}/similar`), never the raw path; the
model metrics are read from the `ModelStore` at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from recommender_lib.sources.feedback.events import FeedbackEvent
    from serving.model_store import ModelStore

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class StoreCollector(Collector):
    """`cine_model_reloads_total`, `cine_model_reload_failures_total`, `cine_model_version_info`,
    `cine_model_fallback`."""

    def __init__(self, store: ModelStore) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        store = self._store
        yield CounterMetricFamily(
            "cine_model_reloads", "Model versions loaded and swapped in.", value=store.reloads
        )
        yield CounterMetricFamily(
            "cine_model_reload_failures",
            "Failed attempts to resolve, download, verify or load a model version.",
            value=store.reload_failures,
        )
        info = GaugeMetricFamily(
            "cine_model_version_info",
            "1 for the model version being served.",
            labels=["version", "bundle_version"],
        )
        current, fallback = store.current, store.fallback
        if current is not None:
            info.add_metric([current.registry_version or "local", current.model_version], 1.0)
        yield info
        yield GaugeMetricFamily(
            "cine_model_fallback",
            "1 while the served version is not the one the alias names (it did not load).",
            value=float(fallback is not None and current is not None),
        )


class ServingMetrics:
    """The metrics of one app; `exposition()` renders them in the Prometheus text format."""

    def __init__(self, store: ModelStore) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.recommendation_duration = Histogram(
            "cine_recommendation_duration_seconds",
            "Time in the recommendation engine per request (kind: ratings, user, app_user, "
            "scores).",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.feedback_events = Counter(
            "cine_feedback_events",
            "Feedback events stored (accepted) or ignored as resent (duplicate), by event type.",
            ["type", "status"],
            registry=self.registry,
        )
        self.feedback_rejected = Counter(
            "cine_feedback_rejected",
            "Feedback events rejected, by reason (the first offending field, unknown_title, "
            "invalid).",
            ["reason"],
            registry=self.registry,
        )
        self.registry.register(StoreCollector(store))
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def count_feedback(
        self, stored: Sequence[FeedbackEvent], statuses: Sequence[str], reasons: Sequence[str]
    ) -> None:
        """Count one batch: `stored` are the valid events in order, `statuses` the status of
        every event of the batch (rejected ones included), `reasons` one per rejected event."""
        kept = iter(stored)
        for status in statuses:
            if status != "rejected":
                self.feedback_events.labels(next(kept).type, status).inc()
        for reason in reasons:
            self.feedback_rejected.labels(reason).inc()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one request; unknown methods are labelled OTHER (bounded label values)."""
        key = (route, method if method in METHODS else "OTHER", status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(key[0], key[1], str(status)),
                self.request_duration.labels(key[0], key[1]),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
