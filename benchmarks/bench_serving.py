"""Serving under load: the real-time and precomputed paths against a bare FastAPI app.

A synthetic HetRec-sized bundle (20,000 artists x 64 dims, real ONNX tower, flat FAISS index),
2,000 users with a 50-artist history in a real SQLite online store, and their precomputed
slates. Each server is one uvicorn process pinned to core 0 (``taskset``); the load generator
runs in its own process on core 1: ``wrk`` (closed loop, 8 connections; server CPU per request from ``/proc``) for saturation, and
``benchmarks.loadgen`` (open loop, latency from the scheduled send time, 1 s client timeout)
for fixed rates. The bare app (``benchmarks.bare_app``) is measured in the same run.

    TASTEMAKER_DEMO=1 .venv/bin/python -m benchmarks.bench_serving [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.loadgen import wrk_paths_script
from index.choose import FLAT_MAX

ROOT = Path(__file__).resolve().parents[1]
N_ARTISTS, DIM, K = 20_000, 64, 10
UVICORN = ["--http", "serving.shed:ArrivalStampingProtocol", "--loop", "uvloop", "--no-access-log"]


def _pin(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and os.cpu_count() else []


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server(str):
    """The server's base URL, carrying its process id (for CPU accounting)."""

    pid: int


@contextmanager
def _server(app: list[str], env: dict[str, str]) -> Iterator[Server]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [*_pin(0), sys.executable, "-m", "uvicorn", *app, "--port", str(port), *UVICORN]
    cmd += ["--log-level", "warning"]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=ROOT)
    base = Server(f"http://127.0.0.1:{port}")
    base.pid = proc.pid
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server {app} did not start (exit {proc.returncode})")
            try:
                httpx.get(f"{base}/v1/users/warm/recommendations", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _check_source(base: str, user_id: str, want: str) -> None:
    """Refuse to measure a path other than the one named (the precomputed rows of an earlier
    run were real time: a bundle swap had made every slate stale)."""
    got = httpx.get(f"{base}/v1/users/{user_id}/recommendations?k={K}").json()["source"]
    if got != want:
        raise RuntimeError(f"{base} answers from {got!r}, not {want!r}")


def _saturation(base: Server, lua: Path, seconds: int) -> tuple[float, float]:
    """(2xx requests/s, server CPU microseconds per request) under ``wrk -c8``.

    8 connections keep one server core busy while the queue stays inside the shedding budget
    (32 pushed the real-time path past it, and then measured shedding, not capacity)."""
    if shutil.which("wrk") is None:
        raise FileNotFoundError("the serving benchmarks need wrk: apt-get install wrk")
    cpu0 = cpu_seconds(base.pid)
    out = subprocess.run(
        [*_pin(1), "wrk", "-t1", "-c8", f"-d{seconds}s", "-s", str(lua), base],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = cpu_seconds(base.pid) - cpu0
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rate = float(match.group(1)) if match else 0.0
    if non2xx:  # count only answered-with-content requests as throughput
        rate *= 1 - int(non2xx.group(1)) / total
    return rate, cpu / max(total, 1) * 1e6


def _open(base: str, paths: Path, rate: float, seconds: float, probe: str | None = None) -> dict:
    cmd = [*_pin(1), sys.executable, "-m", "benchmarks.loadgen", "--url", base]
    cmd += ["--paths", str(paths), "--rate", str(rate), "--duration", str(seconds)]
    if probe:
        cmd += ["--probe", probe]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return json.loads(out)


def _users(n: int, artists: list[str], rng: np.random.Generator, key: bytes) -> tuple:
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


def prepare(root: Path, n_users: int) -> tuple:
    """A synthetic bundle, ``n_users`` users in a SQLite online store, their precomputed slates,
    request paths (a text file and a wrk script) and the server environment."""
    from data.features.online_store import open_online_store, table_from_rows
    from data.pii import pseudonym_key
    from serving.precompute import score_table
    from serving.reload import ModelHolder
    from serving.slates import open_slate_store, slate_blobs
    from tests.fixtures.synthetic_bundle import SyntheticSpec, artist_ids, publish_synthetic

    rng = np.random.default_rng(0)
    spec = SyntheticSpec(n_artists=N_ARTISTS, n_clusters=DIM, dim=DIM, history_len=100)
    bundles = root / "bundles"
    publish_synthetic(bundles, spec, version="20240101T000000Z-bench")
    uids, rows = _users(n_users, artist_ids(spec), rng, pseudonym_key())
    store = open_online_store(root / "users.sqlite")
    store.put_many(rows)
    store.close()
    model = ModelHolder(bundles).current
    slates = open_slate_store(str(root / "slates.sqlite"), create=True)
    slates.replace_all(slate_blobs(score_table(model, table_from_rows(rows))))
    slates.close()
    paths, lua = wrk_paths_script(root, [f"/v1/users/{u}/recommendations?k={K}" for u in uids])
    env = {
        "TASTEMAKER_WORKSPACE": str(root),
        "TASTEMAKER_BUNDLE_DIR": str(bundles),
        "TASTEMAKER_ONLINE_STORE_URL": str(root / "users.sqlite"),
        "TASTEMAKER_RELOAD_INTERVAL_S": "0",
        "TASTEMAKER_ADMIN_TOKEN": "bench",
    }
    return bundles, spec, uids, paths, lua, env


def search_cpu_us(bundles: Path, root: Path, uids: list[str]) -> dict[str, Any]:
    """CPU microseconds per row of the served bundle's exact index search alone, as the
    real-time path calls it (one FAISS thread, the pipeline's fetch depth), at batch 1 and 4:
    the part of a real-time request no Python tuning can remove. Also the IVF-Flat index that
    export would choose past ``index.choose.FLAT_MAX`` (the smallest ``nprobe`` whose
    recall@100 against the exact index meets the export floor), on the same rows."""
    from data.features.online_store import open_online_store
    from data.pii import pseudonym_key, pseudonymise
    from index.choose import NPROBE_STEPS, RECALL_FLOOR, RECALL_K, recall_at_k
    from index.faiss_index import IndexSpec, build_index
    from serving.pipeline import depth_for, exclusions, fetch_depth
    from serving.reload import ModelHolder

    model = ModelHolder(bundles).current
    store = open_online_store(root / "users.sqlite")
    key = pseudonym_key()
    rows = [r for u in uids[:256] if (r := store.get(pseudonymise(u, key))) is not None]
    store.close()
    vecs = model.session.run(None, model.encoder.encode(rows))[0]  # (256, d)
    fetch = fetch_depth(model, [depth_for(model, K)], [exclusions(r) for r in rows])

    def per_row(index: Any, batch: int) -> float:
        best = float("inf")
        for _ in range(3):  # the least disturbed of three passes (a shared machine)
            started = time.process_time()
            for i in range(0, len(vecs) - batch + 1, batch):
                index.search(vecs[i : i + batch], fetch)
            best = min(best, (time.process_time() - started) / (len(vecs) // batch))
        return best / batch * 1e6

    out: dict[str, Any] = {f"exact, batch {b}": per_row(model.index, b) for b in (1, 4)}
    ids, vectors = model.index.vectors()
    ivf = build_index(vectors, IndexSpec(kind="ivf"), ids=ids)
    recall = 0.0
    for nprobe in NPROBE_STEPS:
        ivf.set_nprobe(nprobe)
        if (recall := recall_at_k(ivf, model.index, vecs, RECALL_K)) >= RECALL_FLOOR:
            break
    out["ivf"] = {"nprobe": nprobe, "recall": recall, "us": per_row(ivf, 1)}
    return out


def _fmt(r: dict) -> str:
    ok = r["ok"] or {"p50": "-", "p99": "-"}
    st = r["status"]
    return (
        f"{r['rate']:.0f} | {st.get('200', 0)} | {st.get('503', 0)} | {r['timeouts']} "
        f"| {ok['p50']} | {ok['p99']} | {(r['probe'] or {}).get('max', '-')}"
    )


def main(quick: bool = False) -> str:
    os.environ.setdefault("TASTEMAKER_DEMO", "1")  # synthetic users only: the demo key is fine
    sat_s, open_s = (3, 4) if quick else (8, 10)
    rates = (200, 500, 1000)
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bundles, spec, uids, paths, lua, env = prepare(root, 400 if quick else 2000)
        servers = {  # real-time last: its swap test publishes bundles the slates don't match
            "bare FastAPI (baseline)": (["benchmarks.bare_app:app"], env),
            "precomputed slates": (
                ["serving.app:create_app", "--factory"],
                {**env, "TASTEMAKER_SLATE_STORE_URL": str(root / "slates.sqlite")},
            ),
            "real-time, one request at a time (batching off)": (
                ["serving.app:create_app", "--factory"],
                {
                    **env,
                    "TASTEMAKER_SLATE_STORE_URL": str(root / "none.sqlite"),
                    "TASTEMAKER_BATCH_MAX_WAIT_MS": "0",
                },
            ),
            "real-time (ONNX + FAISS)": (
                ["serving.app:create_app", "--factory"],
                {**env, "TASTEMAKER_SLATE_STORE_URL": str(root / "none.sqlite")},
            ),
        }
        sat: dict[str, tuple[float, float]] = {}
        runs: dict[str, list[dict]] = {}
        over: dict = {}
        swap: dict = {}
        for name, (app, app_env) in servers.items():
            with _server(app, app_env) as base:
                if name != "bare FastAPI (baseline)":
                    _check_source(base, uids[0], "precomputed" if "slates" in name else "model")
                _saturation(base, lua, 1)  # warm-up
                sat[name] = _saturation(base, lua, sat_s)
                # the batching-off server is the before/after control: saturation and 500 req/s
                runs[name] = [
                    _open(base, paths, r, open_s)
                    for r in rates
                    if r == 500 or "batching off" not in name
                ]
                if name == "real-time (ONNX + FAISS)":
                    over = _open(base, paths, 2 * sat[name][0], open_s, probe="/healthz")
                    swap = _swap_under_load(base, bundles, spec, paths, open_s)
        # control: can the generator itself offer that rate? (the bare app is far from saturated)
        with _server(*servers["bare FastAPI (baseline)"]) as base:
            control = _open(base, paths, over["rate"], open_s, probe="/v1/users/x/recommendations")
        bare, bare_cpu = sat["bare FastAPI (baseline)"]
        search = search_cpu_us(bundles, root, uids)
        load = os.getloadavg()[0]
        cmd = f"TASTEMAKER_DEMO=1 .venv/bin/python -m benchmarks.bench_serving{' --quick' if quick else ''}"
        lines += [
            "## Serving under load (`benchmarks/bench_serving.py`)",
            "",
            f"`{cmd}` — {N_ARTISTS:,} artists x {DIM} dims (flat index), {len(uids):,} users "
            f"(50-artist history) in SQLite, k={K}; server: one uvicorn process on core 0; "
            "load: core 1. Saturation: `wrk -t1 -c8` (closed loop, "
            f"{sat_s} s, 2xx only; server CPU per request from `/proc`, which the other jobs on "
            f"the core disturb less than wall-clock rates). Real time micro-batches concurrent "
            "requests (`serving/batcher.py`, default `TASTEMAKER_BATCH_MAX_WAIT_MS=2`, 64 rows); "
            "the batching-off row is the same server with `TASTEMAKER_BATCH_MAX_WAIT_MS=0`. "
            f"Open loop: `benchmarks.loadgen`, "
            f"{open_s} s per rate, latency from the scheduled send time, 1 s client timeout, "
            "256 keep-alive connections opened before the clock starts.",
            "",
            "| server | saturation req/s | vs bare | server CPU us/request | vs bare (CPU) |",
            "|---|---|---|---|---|",
        ]
        for name, (rps, cpu) in sat.items():
            lines.append(
                f"| {name} | {rps:,.0f} | {rps / bare:.2f}x | {cpu:,.0f} | {bare_cpu / cpu:.2f}x |"
            )
        lines += [
            "",
            "| server | offered req/s | 200 | 503 | timeouts | p50 ms (200s) | p99 ms (200s) "
            "| max /healthz ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, rs in runs.items():
            lines += [f"| {name} | {_fmt(r)} |" for r in rs]
        lines.append(f"| real-time, 2x saturation | {_fmt(over)} |")
        lines.append(f"| control: bare FastAPI at the same rate | {_fmt(control)} |")
        lines += ["", *_targets(sat, bare, runs["real-time (ONNX + FAISS)"])]
        lines += ["", *_floor(sat, search)]
        lines += [
            "",
            f"Swap under load (real-time, 200 req/s, {swap['swaps']} swaps via `/admin/reload`): "
            f"{swap['with']['status']} answered, {swap['with']['timeouts']} timeouts, "
            f"{swap['with']['errors']} errors; max latency {swap['with']['all'].get('max')} ms "
            f"with swaps vs {swap['without']['all'].get('max')} ms without, p99 "
            f"{swap['with']['all'].get('p99')} vs {swap['without']['all'].get('p99')} ms.",
            "",
            f"Machine: {os.cpu_count()} cores shared with other jobs, 1-min load average "
            f"{load:.1f} at the end (absolute numbers are noisy; compare the ratios).",
        ]
    return "\n".join(lines) + "\n"


def _targets(sat: dict[str, tuple[float, float]], bare: float, runs: list[dict]) -> list[str]:
    """Issue 21's two real-time targets, from this run."""
    ratio = sat["real-time (ONNX + FAISS)"][0] / bare
    at500 = next(r for r in runs if round(r["rate"]) == 500)
    p99 = (at500["ok"] or {}).get("p99", float("nan"))
    shed = at500["status"].get("503", 0)

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    return [
        "| target (issue 21) | measured in this run | |",
        "|---|---|---|",
        f"| real-time saturation, one core, >= 0.5x the bare app | {ratio:.2f}x | "
        f"{verdict(ratio >= 0.5)} |",
        f"| real-time p99 at 500 req/s <= 10 ms | {p99} ms (200s; {shed} of "
        f"{sum(at500['status'].values())} shed with 503) | {verdict(p99 <= 10 and not shed)} |",
    ]


def _floor(sat: dict[str, tuple[float, float]], search: dict[str, Any]) -> list[str]:
    """What the exact index alone makes reachable: a real-time request does at least what a
    precomputed one does (HTTP, shedding, the row lookup, naming, the response, impression
    logging) plus the exact search, so the bare app's CPU over that sum bounds its ratio."""
    bare_cpu = sat["bare FastAPI (baseline)"][1]
    slates_cpu = sat["precomputed slates"][1]
    ivf = search.pop("ivf")
    per_row = min(search.values())
    floor = slates_cpu + per_row
    return [
        f"Exact search alone (the served flat index, {N_ARTISTS:,} x {DIM}, one FAISS thread, "
        "in-process, CPU per row): "
        + ", ".join(f"{us:,.0f} us {name}" for name, us in search.items())
        + f": {per_row / bare_cpu:.2f}x the bare app's whole request ({bare_cpu:,.0f} us), and "
        "barely cheaper per row in a batch (a flat scan reads every vector once per query). A "
        f"real-time request does at least what a precomputed one does ({slates_cpu:,.0f} us) "
        f"plus that search: {floor:,.0f} us, so with the exact index the real-time path can "
        f"reach at most **{bare_cpu / floor:.2f}x** the bare app's CPU rate in this run. "
        f"IVF-Flat as export builds it past {FLAT_MAX:,} artists, on the same rows: nprobe "
        f"{ivf['nprobe']}, recall@100 {ivf['recall']:.3f} against exact, {ivf['us']:,.0f} us a "
        f"row (bound {bare_cpu / (slates_cpu + ivf['us']):.2f}x); not served here, the bench's "
        "catalogue is below that size (`benchmarks/bench_serving.py:search_cpu_us`).",
    ]


def _swap_under_load(base: str, bundles: Path, spec: object, paths: Path, seconds: float) -> dict:
    """200 req/s with and without bundle swaps in the middle; the swaps are real publishes."""
    from tests.fixtures.synthetic_bundle import publish_synthetic

    without = _open(base, paths, 200, seconds)
    n_swaps = 4
    done: list[int] = []

    def swapper() -> None:
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {1})  # this thread builds bundles: off the server's core
        time.sleep(1.0)
        for i in range(n_swaps):
            publish_synthetic(bundles, spec, version=f"2024020{i}T000000Z-swap")  # type: ignore[arg-type]
            r = httpx.post(f"{base}/admin/reload", headers={"X-Admin-Token": "bench"}, timeout=60)
            if r.status_code == 200 and r.json()["swapped"]:
                done.append(i)
            time.sleep(max(0.5, seconds / (n_swaps + 1) - 1))

    t = threading.Thread(target=swapper)
    t.start()
    with_swaps = _open(base, paths, 200, seconds)
    t.join()
    return {"with": with_swaps, "without": without, "swaps": len(done)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--write", action="store_true", help="record the section in benchmarks/README.md"
    )
    args = parser.parse_args()
    section = main(args.quick)
    if args.write:
        from benchmarks.run import record

        record("serving", section)
    print(section)
