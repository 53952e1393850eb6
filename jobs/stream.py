"""The streaming-features worker as a job: settings -> bus, live-row Redis, batch rows,
lookups -> :class:`data.features.stream.FeatureStreamer` until stopped."""

from __future__ import annotations

import logging
import threading

from core.settings import Settings
from data.features.stream import FeatureStreamer, StreamConfig, StreamStats

log = logging.getLogger("tastemaker.stream")


def run_stream_worker(
    settings: Settings,
    stop: threading.Event,
    *,
    stream: str | None = None,
    group: str | None = None,
    consumer: str | None = None,
    batch_size: int | None = None,
    block_ms: int | None = None,
    exit_when_idle: bool = False,
    state_prefix: str | None = None,
    metrics_port: int = 0,
) -> StreamStats:
    import redis
    from prometheus_client import start_http_server

    from data.features.online_store import open_online_store
    from data.ingest.job import load_lookups
    from data.pii import pseudonym_key

    if not settings.event_bus_url:
        raise ValueError("the streaming worker needs settings.event_bus_url")
    base = StreamConfig()
    config = StreamConfig(
        stream=stream or settings.event_stream,
        group=group or base.group,
        consumer=consumer or base.consumer,
        batch_size=batch_size or base.batch_size,
        block_ms=block_ms if block_ms is not None else base.block_ms,
        exit_when_idle=exit_when_idle,
        state_prefix=state_prefix or base.state_prefix,
    )
    bus = redis.Redis.from_url(settings.event_bus_url, socket_timeout=10, socket_connect_timeout=5)
    target = settings.stream_state_target or settings.event_bus_url
    state = bus if target == settings.event_bus_url else redis.Redis.from_url(target)
    lookups = load_lookups(settings.layout, settings.accounts_url)
    rows = open_online_store(settings.online_store_target, create=True)
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1")
    log.info("streaming features from %s (group %s)", config.stream, config.group)
    try:
        worker = FeatureStreamer(bus, rows, pseudonym_key(settings), lookups, config, state=state)
        return worker.run(stop)
    finally:
        rows.close()
