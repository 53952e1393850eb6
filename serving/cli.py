"""``tastemaker serve``: the HTTP API on uvicorn (imports ONNX and FAISS, never torch)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="serve recommendations over HTTP (FastAPI + uvicorn)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
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


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from core.settings import Settings
    from serving.app import create_app

    overrides: dict[str, Any] = {"workspace": args.ws.root}
    if args.bundle is not None:
        overrides["bundle_dir"] = args.bundle
    if args.online_store is not None:
        overrides["online_store_url"] = args.online_store
    app = create_app(Settings(**overrides))
    print(
        f"serving on http://{args.host}:{args.port}  (docs: /docs)\n"
        f"  curl 'http://{args.host}:{args.port}/v1/users/<user_id>/recommendations?k=10'"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
