"""``tastemaker token`` (a listener's short-lived event token) and ``tastemaker erase`` (the
right to be forgotten: docs/privacy.md)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "token",
        help="issue a listener's short-lived token for POST /v1/events and their recommendations",
    )
    p.add_argument("--user", required=True, help="the account id (pseudonymised, not in the token)")
    p.add_argument(
        "--ttl", type=int, default=None, help="seconds valid (default: TASTEMAKER_TOKEN_TTL_S)"
    )
    p.set_defaults(func=token)


def token(args: argparse.Namespace) -> int:
    """Print one token: HMAC (TASTEMAKER_TOKEN_KEY) over the pseudonymous id and an expiry."""
    from core.tokens import issue, token_keys
    from data.pii import pseudonym_key, pseudonymise

    settings = args.settings
    keys = token_keys(settings)
    if not keys:
        print("no token key: set TASTEMAKER_TOKEN_KEY (at least 16 characters)")
        return 2
    ttl = args.ttl if args.ttl is not None else settings.token_ttl_s
    print(issue(pseudonymise(args.user, pseudonym_key(settings)), keys[0], ttl))
    return 0
