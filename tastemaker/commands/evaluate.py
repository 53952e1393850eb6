"""``tastemaker evaluate | recommend | compare | dashboard``: the evaluation side of the CLI."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("evaluate", help="evaluate a run against the baselines; write the report")
    ev.add_argument("--run", help="run dir (default: the last run `tastemaker train` finished)")
    ev.add_argument("--test", help="test interactions file (bring-your-own-data runs)")
    ev.add_argument("--split", default="test", choices=("valid", "test"))
    ev.add_argument(
        "--models", help="comma-separated models (default: two-tower and all baselines)"
    )
    ev.add_argument(
        "--k",
        type=int,
        default=100,
        help="--test runs: ranking depth scored; metrics at the cutoffs up to it (default 100)",
    )
    ev.set_defaults(func=_evaluate)

    rec = sub.add_parser("recommend", help="top-k artists per user of an interactions run")
    rec.add_argument("--run", required=True)
    rec.add_argument("--all-users", action="store_true")
    rec.add_argument("--users", help="comma-separated user ids of the training file")
    rec.add_argument(
        "--k", type=int, default=None, help="artists per user (default: the API's, 10)"
    )
    rec.add_argument("--out", required=True, help="output Parquet file")
    rec.set_defaults(func=_recommend)

    cmp_ = sub.add_parser("compare", help="lay evaluated runs side by side (Markdown)")
    cmp_.add_argument("runs", nargs="+")
    cmp_.add_argument("--out", help="also write the table to this file")
    cmp_.set_defaults(func=_compare)

    dash = sub.add_parser(
        "dashboard", help="refresh the web dashboard's snapshot from the workspace"
    )
    dash.set_defaults(func=_dashboard)

    eng = sub.add_parser(
        "engagement",
        help="engagement and churn per day and segment from the lake, for a date range",
    )
    eng.add_argument("--from", dest="first", help="first UTC day YYYY-MM-DD (with --to)")
    eng.add_argument("--to", dest="last", help="last UTC day YYYY-MM-DD, inclusive")
    eng.add_argument("--out", required=True, help="output Parquet file")
    eng.add_argument(
        "--engine",
        dest="feature_engine",
        choices=("local", "spark"),
        default=None,
        help="read the lake in this process (local, default) or on Spark (the same table)",
    )
    eng.add_argument(
        "--master",
        dest="spark_master",
        default=None,
        help="with --engine spark: local[N], spark://host:port or sc://host:port",
    )
    eng.set_defaults(func=_engagement)


def _is_byod(run: Path) -> bool:
    """A run trained on an interactions file (``training.byod``) rather than on the lake."""
    return (run / "interactions.npz").is_file()


def _evaluate(args: argparse.Namespace) -> int:
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


def _recommend(args: argparse.Namespace) -> int:
    from evaluation.runs import recommend_run, write_recommendations

    if not args.all_users and not args.users:
        raise ValueError("pass --all-users or --users ID[,ID...]")
    users = None if args.all_users else args.users.split(",")
    k = args.k if args.k is not None else args.settings.default_k
    table = recommend_run(args.run, k, users)
    write_recommendations(table, args.out)
    print(f"wrote {table.num_rows} recommendations to {args.out}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from core.atomic import write_bytes
    from evaluation.report import compare_runs

    text = compare_runs([Path(r) for r in args.runs])
    sys.stdout.write(text)
    if args.out:
        write_bytes(args.out, text.encode())
    return 0


def _engagement(args: argparse.Namespace) -> int:
    import pyarrow as pa

    from core.atomic import write_table
    from evaluation.engagement import engagement_table, read_plan

    if (args.first is None) != (args.last is None):
        raise ValueError("give both --from and --to, or neither (every day)")
    days = (args.first, args.last) if args.first else None
    spark = None
    if args.settings.feature_engine == "spark":
        from data.features.spark import spark_session

        spark = spark_session(args.settings)
    try:
        plan = read_plan(args.ws, days)
        table = engagement_table(args.ws, days=days, spark=spark)
    finally:
        if spark is not None:
            spark.stop()
    write_table(Path(args.out), pa.Table.from_pandas(table, preserve_index=False))
    print(
        f"engagement: {len(table)} rows, {table['date'].nunique() if len(table) else 0} day(s); "
        f"read {len(plan.files)} file(s) of lake version {plan.version} -> {args.out}"
    )
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from evaluation.dashboard import write_dashboard

    print(f"dashboard snapshot: {write_dashboard(args.ws, args.settings.registry_url)}")
    return 0
