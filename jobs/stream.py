"""The streaming-features worker as a job: settings -> bus, live-row Redis, batch rows,
lookups -> :class:`data.features.stream.FeatureStreamer` until stopped."""

from __future__ import annotations

import logging
import threading
from typing import Any

from core.settings import Settings
from data.features.live import StreamReference
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
        worker = FeatureStreamer(
            bus,
            rows,
            pseudonym_key(settings),
            lookups,
            config,
            state=state,
            reload_lookups=lambda: load_lookups(settings.layout, settings.accounts_url),
            reference=load_reference(settings, rows),
        )
        return worker.run(stop)
    finally:
        rows.close()


def load_reference(settings: Settings, rows: Any) -> StreamReference | None:
    """The counters the streamed reference fields start from: the lake's events before the
    batch rows' ``as_of`` (:func:`data.features.live.stream_reference`); None, and those fields
    stay the batch rows', when there are no rows or no lake."""
    from data.features.build import load_event_log
    from data.features.live import stream_reference

    sample = rows.sample()
    ws = settings.layout
    if sample is None or not ws.lake_events.exists():
        log.info("no batch rows or no lake: listen/CTR-relative/activity stay the batch rows'")
        return None
    ev = load_event_log(ws)
    reference = stream_reference(ev, int(sample["as_of"]))
    log.info(
        "reference counters as of %d: %d listeners, %d tracks",
        reference.as_of,
        len(reference.user_ids),
        len(reference.track_ids),
    )
    return reference


DEMO_BUS_URL = "redis://127.0.0.1:6379/0"  # where the demo looks for Redis when none is set
DEMO_METRICS_PORT = 9108


def free_port(preferred: int, host: str = "127.0.0.1") -> int:
    """``preferred`` when nothing listens on it, else a port the kernel picks (another demo or
    test run on this machine may hold the preferred one)."""
    import socket

    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError(f"no free port on {host}")


def redis_reachable(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def start_demo_worker(settings: Settings) -> tuple[Settings, Any, str]:
    """For ``tastemaker demo``: when Redis answers (``settings.event_bus_url``, else the local
    default), start ``tastemaker stream-features`` as a child process and return the settings
    that make the service post events to that bus and read the live rows; else the settings
    unchanged and no process. The third value is the one line the demo prints."""
    import subprocess
    import sys

    from core.urls import redact_url

    url = settings.event_bus_url or DEMO_BUS_URL
    if not redis_reachable(url):
        return (
            settings,
            None,
            f"Streaming features: off, batch-only (no Redis at {redact_url(url)}); start Redis "
            "or set TASTEMAKER_EVENT_BUS_URL=redis://host:port/db and rerun to stream events "
            "into the live rows",
        )
    settings = settings.model_copy(update={"event_bus_url": url})
    cmd = [sys.executable, "-m", "tastemaker.cli", "stream-features"]
    port = free_port(DEMO_METRICS_PORT)
    cmd += ["--metrics-port", str(port)]
    settings.export_env()  # the child builds these same settings (the bus URL included)
    proc = subprocess.Popen(cmd)
    return (
        settings,
        proc,
        f"Streaming features: on (worker pid {proc.pid}, {redact_url(url)} stream "
        f"{settings.event_stream}); lag and throughput on http://127.0.0.1:{port}"
        "/metrics",
    )
