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
against the account table and the catalogue stay in ingest). Before that, each event is
rebuilt from the raw contract's fields only (:func:`clean_event`): unknown fields are dropped,
a string over ``MAX_FIELD_CHARS``, an integer outside 64 bits, a nested value or a lone
surrogate refuses the event with a reason naming the field, never its value. An app event's
``event_id`` is stored as ``app-<event_id>``, so it can never equal a served impression's
``<request_id>-<position>`` (ingest keeps the first of two equal ids).

The sink is bounded in bytes (``max_bytes``): past it, :meth:`EventSink.submit` raises
:class:`SinkFull` (the route answers 503) and served slates are dropped and counted. While
writes fail (the bus is down), :attr:`EventSink.healthy` is false: ``/readyz`` answers 503 and
intake refuses events instead of queueing them. Counters count lines once they are written.
"""

from __future__ import annotations

import gzip
import logging
import math
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
from data.schemas import RAW_PARSE_SCHEMA
from serving.metrics import EVENTS
from serving.schemas import user_id_problem

log = logging.getLogger("tastemaker.serving")


@dataclass(frozen=True)
class ServedSlate:
    user_id: str
    request_id: str
    bundle_version: str
    source: str
    artist_ids: tuple[str, ...]
    served_ms: int


MAX_FIELD_CHARS = 256  # ids, timestamps, device names: anything longer is refused
APP_ID_PREFIX = "app-"  # app events' event_id namespace (served impressions have none)
_FIELDS = frozenset(RAW_PARSE_SCHEMA.names) - {"server_ts"}
_INT64 = (-(2**63), 2**63 - 1)


def clean_event(event: Any) -> tuple[dict[str, Any] | None, str]:
    """(the event with the raw contract's fields only, "") or (None, reason)."""
    if not isinstance(event, dict):
        return None, "not_an_object"
    clean: dict[str, Any] = {}
    for name in _FIELDS:
        value = event.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            if len(value) > MAX_FIELD_CHARS:
                return None, f"too_long:{name}"
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return None, f"bad_text:{name}"
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, f"bad_type:{name}"
        elif (
            isinstance(value, int)
            and not _INT64[0] <= value <= _INT64[1]
            or isinstance(value, float)
            and not math.isfinite(value)
        ):
            return None, f"out_of_range:{name}"
            if any(ord(c) < 32 or ord(c) == 127 for c in value):
                return None, f"control_characters:{name}"
        clean[name] = value
    user_id = clean.get("user_id")
    if isinstance(user_id, str) and user_id_problem(user_id):
        return None, "bad_user_id"  # the rules the routes apply (and check tokens against)
    if isinstance(clean.get("event_id"), str):
        clean["event_id"] = APP_ID_PREFIX + clean["event_id"]
    return clean, ""


def validate_events(events: Sequence[Any], now_ms: int) -> tuple[list[bytes], list]:
    """(accepted raw lines, [(index, reason)...]) with ingest's parser and row rules.

    The server stamps ``server_ts`` (receipt time), as the app's gateway does for ingest.
    """
    rejected: list[tuple[int, str]] = []
    lines: list[bytes] = []
    index: list[int] = []  # line i of the parsed object is event index[i]
    for i, event in enumerate(events):
        clean, reason = clean_event(event)
        if clean is None:
            rejected.append((i, reason))
            continue
        lines.append(orjson.dumps({**clean, "server_ts": now_ms}))
        index.append(i)
    if not lines:
        return [], sorted(rejected)
    parsed = parse_object(b"\n".join(lines))
    rejected += [
        (index[n - 1], r)
        for n, r in zip(parsed.rejected.line_no, parsed.rejected.reason, strict=True)
    ]
    codes, _ = validate_rows(parsed.table, IngestRules(), Lookups(), now_ms)
    accepted = []
    for line_no, code in zip(parsed.line_no.tolist(), codes.tolist(), strict=True):
        if code:
            rejected.append((index[line_no - 1], reason_name(code)))
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


class SinkUnavailable(RuntimeError):
    """The sink cannot take more now (its queue is full, or writes are failing): 503."""


SLATE_ITEM_BYTES = 320  # about one impression line, for the byte budget of a queued slate


class EventSink:
    """Batches raw event lines to the Redis stream or the raw object store, off-request."""

    def __init__(
        self,
        bus_url: str | None,
        store_url: str,
        stream: str = DEFAULT_STREAM,
        flush_s: float = 0.25,
        batch: int = 2000,
        max_bytes: int = 64 << 20,
        timeout_s: float = 1.0,
        ping_s: float = 1.0,
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
        self.max_bytes = max_bytes
        self.ping_s = ping_s
        self._slates: deque[ServedSlate] = deque()
        self._lines: deque[bytes] = deque()
        self._bytes = 0  # queued, slates estimated at SLATE_ITEM_BYTES an item
        self._lock = threading.Lock()  # guards _bytes (request path vs the sink thread)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-sink", daemon=True)
        self._last_ok = time.monotonic()
        self.healthy = True  # False while writes (or, idle, a ping of the bus) fail
        self.written = 0
        self.dropped = 0  # impressions of slates dropped because the queue was full

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        try:
            self.flush()
        except Exception:
            log.exception("event sink (%s): %d bytes not written at stop", self.sink, self._bytes)

    def log_slate(self, slate: ServedSlate) -> None:
        """Request path: O(1), no I/O. Dropped (and counted) when the queue is full."""
        size = SLATE_ITEM_BYTES * len(slate.artist_ids)
        with self._lock:
            if self._bytes + size > self.max_bytes:
                self.dropped += len(slate.artist_ids)
                EVENTS.labels(kind="impression", sink="dropped").inc(len(slate.artist_ids))
                return
            self._bytes += size
        self._slates.append(slate)

    def submit(self, lines: list[bytes]) -> None:
        """Queue validated app events; raises :class:`SinkUnavailable` (nothing queued) when
        writes are failing or the lines do not fit the byte budget."""
        if not self.healthy:
            raise SinkUnavailable(f"the event {self.sink} is not answering")
        size = sum(map(len, lines))
        with self._lock:
            if self._bytes + size > self.max_bytes:
                raise SinkUnavailable("the event queue is full")
            self._bytes += size
        self._lines.extend(lines)
        if len(self._lines) >= self.batch:
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            try:
                if not self.flush() and time.monotonic() - self._last_ok > self.ping_s:
                    self._ping()
            except Exception:  # the sink is down: keep serving, keep the queue, retry later
                log.exception("event sink (%s) failed; will retry", self.sink)

    def _ping(self) -> None:
        """Idle: check the bus answers, so /readyz says so before an event is lost."""
        if self._redis is not None:
            try:
                self._redis.ping()
            except Exception:
                self.healthy = False
                raise
        self.healthy = True
        self._last_ok = time.monotonic()

    def flush(self) -> int:
        """Write everything queued now; returns lines written."""
        by_day: dict[str, list[bytes]] = {}  # raw-store partition -> lines
        n_impressions = n_app = 0
        released = 0
        while self._slates:
            slate = self._slates.popleft()
            lines = impression_lines(slate)
            by_day.setdefault(slate_day(slate), []).extend(lines)
            n_impressions += len(lines)
            released += SLATE_ITEM_BYTES * len(lines)
        while self._lines:  # app events: their day is in the line
            line = self._lines.popleft()
            by_day.setdefault(partition_of(line), []).append(line)
            n_app += 1
            released += len(line)
        n = n_impressions + n_app
        if not n:
            return 0
        try:
            self._write(by_day)
        except Exception:
            self.healthy = False
            kept = 0
            for part in by_day.values():  # keep them for the next try (as lines now)
                self._lines.extendleft(reversed(part))
                kept += sum(map(len, part))
            with self._lock:
                self._bytes += kept - released
            raise
        with self._lock:
            self._bytes -= released
        self.healthy = True
        self._last_ok = time.monotonic()
        self.written += n
        # counted once written (a retried batch of re-queued impressions counts as app lines)
        if n_impressions:
            EVENTS.labels(kind="impression", sink=self.sink).inc(n_impressions)
        if n_app:
            EVENTS.labels(kind="app", sink=self.sink).inc(n_app)
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
