"""Events from the app (``POST /v1/events``) and the impressions of every served slate.

Both leave as raw event lines (the contract ingest reads, ``data/schemas.py``
``RAW_PARSE_SCHEMA``) through one :class:`EventSink`:

* with an event bus (``TASTEMAKER_EVENT_BUS_URL=redis://...``): ``XADD`` to the stream the
  subscriber drains (``data.ingest.subscriber``: key ``tastemaker:events``, field ``event``);
* without one: gzipped JSON lines in the raw object store
  (``events/dt=<UTC date>/serve-<uuid>.jsonl.gz``), where ingest picks them up.

The request path only appends to an in-memory queue (a few microseconds); a daemon thread
turns queued slates into one impression event per item (``request_id``, 1-based ``position``,
``bundle_version``, ``source``), batches, and writes every ``flush_s`` or ``batch`` lines. The
queue is bounded: when the sink cannot keep up, the oldest impressions are dropped and
counted (a lost impression log must not take the service down).

Validation of app events reuses ingest's rules (:func:`validate_events`): the same parser and
the same row reasons, so an event accepted here is one ingest will accept (reference checks
against the account table and the catalogue stay in ingest).
"""

from __future__ import annotations

import gzip
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from data.ingest.parse import parse_object
from data.ingest.subscriber import DEFAULT_STREAM, EVENT_FIELD, partition_of
from data.ingest.validate import IngestRules, Lookups, reason_name, validate_rows
from serving.metrics import EVENTS

log = logging.getLogger("tastemaker.serving")


@dataclass(frozen=True)
class ServedSlate:
    user_id: str
    request_id: str
    bundle_version: str
    source: str
    artist_ids: tuple[str, ...]
    served_ms: int


def validate_events(events: Sequence[dict[str, Any]], now_ms: int) -> tuple[list[bytes], list]:
    """(accepted raw lines, [(index, reason)...]) with ingest's parser and row rules.

    The server stamps ``server_ts`` (receipt time), as the app's gateway does for ingest.
    """
    lines = [orjson.dumps({**e, "server_ts": now_ms}) for e in events]
    parsed = parse_object(b"\n".join(lines))
    rejected = [
        (n - 1, r) for n, r in zip(parsed.rejected.line_no, parsed.rejected.reason, strict=True)
    ]
    codes, _ = validate_rows(parsed.table, IngestRules(), Lookups(), now_ms)
    accepted = []
    for line_no, code in zip(parsed.line_no.tolist(), codes.tolist(), strict=True):
        if code:
            rejected.append((line_no - 1, reason_name(code)))
        else:
            accepted.append(lines[line_no - 1])
    return accepted, sorted(rejected)


def impression_lines(slate: ServedSlate) -> list[bytes]:
    """One raw impression event per item; ``event_id`` = ``<request_id>-<position>``, so a
    slate logged twice (a retried flush) dedupes in ingest.

    The fields every item shares are serialised once per slate and spliced after the per-item
    ones (profiled under load: one ``orjson.dumps`` per item was ~1.4 us of the sink's time).
    """
    ts = datetime.fromtimestamp(slate.served_ms / 1000, tz=timezone.utc).isoformat()
    shared = orjson.dumps(
        {
            "event_type": "impression",
            "user_id": slate.user_id,
            "client_ts": ts,
            "server_ts": slate.served_ms,
            "request_id": slate.request_id,
            "bundle_version": slate.bundle_version,
            "source": slate.source,
        }
    )[1:]  # without the opening brace
    event_id = orjson.dumps(slate.request_id)[:-1]  # '"<request_id>' (JSON-escaped)
    return [
        b'{"event_id":%s-%d","artist_id":%s,"position":%d,%s'
        % (event_id, pos, orjson.dumps(artist), pos, shared)
        for pos, artist in enumerate(slate.artist_ids, start=1)
    ]


def slate_day(slate: ServedSlate) -> str:
    """The raw-store partition (UTC date of ``server_ts``) of a slate's impressions."""
    return datetime.fromtimestamp(slate.served_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


class EventSink:
    """Batches raw event lines to the Redis stream or the raw object store, off-request."""

    def __init__(
        self,
        bus_url: str | None,
        store_url: str,
        stream: str = DEFAULT_STREAM,
        flush_s: float = 0.25,
        batch: int = 2000,
        max_queued: int = 100_000,
        timeout_s: float = 1.0,
    ) -> None:
        self.sink = "stream" if bus_url else "object_store"
        self._redis: Any = None
        self._store: Any = None
        if bus_url:
            import redis

            self._redis = redis.Redis.from_url(
                bus_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
            )
        else:
            from data.ingest.objectstore import ObjectStore

            self._store = ObjectStore(store_url)
        self.stream = stream
        self.flush_s, self.batch = flush_s, batch
        self._slates: deque[ServedSlate] = deque(maxlen=max_queued)
        self._lines: deque[bytes] = deque(maxlen=max_queued)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-sink", daemon=True)
        self.written = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()

    def log_slate(self, slate: ServedSlate) -> None:
        """Request path: O(1), no I/O."""
        if len(self._slates) == self._slates.maxlen:
            EVENTS.labels(kind="impression", sink="dropped").inc(len(slate.artist_ids))
        self._slates.append(slate)

    def submit(self, lines: list[bytes]) -> None:
        self._lines.extend(lines)
        if len(self._lines) >= self.batch:
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the sink is down: keep serving, keep the queue, retry later
                log.exception("event sink (%s) failed; will retry", self.sink)

    def flush(self) -> int:
        """Write everything queued now; returns lines written."""
        by_day: dict[str, list[bytes]] = {}  # raw-store partition -> lines
        n_impressions = 0
        while self._slates:
            slate = self._slates.popleft()
            by_day.setdefault(slate_day(slate), []).extend(impression_lines(slate))
            n_impressions += len(slate.artist_ids)
        if n_impressions:
            EVENTS.labels(kind="impression", sink=self.sink).inc(n_impressions)
        while self._lines:  # app events: their day is in the line
            line = self._lines.popleft()
            by_day.setdefault(partition_of(line), []).append(line)
        n = sum(map(len, by_day.values()))
        if not n:
            return 0
        try:
            self._write(by_day)
        except Exception:
            for part in by_day.values():  # keep them for the next try
                self._lines.extendleft(reversed(part))
            raise
        self.written += n
        return n

    def _write(self, by_day: dict[str, list[bytes]]) -> None:
        if self._redis is not None:
            pipe = self._redis.pipeline(transaction=False)
            for lines in by_day.values():
                for line in lines:
                    pipe.xadd(self.stream, {EVENT_FIELD: line})
            pipe.execute()
            return
        for day, part in by_day.items():
            body = gzip.compress(b"\n".join(part) + b"\n", compresslevel=1)
            name = f"events/dt={day}/serve-{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}"
            self._store.write_bytes(f"{name}.jsonl.gz", body)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
