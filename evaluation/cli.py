"""``tastemaker evaluate | recommend | compare``: the evaluation side of the CLI."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from core.atomic import write_bytes


def _is_byod(run: Path) -> bool:
    return (run / "interactions.npz").is_file()


def cmd_evaluate(args: Any) -> int:
    from evaluation.evaluate import DEFAULT_MODELS, evaluate_temporal
    from evaluation.runs import evaluate_run

    run = Path(args.run) if args.run else args.ws.latest_run()
    if args.test:
        result = evaluate_run(run, args.test, k=args.k)
    elif _is_byod(run):
        raise ValueError(f"{run} was trained on an interactions file; pass --test FILE")
    else:
        models = tuple(args.models.split(",")) if args.models else DEFAULT_MODELS
        result = evaluate_temporal(args.ws, run, models=models, split=args.split)
    for name, summary in result["models"].items():
        cells = "  ".join(
            f"{k.split('/', 1)[1]}={v:.4f}"
            for k, v in summary.items()
            if k.endswith(("recall@20", "ndcg@20", "mrr"))
        )
        print(f"{name:10s} {cells}")
    print(f"report: {run / 'report.md'}")
    return 0


def cmd_recommend(args: Any) -> int:
    from evaluation.runs import recommend_run, write_recommendations

    if not args.all_users and not args.users:
        raise ValueError("pass --all-users or --users ID[,ID...]")
    users = None if args.all_users else args.users.split(",")
    table = recommend_run(args.run, args.k, users)
    write_recommendations(table, args.out)
    print(f"wrote {table.num_rows} recommendations to {args.out}")
    return 0


def cmd_compare(args: Any) -> int:
    from evaluation.report import compare_runs

    text = compare_runs([Path(r) for r in args.runs])
    sys.stdout.write(text)
    if args.out:
        write_bytes(args.out, text.encode())
    return 0


def cmd_dashboard(args: Any) -> int:
    from evaluation.dashboard import write_dashboard

    print(f"dashboard snapshot: {write_dashboard(args.ws)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("evaluate", help="evaluate a run against the baselines; write the report")
    ev.add_argument("--run", help="run dir (default: the last run `tastemaker train` finished)")
    ev.add_argument("--test", help="test interactions file (bring-your-own-data runs)")
    ev.add_argument("--split", default="test", choices=("valid", "test"))
    ev.add_argument(
        "--models", help="comma-separated models (default: two-tower and all baselines)"
    )
    ev.add_argument("--k", type=int, default=100)
    ev.set_defaults(func=cmd_evaluate)

    rec = sub.add_parser("recommend", help="top-k artists per user of an interactions run")
    rec.add_argument("--run", required=True)
    rec.add_argument("--all-users", action="store_true")
    rec.add_argument("--users", help="comma-separated user ids of the training file")
    rec.add_argument("--k", type=int, default=100)
    rec.add_argument("--out", required=True, help="output Parquet file")
    rec.set_defaults(func=cmd_recommend)

    cmp_ = sub.add_parser("compare", help="lay evaluated runs side by side (Markdown)")
    cmp_.add_argument("runs", nargs="+")
    cmp_.add_argument("--out", help="also write the table to this file")
    cmp_.set_defaults(func=cmd_compare)

    dash = sub.add_parser(
        "dashboard", help="refresh the web dashboard's snapshot from the workspace"
    )
    dash.set_defaults(func=cmd_dashboard)
