"""``tastemaker stream-features``: the event bus -> each listener's live online row."""

from __future__ import annotations

import argparse
import json
import signal
import threading


def register(sub: argparse._SubParsersAction) -> None:
    from data.features.stream import DEFAULT_GROUP, StreamConfig

    p = sub.add_parser(
        "stream-features",
        help="consume the event bus into live online rows (Redis Streams consumer group)",
    )
    p.add_argument(
        "--redis-url",
        dest="event_bus_url",
        default=None,
        help="the event bus (default: $TASTEMAKER_EVENT_BUS_URL); live rows go to "
        "$TASTEMAKER_STREAM_STATE_URL or the same Redis",
    )
    p.add_argument("--stream", default=None, help="stream key (default: settings.event_stream)")
    p.add_argument("--group", default=DEFAULT_GROUP)
    p.add_argument("--consumer", default=StreamConfig().consumer)
    p.add_argument("--batch-size", type=int, default=StreamConfig().batch_size)
    p.add_argument("--block-ms", type=int, default=StreamConfig().block_ms)
    p.add_argument("--state-prefix", default=StreamConfig().state_prefix, help=argparse.SUPPRESS)
    p.add_argument("--exit-when-idle", action="store_true", help="stop when drained")
    p.add_argument(
        "--metrics-port", type=int, default=0, help="serve /metrics (lag, throughput) on this port"
    )
    p.set_defaults(func=_stream)


def _stream(args: argparse.Namespace) -> int:
    from jobs.stream import run_stream_worker

    settings = args.settings
    if not settings.event_bus_url:
        print("stream-features needs an event bus: --redis-url or TASTEMAKER_EVENT_BUS_URL")
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stats = run_stream_worker(
        settings,
        stop,
        stream=args.stream,
        group=args.group,
        consumer=args.consumer,
        batch_size=args.batch_size,
        block_ms=args.block_ms,
        exit_when_idle=args.exit_when_idle,
        state_prefix=args.state_prefix,
        metrics_port=args.metrics_port,
    )
    print(json.dumps({"entries": stats.entries, "outcomes": stats.outcomes}, sort_keys=True))
    return 0
