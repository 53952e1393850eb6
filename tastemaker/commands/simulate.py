"""``tastemaker simulate``: an A/B test of recommendation policies on the synthetic listeners
(:mod:`jobs.simulate`)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="A/B test policies on the synthetic listeners")
    p.add_argument(
        "--policy",
        action="append",
        required=True,
        help="model | retrieval | model+ranker | two-stage | popular | ease | itemknn | als | "
        "random (two or more); model@streamed / model@day-old (also retrieval@...) rank from "
        "rows the streaming worker keeps live, refreshed every session / every day",
    )
    p.add_argument(
        "--sessions-per-day",
        type=int,
        default=1,
        help="logins a day may hold (a session's clicks reach the next one in a streamed arm)",
    )
    p.add_argument(
        "--redis-url",
        default=None,
        help="Redis for the @streamed / @day-old arms (default: $TASTEMAKER_EVENT_BUS_URL)",
    )
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--users", type=int, default=None, help="listeners in the test (default: all)")
    p.add_argument("--k", type=int, default=10, help="slate size")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from jobs.simulate import simulate

    # the workspace the command runs in (--workspace wins), as the bundle and store defaults
    settings = args.settings.model_copy(update={"workspace": args.ws.root})
    summary = simulate(
        args.ws,
        args.policy,
        args.days,
        args.users,
        args.k,
        args.seed,
        settings=settings,
        sessions_per_day=args.sessions_per_day,
        redis_url=args.redis_url,
    )
    print(summary["markdown"])
    print(f"written to {summary['path']}")
    return 0
