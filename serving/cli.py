"""``tastemaker serve`` (the HTTP API on uvicorn) and ``tastemaker precompute`` (every user's
top-100 into the slate store). Imports ONNX and FAISS, never torch."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("tastemaker.serving")
PROTOCOL = "serving.shed:ArrivalStampingProtocol"  # uvicorn's httptools + arrival stamps


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="serve recommendations over HTTP (FastAPI + uvicorn)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes, one per core you give the service (default 1: see README)",
    )
    p.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="bundles dir (follows CURRENT) or one bundle folder (default: WORKSPACE/bundles)",
    )
    p.add_argument(
        "--online-store",
        default=None,
        help="redis://HOST:PORT/DB or a SQLite path (default: WORKSPACE/online/users.sqlite)",
    )
    p.set_defaults(func=serve)

    q = subparsers.add_parser(
        "precompute",
        help="score every user of the online store with the bundle; write top-100 slates",
    )
    q.add_argument("--bundle", type=Path, default=None, help="default: WORKSPACE/bundles")
    q.add_argument(
        "--users",
        type=Path,
        default=None,
        help="USER_FEATURES parquet (what the features stage published online; "
        "default: WORKSPACE/features/user_features.parquet)",
    )
    q.add_argument(
        "--slates",
        default=None,
        help="slate store: SQLite path or redis://... (default: WORKSPACE/online/slates.sqlite)",
    )
    q.add_argument("--batch", type=int, default=2048)
    q.set_defaults(func=precompute)


def _settings(args: argparse.Namespace) -> Any:
    from core.settings import Settings

    overrides: dict[str, Any] = {"workspace": args.ws.root}
    if getattr(args, "bundle", None) is not None:
        overrides["bundle_dir"] = args.bundle
    if getattr(args, "online_store", None) is not None:
        overrides["online_store_url"] = args.online_store
    if getattr(args, "slates", None) is not None:
        overrides["slate_store_url"] = args.slates
    return Settings(**overrides)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from serving.app import create_app

    settings = _settings(args)
    if settings.demo and not settings.admin_token:
        settings = settings.model_copy(update={"admin_token": secrets.token_urlsafe(16)})
        print(f"demo mode: admin token for /admin/reload is {settings.admin_token}")
    base = f"http://{args.host}:{args.port}"
    print(
        f"serving on {base}  (docs: /docs, {args.workers} worker(s))\n"
        f"  curl '{base}/v1/users/<user_id>/recommendations?k=10'\n"
        f"  curl -X POST {base}/v1/recommendations -H 'content-type: application/json' "
        """-d '{"history": ["<artist_id>"], "k": 10}'\n"""
        f"  curl {base}/healthz ; curl {base}/readyz ; curl {base}/metrics\n"
        f"  curl -X POST {base}/admin/reload -H 'X-Admin-Token: <token>'"
    )
    common: dict[str, Any] = dict(
        host=args.host,
        port=args.port,
        log_level="info",
        access_log=False,  # ~0.1 ms a request; /metrics counts requests instead
        http=PROTOCOL,
        loop="uvloop",
        backlog=4096,
    )
    if args.workers <= 1:
        app = create_app(settings)  # fail here, before binding, on a missing bundle or store
        uvicorn.run(app, **common)
        return 0
    create_app(settings)  # the same early failure, in the parent, before forking workers
    env = {
        "TASTEMAKER_WORKSPACE": str(settings.workspace),
        "TASTEMAKER_BUNDLE_DIR": str(settings.bundles_path),
        "TASTEMAKER_ONLINE_STORE_URL": settings.online_store_target,
        "TASTEMAKER_SLATE_STORE_URL": settings.slate_store_target,
    }
    if settings.admin_token:
        env["TASTEMAKER_ADMIN_TOKEN"] = settings.admin_token
    os.environ.update(env)  # the workers build their Settings from the environment
    uvicorn.run("serving.app:create_app", factory=True, workers=args.workers, **common)
    return 0


def precompute(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from serving.reload import ModelHolder
    from serving.slates import open_slate_store, score_table, slate_blobs

    settings = _settings(args)
    users_path = args.users or args.ws.root / "features" / "user_features.parquet"
    if not Path(users_path).is_file():
        raise FileNotFoundError(f"no user features at {users_path}; run `tastemaker features`")
    model = ModelHolder(settings.bundles_path, faiss_threads=None).current  # batch: all cores
    users = pq.read_table(users_path)
    store = open_slate_store(settings.slate_store_target, create=True, timeout_s=30.0)
    started = time.perf_counter()
    n = store.replace_all(slate_blobs(score_table(model, users, batch=args.batch)))
    store.close()
    took = time.perf_counter() - started
    print(
        f"precomputed {n:,} slates of {users.num_rows:,} users for bundle {model.version} "
        f"in {took:.1f} s ({n / max(took, 1e-9):,.0f} users/s) -> {settings.slate_store_target}"
    )
    return 0
