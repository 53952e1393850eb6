"""``tastemaker world``: generate a seeded synthetic world into the workspace."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    world = sub.add_parser("world", help="generate a seeded synthetic world into the workspace")
    world.add_argument("--preset", choices=("demo", "tiny"), default="demo")
    world.add_argument("--seed", type=int, default=0)
    world.add_argument("--users", type=int, default=None, help="override the preset's user count")
    world.add_argument(
        "--accounts-url",
        dest="accounts_url",
        default=None,
        help="account table (sqlite:///path or postgresql://...; default "
        "$TASTEMAKER_ACCOUNTS_URL, else <workspace>/pii/accounts.sqlite)",
    )
    world.set_defaults(func=_world)


def _world(args: argparse.Namespace) -> int:
    import dataclasses

    from world.generate import WorldConfig, generate_world

    config = WorldConfig.preset(args.preset, seed=args.seed)
    if args.users is not None:
        config = dataclasses.replace(config, n_users=args.users)
    summary = generate_world(args.ws, config, accounts_url=args.settings.accounts_url)
    print(f"world ({args.preset}, seed {args.seed}) written to {args.ws.root}")
    for key, value in summary.items():
        print(f"  {key:>26}: {value}")
    return 0
