"""``tastemaker ingest``, ``tastemaker publish``, ``tastemaker subscribe``: raw events into
the lake, directly or through a Redis Stream."""

from __future__ import annotations

import argparse
import json
import signal
import threading

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def register(sub: argparse._SubParsersAction) -> None:
    from data.ingest.subscriber import DEFAULT_GROUP, DEFAULT_STREAM

    p = sub.add_parser("ingest", help="raw events -> validated Parquet lake")
    p.add_argument("--source", help="object store URL (default: workspace raw/), e.g. s3://b/raw")
    p.add_argument(
        "--accounts-url",
        "--accounts",
        dest="accounts_url",
        default=None,
        help="account table URL (default: $TASTEMAKER_ACCOUNTS_URL, else the workspace SQLite)",
    )
    p.set_defaults(func=_ingest)

    for name, func, text in (
        ("publish", _publish, "push the raw event files into a Redis Stream"),
        ("subscribe", _subscribe, "consume a Redis Stream into the object store"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
        p.add_argument("--stream", default=DEFAULT_STREAM)
        p.set_defaults(func=func)
        if name == "publish":
            p.add_argument("--source", help="object store URL to read raw events from")
            continue
        p.add_argument("--dest", help="object store URL to write to (default: workspace raw/)")
        p.add_argument("--group", default=DEFAULT_GROUP)
        p.add_argument("--consumer", help="consumer name (default: host name)")
        p.add_argument("--batch-size", type=int, default=5000)
        p.add_argument("--block-ms", type=int, default=1000)
        p.add_argument("--claim-idle-ms", type=int, default=60_000)
        p.add_argument("--exit-when-idle", action="store_true", help="stop when drained")


def _ingest(args: argparse.Namespace) -> int:
    from data.ingest.job import run_ingest
    from data.pii import pseudonym_key

    manifest = run_ingest(
        args.ws,
        source_url=args.source,
        accounts_url=args.settings.accounts_url,
        key=pseudonym_key(args.settings),
    )
    keys = ("run_id", "read", "accepted", "duplicates", "quarantined", "quarantined_by_reason")
    print(json.dumps({k: manifest[k] for k in keys}, indent=2))
    return 0


def _publish(args: argparse.Namespace) -> int:
    from data.ingest.objectstore import open_store
    from data.ingest.subscriber import connect, publish

    client = connect(args.redis_url)
    sent = publish(client, open_store(args.source, args.ws.raw), stream=args.stream)
    print(f"published {sent} events to {args.stream}")
    return 0


def _subscribe(args: argparse.Namespace) -> int:
    from data.ingest.objectstore import open_store
    from data.ingest.subscriber import Subscriber, SubscriberConfig, connect

    client = connect(args.redis_url)
    config = SubscriberConfig(
        stream=args.stream,
        group=args.group,
        consumer=args.consumer or SubscriberConfig().consumer,
        batch_size=args.batch_size,
        block_ms=args.block_ms,
        claim_idle_ms=args.claim_idle_ms,
        exit_when_idle=args.exit_when_idle,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stats = Subscriber(client, open_store(args.dest, args.ws.raw), config).run(stop)
    print(
        f"subscribe: {stats.events} events in {stats.batches} batches, {len(stats.files)} objects"
    )
    return 0
