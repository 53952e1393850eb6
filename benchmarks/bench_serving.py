"""Serving latency: raw FAISS search vs the recommender core vs the HTTP endpoint.

A synthetic bundle of 20,000 artists x 64 dims (real ONNX tower, real FAISS index, real SQLite
online store), flat and HNSW. The baseline is the raw FAISS search for the same user vectors,
measured in the same run, so the table reads as "what the rest of the stack costs".

    TASTEMAKER_DEMO=1 .venv/bin/python -m benchmarks.bench_serving [--quick]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from core.settings import Settings

N_ARTISTS, DIM, K = 20_000, 64, 10
FETCH = K + 112  # what the core asks FAISS for: k + excluded (110) + pad/unk


def _percentiles(fn: Callable[[int], object], n: int) -> np.ndarray:
    for i in range(min(20, n)):  # warm-up: caches, lazy inits, thread pool
        fn(i)
    times = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        times[i] = time.perf_counter() - t0
    return np.percentile(times, [50, 95, 99]) * 1e3  # ms


@contextmanager
def _server(settings: Settings) -> Iterator[str]:
    """A real ``uvicorn`` process on 127.0.0.1 (its own GIL, like production); yields its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "TASTEMAKER_WORKSPACE": str(settings.workspace),
        "TASTEMAKER_BUNDLE_DIR": str(settings.bundles_path),
        "TASTEMAKER_ONLINE_STORE_URL": settings.online_store_target,
        "TASTEMAKER_RELOAD_INTERVAL_S": "0",
    }
    cmd = [sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, cwd=Path(__file__).resolve().parents[1])
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"uvicorn did not start for the benchmark (exit {proc.returncode})"
                )
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _users(
    n: int, artists: list[str], rng: np.random.Generator, key: bytes
) -> tuple[list[str], list[dict]]:
    from data.pii import pseudonymise
    from data.schemas import USER_DENSE_FIELDS, USER_FEATURES, USER_SEGMENT_FIELDS

    ids, rows = [], []
    for u in range(n):
        uid = f"bench-user-{u}"
        picks = rng.choice(len(artists), size=110, replace=False)
        history = [artists[i] for i in picks[:50]]
        row: dict = {name: None for name in USER_FEATURES.names}
        row.update(
            user_key=pseudonymise(uid, key),
            as_of=1_700_000_000_000,
            history=history,
            history_age_s=[60.0] * len(history),
            recent_tracks=[],
            followed=[artists[i] for i in picks[50:60]],
            seen=[artists[i] for i in picks[:110]],
            n_impressions=100,
            n_clicks=5,
            n_streams=50,
        )
        row.update({f: "unknown" for f in USER_SEGMENT_FIELDS} | {"country": "DE"})
        row.update({f: 0.5 for f in USER_DENSE_FIELDS})
        ids.append(uid)
        rows.append(row)
    return ids, rows


def main(quick: bool = False) -> str:
    os.environ.setdefault("TASTEMAKER_DEMO", "1")  # synthetic users only: the demo key is fine
    from data.features.online_store import open_online_store
    from data.pii import pseudonym_key
    from index import IndexSpec
    from serving.recommender import Recommender
    from serving.reload import ModelHolder
    from serving.synthetic import SyntheticSpec, artist_ids, publish_synthetic

    n_req = 200 if quick else 2000
    n_users = 200 if quick else 1000
    key = pseudonym_key()
    rng = np.random.default_rng(0)
    specs = {
        "flat": IndexSpec(kind="flat"),
        "hnsw": IndexSpec(kind="hnsw", m=32, ef_construction=100, ef_search=128),
    }
    lines = [
        "## Serving latency (`benchmarks/bench_serving.py`)",
        "",
        f"`TASTEMAKER_DEMO=1 .venv/bin/python -m benchmarks.bench_serving{' --quick' if quick else ''}`"
        f" — {N_ARTISTS:,} artists x {DIM} dims, {n_users} users in a SQLite online store "
        f"(50-artist history, 110 excluded), k={K}, {n_req} sequential requests, one process.",
        "",
        "| index | build s | recall@10 vs flat | raw FAISS p50/p95/p99 ms | core p50/p95/p99 ms "
        "| HTTP p50/p95/p99 ms | core / FAISS (p50) | HTTP / FAISS (p50) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store_path = root / "users.sqlite"
        spec0 = SyntheticSpec(
            n_artists=N_ARTISTS, n_clusters=DIM, dim=DIM, history_len=100, noise=0.1
        )
        uids, rows = _users(n_users, artist_ids(spec0), rng, key)
        store = open_online_store(store_path)
        store.put_many(rows)
        flat_top: np.ndarray | None = None
        for name, ispec in specs.items():
            t0 = time.perf_counter()
            bundles = root / name
            publish_synthetic(bundles, SyntheticSpec(**{**vars(spec0), "index": ispec}))
            build_s = time.perf_counter() - t0
            holder = ModelHolder(bundles)
            model = holder.current
            user_vecs = model.user_vectors(rows)  # (U, d)
            top, _ = model.index.search(user_vecs, K)  # (U, K)
            if flat_top is None:
                flat_top = top
            recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(top, flat_top, strict=True)])
            faiss_p = _percentiles(
                lambda i, m=model, v=user_vecs: m.index.search(
                    v[i % n_users : i % n_users + 1], FETCH
                ),
                n_req,
            )
            rec = Recommender(holder, store, key)
            core_p = _percentiles(lambda i, r=rec: r.recommend(uids[i % n_users], K), n_req)
            settings = Settings(
                workspace=root,
                bundle_dir=bundles,
                online_store_url=str(store_path),
                reload_interval_s=0,
            )
            with (
                _server(settings) as base,
                httpx.Client(base_url=base) as client,
            ):
                http_p = _percentiles(
                    lambda i, c=client: c.get(
                        f"/v1/users/{uids[i % n_users]}/recommendations?k={K}"
                    ),
                    n_req,
                )

            def fmt(p: np.ndarray) -> str:
                return " / ".join(f"{x:.2f}" for x in p)

            lines.append(
                f"| {name} | {build_s:.1f} | {recall:.3f} | {fmt(faiss_p)} | {fmt(core_p)} | {fmt(http_p)} "
                f"| {core_p[0] / faiss_p[0]:.1f}x | {http_p[0] / faiss_p[0]:.1f}x |"
            )
        store.close()
    load = os.getloadavg()[0]
    lines += [
        "",
        f"Machine: {os.cpu_count()} cores, 1-min load average {load:.1f} at the end of the run "
        "(latency on a shared box is mostly queueing; compare the ratios).",
        "Core = pseudonymise + online-store lookup + encode + ONNX user tower + FAISS top-(k+excluded) "
        "+ filter + explain. HTTP adds uvicorn, FastAPI validation, the thread-pool hop and JSON, over a keep-alive httpx client on 127.0.0.1.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(main(parser.parse_args().quick))
