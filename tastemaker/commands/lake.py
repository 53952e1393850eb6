"""``tastemaker lake history|optimize|vacuum|migrate``: the lake's events table (Delta)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lake", help="the lake's events table: history | optimize | vacuum | migrate"
    )
    p.add_argument("action", choices=("history", "optimize", "vacuum", "migrate"))
    p.add_argument("--limit", type=int, default=None, help="history: the newest N commits")
    p.add_argument(
        "--target-size", type=int, default=None, help="optimize: target file size in bytes"
    )
    p.add_argument(
        "--retention-hours",
        type=int,
        default=None,
        help="vacuum: delete files out of the table for longer than this "
        "(default: the table's retention, 7 days)",
    )
    p.add_argument(
        "--apply",
        action="store_true",
        help="vacuum: delete the files (default: dry run, list them)",
    )
    p.set_defaults(func=_lake)


def _lake(args: argparse.Namespace) -> int:
    from data import lake

    path = args.ws.lake_events
    if args.action == "history":
        for row in lake.history(path, args.limit):
            print(
                f"{row['version']:>6} {row['time']} {row['operation']:<14} {row['source'] or '-'}"
            )
        return 0
    if args.action == "optimize":
        print(json.dumps(lake.optimize(path, args.target_size), indent=2, default=str))
        return 0
    if args.action == "vacuum":
        files = lake.vacuum(path, args.retention_hours, dry_run=not args.apply)
        verb = "deleted" if args.apply else "would delete (dry run; --apply deletes)"
        print(f"{verb} {len(files)} file(s)")
        for f in files:
            print(f"  {f}")
        return 0
    summary = lake.migrate(path)
    print(json.dumps(summary, indent=2))
    return 0
