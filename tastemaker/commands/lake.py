"""``tastemaker lake history|optimize|vacuum|migrate``: the lake's Delta tables (events,
quarantine, user view)."""

from __future__ import annotations

import argparse
import json

TABLE_NAMES = ("events", "quarantine", "users")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lake",
        help="the lake's Delta tables (events, quarantine, users): "
        "history | optimize | vacuum | migrate",
    )
    p.add_argument("action", choices=("history", "optimize", "vacuum", "migrate"))
    p.add_argument(
        "--table",
        choices=(*TABLE_NAMES, "all"),
        default=None,
        help="the table (history: default events; optimize, vacuum: default all; "
        "migrate always converts every table)",
    )
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

    if args.action == "migrate":
        print(json.dumps(lake.migrate_workspace(args.ws), indent=2))
        return 0
    chosen = args.table or ("events" if args.action == "history" else "all")
    specs = [s for s in lake.TABLES if chosen in (s.name, "all")]
    paths = {s.name: lake.table_path(args.ws, s) for s in specs}
    if chosen == "all":  # a table not made yet (no quarantined line so far) is left out
        specs = [s for s in specs if lake.is_table(paths[s.name])]
    if args.action == "history":
        for spec in specs:
            if chosen == "all":
                print(f"# {spec.name}")
            for row in lake.history(paths[spec.name], args.limit, spec):
                print(
                    f"{row['version']:>6} {row['time']} {row['operation']:<14} "
                    f"{row['source'] or '-'}"
                )
        return 0
    if args.action == "optimize":
        out = {s.name: lake.optimize(paths[s.name], args.target_size, s) for s in specs}
        print(json.dumps(out, indent=2, default=str))
        return 0
    verb = "deleted" if args.apply else "would delete (dry run; --apply deletes)"
    for spec in specs:
        files = lake.vacuum(paths[spec.name], args.retention_hours, not args.apply, spec)
        print(f"{spec.name}: {verb} {len(files)} file(s)")
        for f in files:
            print(f"  {f}")
    return 0
