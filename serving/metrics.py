"""Prometheus metrics of the service (``GET /metrics``), declared once here.

With ``serve --workers N`` each worker process exposes its own counters; Prometheus scrapes
each replica/worker and sums (set ``PROMETHEUS_MULTIPROC_DIR`` for one merged endpoint).
"""

from __future__ import annotations

import time
from collections import Counter as Counter_
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

LATENCY = Histogram(
    "tastemaker_request_seconds",
    "Time in the app per request, by route (shed requests included, status says which)",
    ["route", "status"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
REQUESTS_BY_SOURCE = Counter(
    "tastemaker_recommendations_total",
    "Served recommendation lists by how they were produced",
    ["source"],  # precomputed | model | trending
)
ITEMS_BY_SOURCE = Counter(
    "tastemaker_recommended_items_total",
    "Served items by source",
    ["source"],  # precomputed | model | trending | backfill
)
STORE_ERRORS = Counter(
    "tastemaker_online_store_errors_total",
    "Online-store lookups that failed (error), timed out (timeout) or were skipped while the "
    "store cooled down after a failure (skipped); each one was served trending",
    ["kind"],
)
SHED = Counter(
    "tastemaker_shed_total",
    "Requests answered 503 + Retry-After without work, by why",
    ["reason"],  # queue_time | inflight
)
EVENTS = Counter(
    "tastemaker_events_total",
    "Events accepted by POST /v1/events and impressions logged from served slates, by sink",
    ["kind", "sink"],
)
BATCH_SIZE = Histogram(
    "tastemaker_realtime_batch_rows",
    "Rows scored together by one real-time micro-batch (serving.batcher)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
BATCH_WAIT = Histogram(
    "tastemaker_realtime_batch_wait_seconds",
    "How long a micro-batch's first row waited for the batch to go",
    buckets=(0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005),
)
BUNDLE_INFO = Gauge("tastemaker_bundle_info", "The served bundle (value 1)", ["version"])
BUNDLE_CREATED = Gauge(
    "tastemaker_bundle_created_timestamp_seconds", "When the served bundle was published"
)
BUNDLE_AGE = Gauge("tastemaker_bundle_age_seconds", "Age of the served bundle")
READY = Gauge("tastemaker_ready", "1 when /readyz says ready")
_bundle_versions: set[str] = set()


def set_bundle(version: str, created_at: str | None) -> None:
    """Publish the served bundle's version and age (called at start and after each swap)."""
    for old in _bundle_versions - {version}:
        BUNDLE_INFO.remove(old)
    _bundle_versions.intersection_update({version})
    BUNDLE_INFO.labels(version=version).set(1)
    _bundle_versions.add(version)
    if created_at:
        try:
            ts = datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return
        BUNDLE_CREATED.set(ts)
        BUNDLE_AGE.set_function(lambda: time.time() - ts)


_requests: dict[str, Any] = {}
_items: dict[str, Any] = {}


def count_served(source: str, item_sources: list[str]) -> None:
    """Count one served list and its items (label children cached: ``labels()`` is slow)."""
    child = _requests.get(source)
    if child is None:
        child = _requests[source] = REQUESTS_BY_SOURCE.labels(source=source)
    child.inc()
    for s, n in Counter_(item_sources).items():
        item = _items.get(s)
        if item is None:
            item = _items[s] = ITEMS_BY_SOURCE.labels(source=s)
        item.inc(n)
