"""``tastemaker serve`` (the HTTP API on uvicorn) and ``tastemaker precompute`` (every user's
top-100 into the slate store). Imports ONNX and FAISS, never torch."""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve recommendations over HTTP (FastAPI + uvicorn)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes, one per core you give the service (default 1: see docs/burst.md)",
    )
    p.add_argument(
        "--bundle",
        dest="bundle_dir",
        type=Path,
        default=None,
        help="bundles dir (follows CURRENT) or one bundle folder (default: WORKSPACE/bundles)",
    )
    p.add_argument(
        "--online-store",
        dest="online_store_url",
        default=None,
        help="redis://HOST:PORT/DB or a SQLite path (default: WORKSPACE/online/users.sqlite)",
    )
    p.set_defaults(func=serve)

    q = sub.add_parser(
        "precompute",
        help="score every user of the online store with the bundle; write top-100 slates",
    )
    q.add_argument(
        "--bundle", dest="bundle_dir", type=Path, default=None, help="default: WORKSPACE/bundles"
    )
    q.add_argument(
        "--users",
        type=Path,
        default=None,
        help="USER_FEATURES parquet (what the features stage published online; "
        "default: WORKSPACE/features/user_features.parquet)",
    )
    q.add_argument(
        "--slates",
        dest="slate_store_url",
        default=None,
        help="slate store: SQLite path or redis://... (default: WORKSPACE/online/slates.sqlite)",
    )
    q.add_argument("--batch", type=int, default=2048)
    q.set_defaults(func=precompute)


def serve(args: argparse.Namespace) -> int:
    """Print how to reach the API, then serve ``args.settings`` on ``--host:--port``."""
    from serving.server import run_server

    settings = args.settings
    if settings.demo and not settings.admin_token:
        settings = settings.model_copy(update={"admin_token": secrets.token_urlsafe(16)})
        print(f"demo mode: admin token for /admin/reload is {settings.admin_token}")
    base = f"http://{args.host}:{args.port}"
    auth = "" if settings.demo else " -H 'authorization: Bearer <token>'"
    docs = "/docs" if settings.demo else "/openapi.json"
    print(
        f"serving on {base}  (docs: {docs}, {args.workers} worker(s))\n"
        f"  curl '{base}/v1/users/<user_id>/recommendations?k=10'{auth}\n"
        f"  (a listener's token for POST /v1/events: tastemaker token --user <user_id>)\n"
        f"  curl -X POST {base}/v1/recommendations -H 'content-type: application/json' "
        """-d '{"history": ["<artist_id>"], "k": 10}'\n"""
        f"  curl {base}/healthz ; curl {base}/readyz ; curl {base}/metrics\n"
        f"  curl -X POST {base}/admin/reload -H 'X-Admin-Token: <token>'"
    )
    run_server(settings, args.host, args.port, args.workers)
    return 0


def precompute(args: argparse.Namespace) -> int:
    """Every user's top-100 into the slate store (``--users``, ``--batch``)."""
    from serving.precompute import precompute_slates

    users_path = args.users or args.ws.feature_dir.user_features
    done = precompute_slates(args.settings, users_path, batch=args.batch)
    print(
        f"precomputed {done.slates:,} slates of {done.users:,} users for bundle "
        f"{done.bundle_version} in {done.seconds:.1f} s "
        f"({done.slates / max(done.seconds, 1e-9):,.0f} users/s) -> {done.target}"
    )
    return 0
