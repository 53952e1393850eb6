"""``tastemaker token`` (a listener's short-lived event token) and ``tastemaker erase`` (the
right to be forgotten: docs/privacy.md)."""

from __future__ import annotations

import argparse
from typing import Any


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

    e = sub.add_parser(
        "erase",
        help="forget a listener: every store of the workspace, audited (docs/privacy.md)",
    )
    e.add_argument("--user", default=None, help="the account id to erase")
    e.add_argument(
        "--queue",
        action="store_true",
        help="only file the request; the daily loop (or `erase` without --user) drains it",
    )
    e.add_argument(
        "--verify",
        action="store_true",
        help="afterwards, scan every file of the workspace for the id, pseudonym and email",
    )
    e.set_defaults(func=erase)


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


def erase(args: argparse.Namespace) -> int:
    """File (``--user``) and carry out erasure requests; ``--queue`` only files one."""
    from jobs.erase import drain, find_traces, request

    settings, ws = args.settings, args.ws
    needles: list[str] = []
    if args.user:
        if args.verify:
            needles = _needles(settings, ws, args.user)
        rid = request(ws, settings, args.user)
        print(f"erasure request {rid} filed")
        if args.queue:
            return 0
    for done in drain(ws, settings):
        print(f"erasure request {done['request_id']} done in {done['seconds']} s")
    if needles:
        hits = find_traces(ws.root, needles)
        for hit in hits:
            print(f"  still found: {hit.split(':')[0]}")
        print("verify: no trace left" if not hits else f"verify: {len(hits)} file(s) hold traces")
        return 1 if hits else 0
    return 0


def _needles(settings: Any, ws: Any, user_id: str) -> list[str]:
    """The raw id, its pseudonym and (when the account is still there) the email."""
    from data.accounts import default_accounts_url, open_accounts
    from data.pii import pseudonym_key, pseudonymise

    with open_accounts(settings.accounts_url or default_accounts_url(ws)) as accounts:
        email = accounts.email_of(user_id)
    return [user_id, pseudonymise(user_id, pseudonym_key(settings)), *([email] if email else [])]
