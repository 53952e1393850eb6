"""``tastemaker daily`` (the retrain-gate-publish cycle, :mod:`jobs.daily`) and ``tastemaker
models`` (the model registry: list | promote RUN | rollback)."""

from __future__ import annotations

import argparse
import json
from datetime import date, timedelta

ALARM_EXIT = 3  # `tastemaker daily` exit status when the regression alarm fires


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("daily", help="one idempotent daily cycle (ingest ... gate ... publish)")
    p.add_argument("--date", type=date.fromisoformat, help="the day to run (YYYY-MM-DD)")
    p.add_argument("--from", dest="start", type=date.fromisoformat, help="replay from this day")
    p.add_argument("--to", dest="end", type=date.fromisoformat, help="... to this day")
    p.add_argument("--accounts-url", default=None, help="default: $TASTEMAKER_ACCOUNTS_URL")
    p.add_argument(
        "--warm-start",
        action="store_true",
        help="start each challenger from the champion's weights (default: scratch)",
    )
    p.add_argument(
        "--ranker",
        action="store_true",
        help="train the two-tower without refit, fit the XGBoost ranker against it and "
        "gate 'retrieval + ranker' against 'retrieval alone'",
    )
    p.add_argument(
        "--two-stage",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fit the two-stage system (two-tower + co-listening neighbours + trending "
        "candidates, a ranker trained for discovery) with a no-refit sibling run; when it beats "
        "retrieval alone it is the servable system gated against the champion and benchmarks "
        "(on by default; --no-two-stage skips it)",
    )
    p.add_argument(
        "--min-delta",
        type=float,
        default=None,  # evaluation.gate.GateConfig's (imported by the command: it loads torch)
        help="Recall@20 margin a challenger must win by (default: the gate's, 0.0)",
    )
    p.add_argument(
        "--benchmarks",
        default=None,  # evaluation.gate.DEFAULT_BENCHMARKS (imported by the command: torch)
        help="comma-separated peers scored beside the challenger on the same users; it must "
        "beat the best of them too (tuned params from `tastemaker tune --dataset demo` when "
        "saved); 'none': the champion alone (default: popular, ItemKNN, EASE and ALS)",
    )
    p.set_defaults(func=_daily)

    m = sub.add_parser("models", help="the model registry: list | promote RUN | rollback")
    m.add_argument("action", choices=("list", "promote", "rollback"))
    m.add_argument("run_id", nargs="?")
    m.set_defaults(func=_models)


def _benchmarks(text: str | None) -> tuple[str, ...]:
    from evaluation.gate import DEFAULT_BENCHMARKS
    from evaluation.registry import BASELINES

    if text is None:
        return DEFAULT_BENCHMARKS
    if text.strip().lower() == "none":
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"--benchmarks: unknown {unknown}; choose from {', '.join(BASELINES)}")
    return names


def _days(args: argparse.Namespace) -> list[date]:
    if args.date and not (args.start or args.end):
        return [args.date]
    if args.start and args.end and not args.date:
        if args.end < args.start:
            raise ValueError(f"--to {args.end} is before --from {args.start}")
        return [args.start + timedelta(days=i) for i in range((args.end - args.start).days + 1)]
    raise ValueError("pass --date D, or --from D1 --to D2")


def _daily(args: argparse.Namespace) -> int:
    from data.pii import pseudonym_key
    from evaluation.gate import GateConfig
    from jobs.daily import DailyConfig, day_dir, run_day

    config = DailyConfig(
        accounts_url=args.settings.accounts_url,
        registry_url=args.settings.registry_url,
        warm_start=args.warm_start,
        gate=GateConfig() if args.min_delta is None else GateConfig(min_delta=args.min_delta),
        ranker=args.ranker,
        two_stage=args.two_stage,
        slate_store_url=args.settings.slate_store_url,
        bundle_store_url=args.settings.bundle_store_url,
        benchmarks=_benchmarks(args.benchmarks),
    )
    key = pseudonym_key(args.settings)
    status = 0
    for day in _days(args):
        summary = run_day(args.ws, day, config, key=key)
        d = summary["decision"]
        again = " (already done)" if summary.get("already_done") else ""
        print(
            f"{summary['day']}{again}: challenger {summary['challenger']} "
            f"{'PROMOTED' if d['promote'] else 'kept out'} — {'; '.join(d['reasons'])}"
        )
        if d.get("benchmark"):
            b = d["benchmark"]
            scores = ", ".join(f"{k} {v:.4f}" for k, v in b["scores"].items())
            print(f"  benchmarks ({d['metric']} on the same users): {scores}; best {b['label']}")
        if summary.get("ranker"):
            print(f"  ranker: {summary['ranker']['summary']}")
        if summary.get("two_stage"):
            print(f"  two-stage: {summary['two_stage']['summary']}")
        print(
            f"  serving bundle {summary['serving_bundle']}; "
            f"engagement {json.dumps(summary['engagement'].get('today', {}))}"
        )
        for a in summary["alarms"]:
            print(
                "  ALARM " + f"{a['segment']}: {a['metric']} {a['value']:.3f} "
                f"< {a['threshold']:.3f} (trailing mean {a['baseline']:.3f})"
            )
            status = ALARM_EXIT
        print(f"  report: {day_dir(args.ws, day) / 'report.md'}")
    return status


def _models(args: argparse.Namespace) -> int:
    from evaluation.model_registry import default_registry_url, open_registry
    from index.bundle import set_current

    with open_registry(args.settings.registry_url or default_registry_url(args.ws)) as registry:
        if args.action == "list":
            for r in registry.runs():
                score = r.metrics.get(r.model, {}).get("test/recall@20")
                cell = f"{score:.4f}" if isinstance(score, float) else "-"
                print(
                    f"{r.run_id:36s} {r.model:10s} {r.status:10s} day={r.day} "
                    f"recall@20={cell} bundle={r.bundle_version}"
                )
            return 0
        if args.action == "promote":
            if not args.run_id:
                raise ValueError("models promote needs a RUN id (see `tastemaker models list`)")
            target = registry.get(args.run_id)
            if not target.bundle_version:
                raise ValueError(
                    f"run {args.run_id} has no bundle; export it first "
                    f"(`tastemaker export --run {target.artefacts.get('run_dir')}`)"
                )
            set_current(args.ws.bundles, target.bundle_version)
            _point_store(args, str(target.bundle_version))
            registry.promote(args.run_id)
            print(f"champion: {args.run_id} (bundle {target.bundle_version})")
            return 0
        demoted, restored = registry.rollback()
        set_current(args.ws.bundles, str(restored.bundle_version))
        _point_store(args, str(restored.bundle_version))
        print(
            f"rolled back: {demoted.run_id} -> {restored.run_id} (bundle {restored.bundle_version})"
        )
        return 0


def _point_store(args: argparse.Namespace, version: str) -> None:
    """With a bundle store (``TASTEMAKER_BUNDLE_STORE_URL``), the replicas follow too."""
    if args.settings.bundle_store_url:
        from serving.bundle_store import point_store_at

        point_store_at(args.settings.bundle_store_url, args.ws.bundles, version)
