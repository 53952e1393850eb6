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
        "random (two or more)",
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
        args.ws, args.policy, args.days, args.users, args.k, args.seed, settings=settings
    )
    print(summary["markdown"])
    print(f"written to {summary['path']}")
    return 0
