"""Event bus -> object store: a Redis Streams consumer-group subscriber, and a publisher.

Delivery is at-least-once. The subscriber writes each batch as gzipped JSON lines to
``events/dt=<UTC date of server_ts>/stream-<first id>-<last id>.jsonl.gz`` in the object
store (an atomic, durable write) and only then XACKs it. A crash between write and ack leaves
the entries pending; on restart the subscriber first re-delivers its own pending entries, then
claims entries other consumers left idle for ``claim_idle_ms``, then reads new ones. A batch
written twice lands in a second file (never overwrites one ingest may have read); ingest
drops the duplicates by ``event_id``. SIGTERM/SIGINT set a stop flag checked between batches:
the batch in hand is written and acked, and the process exits 0.
"""

from __future__ import annotations

import gzip
import logging
import socket
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson
import redis

from data.ingest.job import RAW_SUFFIXES, decompress
from data.ingest.objectstore import ObjectStore, redact_url

log = logging.getLogger("tastemaker.data")
DEFAULT_STREAM = "tastemaker:events"
DEFAULT_GROUP = "tastemaker-ingest"
EVENT_FIELD = b"event"


@dataclass(frozen=True)
class SubscriberConfig:
    stream: str = DEFAULT_STREAM
    group: str = DEFAULT_GROUP
    consumer: str = field(default_factory=socket.gethostname)
    batch_size: int = 5000
    block_ms: int = 1000
    claim_idle_ms: int = 60_000
    prefix: str = "events"
    exit_when_idle: bool = False  # stop when the stream has nothing new (tests, backfills)


def connect(url: str) -> redis.Redis:
    """A client for ``url``, checked with PING; unreachable -> ConnectionError (no password)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        raise ConnectionError(f"cannot reach Redis at {redact_url(url)}: {exc}") from None
    return client


def partition_of(line: bytes) -> str:
    """UTC date of the event's server_ts; ``unknown`` when it has none (ingest judges it)."""
    try:
        server_ts = orjson.loads(line)["server_ts"]
        return datetime.fromtimestamp(server_ts / 1000, tz=timezone.utc).strftime("%Y-%m-%d")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError, OSError):
        return "unknown"


def ensure_group(client: redis.Redis, stream: str, group: str) -> None:
    """Create consumer ``group`` on ``stream`` (and the stream), reading from its start; an
    existing group is kept as it is (its pending entries are what a restart resumes from)."""
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.exceptions.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


@dataclass
class SubscriberStats:
    batches: int = 0
    events: int = 0
    files: list[str] = field(default_factory=list)


class Subscriber:
    def __init__(self, client: redis.Redis, store: ObjectStore, config: SubscriberConfig) -> None:
        self.client, self.store, self.config = client, store, config
        self.stats = SubscriberStats()

    def ensure_group(self) -> None:
        ensure_group(self.client, self.config.stream, self.config.group)

    def _object_name(self, dt: str, first: str, last: str) -> str:
        base = f"{self.config.prefix}/dt={dt}/stream-{first}-{last}"
        name, retry = f"{base}.jsonl.gz", 0
        while self.store.exists(name):  # redelivered batch: never overwrite a written object
            retry += 1
            name = f"{base}-r{retry}.jsonl.gz"
        return name

    def flush(self, entries: list[tuple[bytes, dict]]) -> None:
        """Write ``entries`` durably (one object per event date), then XACK them."""
        if not entries:
            return
        groups: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
        for entry_id, fields in entries:
            line = fields.get(EVENT_FIELD, b"")
            groups[partition_of(line)].append((entry_id.decode(), line))
        for dt, items in sorted(groups.items()):
            payload = b"".join(line.rstrip(b"\n") + b"\n" for _, line in items)
            name = self._object_name(dt, items[0][0], items[-1][0])
            self.store.write_bytes(name, gzip.compress(payload, compresslevel=6))
            self.stats.files.append(name)
        self.client.xack(self.config.stream, self.config.group, *[e for e, _ in entries])
        self.stats.batches += 1
        self.stats.events += len(entries)
        log.info("wrote and acked %d events in %d object(s)", len(entries), len(groups))

    def _read(self, start: str, block: int | None) -> list[tuple[bytes, dict]]:
        cfg = self.config
        reply: Any = self.client.xreadgroup(
            cfg.group, cfg.consumer, {cfg.stream: start}, count=cfg.batch_size, block=block
        )  # [[stream, [(id, fields), ...]]]; fields None for entries deleted meanwhile
        return [(i, f) for _, messages in reply or [] for i, f in messages if f is not None]

    def _claimed(self) -> Iterator[list[tuple[bytes, dict]]]:
        cfg, cursor = self.config, "0-0"
        while True:
            reply = self.client.xautoclaim(
                cfg.stream, cfg.group, cfg.consumer, cfg.claim_idle_ms, cursor, count=cfg.batch_size
            )
            cursor, messages = reply[0], [(i, f) for i, f in reply[1] if f is not None]
            if messages:
                yield messages
            if cursor in (b"0-0", "0-0"):
                return

    def run(self, stop: threading.Event) -> SubscriberStats:
        self.ensure_group()
        while batch := self._read("0", None):  # our own pending entries from a previous life
            self.flush(batch)
        for batch in self._claimed():  # entries a dead consumer left unacked
            self.flush(batch)
        while not stop.is_set():
            batch = self._read(">", self.config.block_ms)
            if batch:
                self.flush(batch)
            elif self.config.exit_when_idle:
                break
        return self.stats


def iter_raw_lines(store: ObjectStore, prefix: str = "events") -> Iterator[bytes]:
    for path in store.list(prefix):
        if path.endswith(RAW_SUFFIXES):
            body = decompress(path, store.read_bytes(path))
            yield from (line for line in body.split(b"\n") if line)


def publish(
    client: redis.Redis, store: ObjectStore, stream: str = DEFAULT_STREAM, chunk: int = 1000
) -> int:
    """XADD every raw event line in ``store`` to ``stream`` (verbatim); returns the count."""
    sent, pipe = 0, client.pipeline(transaction=False)
    for line in iter_raw_lines(store):
        pipe.xadd(stream, {EVENT_FIELD: line})
        sent += 1
        if sent % chunk == 0:
            pipe.execute()
    pipe.execute()
    log.info("published %d events to %s", sent, stream)
    return sent
