"""``tastemaker demo``: every stage on the demo world (:mod:`jobs.demo`), then the API."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on the demo world, then serve")
    p.add_argument("--preset", default="demo", choices=("demo", "tiny"))
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-serve", action="store_true", help="stop after export")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from data.pii import pseudonym_key
    from jobs.demo import format_table, run_pipeline

    key = pseudonym_key(args.settings)
    out = run_pipeline(args.ws, preset=args.preset, seed=args.seed, key=key)
    print("\nEvaluation on the held-out last week (full catalogue, seen artists excluded):\n")
    print(format_table(out["metrics"]))
    print("\nStage timings: " + json.dumps({k: round(v, 1) for k, v in out["timings"].items()}))
    decision = out["decision"]
    if out["two_stage"] is not None:
        staged = out["two_stage"]["test"]["gate"]["retrieval alone"]["summary"]
        print("Two-stage system vs retrieval alone (it serves only if it wins): " + staged)
    if decision is not None:
        if decision.benchmark:
            scores = ", ".join(f"{k} {v:.4f}" for k, v in decision.benchmark["scores"].items())
            print(f"Gate benchmarks ({decision.metric}, {decision.n_users} users): {scores}")
        print("Gate: " + decision.summary())
    serving = out["serving"]
    if serving is not None:
        from index import load_bundle

        system = load_bundle(out["bundle"]).manifest.get("system")
        print(f"Serving: {system} (registry run {serving.run_id}, model {serving.model})")
    print(f"Run dir: {out['run_dir']}\nBundle:  {out['bundle']}")
    if args.no_serve:
        return 0
    from data.accounts import default_accounts_url, open_accounts

    some_user = sorted(open_accounts(default_accounts_url(args.ws)).user_ids())[0]
    from tastemaker.commands.serve import precompute, serve

    args.bundle, args.online_store, args.slates, args.users = None, None, None, None
    args.workers, args.batch = 1, 2048
    precompute(args)  # every demo user's top-100, served from the slate store
    from jobs.stream import start_demo_worker

    args.settings, worker, line = start_demo_worker(args.settings)
    print(line)
    base = f"http://{args.host}:{args.port}"
    event = (
        f'{{"events": [{{"event_id": "demo-1", "event_type": "click", "user_id": "{some_user}", '
        '"artist_id": "<artist_id from the list>", "client_ts": "2026-01-01T06:00:00+00:00"}]}'
    )
    from core.tokens import issue, token_keys
    from data.pii import pseudonym_key, pseudonymise

    settings = args.settings
    keys = token_keys(settings)
    token = (
        issue(pseudonymise(some_user, pseudonym_key(settings)), keys[0], settings.token_ttl_s)
        if keys
        else "<set TASTEMAKER_TOKEN_KEY, then: tastemaker token --user ID>"
    )
    print(
        f"\nTry:  curl '{base}/v1/users/{some_user}/recommendations?k=10' "
        f"-H 'authorization: Bearer {token}'\n"
        f"      curl -X POST {base}/v1/events -H 'content-type: application/json' "
        f"-H 'authorization: Bearer {token}' -d '{event}'\n"
        f"      (a token of {some_user}, valid {settings.token_ttl_s} s; another: "
        f"tastemaker token --user ID)\n"
        f"Pages: {base}/ (a listener: try account {some_user}) · {base}/new · {base}/dashboard"
    )
    try:
        return serve(args)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
