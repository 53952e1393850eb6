"""The burst, deployed: replicas behind nginx, Redis, bundles from an object store.

One run, on this machine (2 cores shared with other jobs):

1. **Precompute** 200,000 distinct listeners (50-artist history, 110 excluded; a synthetic
   20,000 x 64 bundle) the way a promotion does (``warm_and_publish``: push the bundle to a
   ``file://`` object store, score every user into the bundle's own Redis slate store, move
   ``CURRENT``), in a child process pinned to one core: wall and CPU seconds.
2. **Cold start** of a replica with an empty bundle cache: spawn -> pull from the object store
   -> verify -> load -> ``/readyz`` 200, three times.
3. **Per core through the balancer**: ``wrk -c8`` through nginx against one tastemaker replica
   (precomputed path, 200,000 distinct users cycled) and against the bare FastAPI app
   (``benchmarks.bare_app``), each server pinned to core 0, nginx and wrk on core 1.
4. **The burst**: two replicas (one per core) behind nginx; the exponential ramp 100 ->
   200,000 logins in 10 minutes replayed open loop (``benchmarks.loadgen --schedule``,
   time-compressed 10x: the same rates, every 10th login, 60 s; ``--compress 1`` replays all
   ~200,000 logins in real time, 10 minutes), every login a distinct user; one replica
   SIGKILLed at the peak (90 % of the replay); the 1-min load average sampled throughout.

    TASTEMAKER_DEMO=1 .venv/bin/python -m benchmarks.bench_deploy --redis redis://127.0.0.1:6379/N
    ... --compress 1 --write    # every login, real time; its section into benchmarks/README.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.bench_burst import PEAK_USERS, PHASES, START_USERS, WINDOW_S, login_times
from benchmarks.bench_precompute import N_ARTISTS, _users
from benchmarks.bench_serving import DIM, ROOT, K, _pin, _saturation
from benchmarks.loadgen import wrk_paths_script

N_USERS = 200_000
COMPRESS = 10.0

PRECOMPUTE = """
import json, resource, sys, time
from pathlib import Path
from serving.precompute import warm_and_publish
t0 = time.perf_counter()
w = warm_and_publish(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4],
                     bundle_store_url=sys.argv[5])
wall = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"slates": w.precomputed.slates, "users": w.precomputed.users,
                  "score_s": w.precomputed.seconds, "wall_s": wall,
                  "cpu_s": ru.ru_utime + ru.ru_stime}))
"""


def _user_table(n: int, artists: list[str], key: bytes) -> tuple[list[str], pa.Table]:
    from data.pii import pseudonymise

    users = _users(n, artists, np.random.default_rng(0))
    ids = [f"burst-user-{i}" for i in range(n)]
    keys = pa.array([pseudonymise(u, key) for u in ids])
    return ids, users.set_column(users.schema.get_field_index("user_key"), "user_key", keys)


def _loadgen(url: str, paths: Path, schedule: Path) -> dict:
    cmd = [*_pin(1), sys.executable, "-m", "benchmarks.loadgen", "--url", url, "--paths"]
    cmd += [str(paths), "--schedule", str(schedule), "--phases", str(PHASES)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return json.loads(out)


class _LoadSampler(threading.Thread):
    """The 1-min load average every ``every_s`` seconds until stopped."""

    def __init__(self, every_s: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.every_s, self.samples = every_s, [os.getloadavg()[0]]
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.every_s):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> list[float]:
        self._stop_event.set()
        self.join()
        self.samples.append(os.getloadavg()[0])
        return self.samples


def main(
    quick: bool = False,
    redis_url: str | None = None,
    raw: Path | None = None,
    compress: float | None = None,
) -> str:
    """The section for benchmarks/README.md; Redis: ``redis_url``, else the test Redis
    (``$TASTEMAKER_TEST_REDIS_URL``, as ``tests/conftest.py`` reads it). ``compress``: the
    burst's time compression (default 10, 30 with ``quick``; 1 = every login, real time)."""
    if redis_url is None:
        from tests.conftest import REDIS_URL

        redis_url = REDIS_URL
    os.environ.setdefault("TASTEMAKER_DEMO", "1")  # synthetic listeners: the demo key is fine
    import redis

    from data.features.online_store import open_online_store
    from data.pii import pseudonym_key
    from index.bundle import publish_bundle
    from tests.deploy.balancer import Cluster, free_port
    from tests.fixtures.synthetic_bundle import SyntheticSpec, artist_ids, bundle_files

    n_users = 20_000 if quick else N_USERS
    if compress is None:
        compress = 30.0 if quick else COMPRESS
    if compress < 1:
        raise ValueError(f"compress must be >= 1 (got {compress})")
    if len(login_times(compress, 1)) > n_users:  # before minutes of precompute, not after
        raise ValueError(f"{len(login_times(compress, 1)):,} logins > {n_users:,} users")
    prefix = f"bench-deploy-{uuid.uuid4().hex[:8]}:"
    online, slates = f"{redis_url}?prefix={prefix}users", f"{redis_url}?prefix={prefix}slates"
    key = pseudonym_key()
    results: dict = {"compress": compress}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = SyntheticSpec(n_artists=N_ARTISTS, n_clusters=DIM, dim=DIM, history_len=100)
        files, manifest = bundle_files(spec)
        bundles = root / "publisher" / "bundles"
        version = publish_bundle(
            bundles, files, manifest, version="20240101T000000Z-burst", make_current=False
        )
        ids, table = _user_table(n_users, artist_ids(spec), key)
        users = root / "user_features.parquet"
        pq.write_table(table, users)
        store = open_online_store(online)  # readiness wants rows; slates answer every login
        store.put_many(table.slice(0, 2000).to_pylist())
        store.close()
        object_store = f"file://{root / 'object-store'}"
        cluster = None
        try:
            # 1. precompute, one core
            done = subprocess.run(
                [*_pin(0), sys.executable, "-c", PRECOMPUTE, str(bundles), version, str(users)]
                + [slates, object_store],
                capture_output=True,
                text=True,
                cwd=ROOT,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-3000:])
            results["precompute"] = json.loads(done.stdout.strip().splitlines()[-1])

            env = {
                **os.environ,
                "TASTEMAKER_WORKSPACE": str(root / "ws"),
                "TASTEMAKER_BUNDLE_STORE_URL": object_store,
                "TASTEMAKER_ONLINE_STORE_URL": online,
                "TASTEMAKER_SLATE_STORE_URL": slates,
                "TASTEMAKER_RELOAD_INTERVAL_S": "5",
            }
            # 2. cold starts
            cold = []
            for i in range(3):
                probe = Cluster(root / f"cold-{i}", env)
                probe.workdir.mkdir()
                r = probe.start_replica(
                    env={"TASTEMAKER_BUNDLE_DIR": str(root / f"cold-cache-{i}")},
                    prefix=tuple(_pin(0)),
                )
                try:
                    cold.append(probe.wait_ready(r, timeout_s=120))
                finally:
                    probe.stop()
            results["cold_start_s"] = cold

            # 3. per core through nginx: the bare app, then one replica
            paths, lua = wrk_paths_script(
                root, [f"/v1/users/{u}/recommendations?k={K}" for u in ids]
            )
            seconds = 3 if quick else 8
            port = free_port()
            bare = subprocess.Popen(
                [*_pin(0), sys.executable, "-m", "uvicorn", "benchmarks.bare_app:app"]
                + [
                    "--port",
                    str(port),
                    "--loop",
                    "uvloop",
                    "--http",
                    "httptools",
                    "--no-access-log",
                ]
                + ["--log-level", "warning"],
                cwd=ROOT,
                start_new_session=True,  # its own group: Cluster.stop ends it
            )
            front = Cluster(root / "front-bare", env)
            front.workdir.mkdir()
            front.add_upstream(port, bare)
            time.sleep(3)
            front.start_nginx(pin=tuple(_pin(1)))
            base = _Base(front.url, bare.pid)
            _saturation(base, lua, 2)  # warm-up
            results["bare"] = _saturation(base, lua, seconds)
            front.stop()

            one = Cluster(root / "front-one", env)
            one.workdir.mkdir()
            r = one.start_replica(
                env={"TASTEMAKER_BUNDLE_DIR": str(root / "c1")}, prefix=tuple(_pin(0))
            )
            one.wait_ready(r)
            one.start_nginx(pin=tuple(_pin(1)))
            base = _Base(one.url, r.proc.pid)
            _saturation(base, lua, 2)
            results["tastemaker"] = _saturation(base, lua, seconds)
            source = _source(one.url, ids[-1])
            one.stop()

            # 4. the burst: two replicas, one killed at the peak
            cluster = Cluster(root / "burst", env)
            cluster.workdir.mkdir()
            for core in (0, 1):
                cluster.start_replica(
                    env={"TASTEMAKER_BUNDLE_DIR": str(root / f"burst-cache-{core}")},
                    prefix=tuple(_pin(core)),
                )
            for r in cluster.replicas:
                cluster.wait_ready(r)
            cluster.start_nginx(pin=tuple(_pin(1)))
            times = login_times(compress, 1)
            assert len(times) <= n_users, "every login must be a distinct user"
            schedule = root / "schedule.txt"
            schedule.write_text("".join(f"{t:.6f}\n" for t in times))
            kill_at = 0.9 * float(times[-1])
            victim = cluster.replicas[1]
            killer = threading.Timer(kill_at, victim.kill)
            sampler = _LoadSampler()
            sampler.start()
            killer.start()
            try:
                burst = _loadgen(cluster.url, paths, schedule)
            finally:
                killer.join()
                results["burst_load"] = sampler.stop()
            results["burst"] = burst
            results["burst_kill_at_s"] = kill_at
            results["burst_logins"] = len(times)
        finally:
            if cluster is not None:
                cluster.stop()
            r_ = redis.Redis.from_url(redis_url)
            keys = list(r_.scan_iter(f"{prefix}*"))
            if keys:
                r_.unlink(*keys)
            r_.close()
    if raw is not None:
        raw.write_text(json.dumps(results, indent=1))
    return _report(results, n_users, source, quick)


class _Base(str):
    pid: int

    def __new__(cls, url: str, pid: int) -> _Base:
        self = super().__new__(cls, url)
        self.pid = pid
        return self


def _source(url: str, user: str) -> str:
    import httpx

    return str(httpx.get(f"{url}/v1/users/{user}/recommendations?k={K}").json()["source"])


def _report(r: dict, n_users: int, source: str, quick: bool) -> str:
    growth = math.log(PEAK_USERS / START_USERS) / WINDOW_S
    peak = PEAK_USERS * growth
    pre = r["precompute"]
    bare_rate, bare_cpu = r["bare"]
    tm_rate, tm_cpu = r["tastemaker"]
    per_core = tm_rate
    replicas = max(1, math.ceil(peak / (0.7 * per_core)))
    b = r["burst"]
    compress = float(r["compress"])
    load = r["burst_load"]
    answered = sum(int(v) for v in b["status"].values())
    shed = int(b["status"].get("503", 0))
    failed = b["errors"] + answered - shed - int(b["status"].get("200", 0))  # 5xx, 4xx: errors
    p99 = (b["ok"] or {}).get("p99", "-")
    cmd = "TASTEMAKER_DEMO=1 .venv/bin/python -m benchmarks.bench_deploy --redis REDIS_URL"
    cmd += " --quick" if quick else ""
    cmd += f" --compress {compress:g}" if compress != (30.0 if quick else COMPRESS) else ""
    replay = (
        "Real time: every login of the ramp"
        if compress == 1
        else f"Time-compressed {compress:g}x (the same rates, every {compress:g}th login)"
    )
    rows = []
    for p in b["phases"]:
        ok = p["ok"] or {"p50": "-", "p99": "-"}
        rows.append(
            f"| {p['from_s'] * compress / 60:.1f}-{p['to_s'] * compress / 60:.1f} "
            f"| {p['rate']:,.0f} | {p['status']['200']:,} | {p['status']['503']:,} "
            f"| {p['timeouts']} | {p['errors']} | {ok['p50']} | {ok['p99']} |"
        )
    lines = [
        "## The burst, deployed (`benchmarks/bench_deploy.py`)",
        "",
        f"`{cmd}` — {n_users:,} distinct listeners (50-artist history, 110 excluded), "
        f"{N_ARTISTS:,} artists x {DIM} dims (flat); online features and slates in Redis, "
        "bundles from a `file://` object store, replicas = `tastemaker serve` processes behind "
        f"nginx on loopback; {os.cpu_count()} cores shared with other jobs (1-min load average "
        f"during the burst: mean {sum(load) / len(load):.1f}, max {max(load):.1f}, "
        f"{len(load)} samples; at the end {os.getloadavg()[0]:.1f}).",
        "",
        "| what | measured | target | |",
        "|---|---:|---|---|",
        f"| precompute {pre['slates']:,} users (warm, then publish; one core) | "
        f"{pre['wall_s']:.1f} s wall, {pre['cpu_s']:.1f} s CPU "
        f"({pre['users'] / pre['score_s']:,.0f} users/s scoring) | <= 120 s on one core | "
        f"{'met' if pre['wall_s'] <= 120 else 'NOT met'} |",
        f"| cold start (pull, verify, load, ready), 3 runs | "
        f"{', '.join(f'{s:.1f}' for s in r['cold_start_s'])} s | <= 10 s | "
        f"{'met' if max(r['cold_start_s']) <= 10 else 'NOT met'} |",
        f"| precomputed path through nginx, one core (`wrk -c8`, source {source}) | "
        f"{tm_rate:,.0f} req/s ({tm_cpu:,.0f} us server CPU/request) = "
        f"{tm_rate / bare_rate:.2f}x the bare app's {bare_rate:,.0f} req/s "
        f"({bare_cpu:,.0f} us) | >= 0.6x | {'met' if tm_rate / bare_rate >= 0.6 else 'NOT met'} |",
        f"| burst, {r['burst_logins']:,} distinct logins, one of 2 replicas SIGKILLed at "
        f"{r['burst_kill_at_s'] * compress / 60:.1f} burst-min | {failed} client errors, "
        f"{b['timeouts']} timeouts, p99 {p99} ms, shed {shed / max(answered, 1):.2%} | 0, 0, "
        f"<= 25 ms, <= 0.5 % | "
        f"{'met' if (failed, b['timeouts']) == (0, 0) and shed <= 0.005 * answered and p99 != '-' and float(p99) <= 25 else 'NOT met'} |",
        "",
        f"Replicas for the peak ({peak:,.0f} logins/s) from the per-core rate through the "
        f"balancer: ceil({peak:,.0f} / (0.7 x {per_core:,.0f})) = **{replicas}**, plus one spare. "
        "Two replicas on this 2-core machine also share their cores with nginx and the load "
        "generator: the burst rows measure that, not two dedicated cores.",
        "",
        f"Burst totals: sent {b['sent']:,}, answered {b['status']}, {b['timeouts']} timeouts, "
        f"{b['errors']} errors; p50/p99/max of the 200s {b['ok']} ms. {replay}.",
        "",
        "| burst minutes | offered req/s | 200 | 503 | timeouts | errors | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default=None, help="a Redis URL (default: the test Redis)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results")
    parser.add_argument(
        "--compress",
        type=float,
        default=None,
        help="the burst's time compression (default 10, 30 with --quick; 1 = real time)",
    )
    parser.add_argument(
        "--write", action="store_true", help="record the section in benchmarks/README.md"
    )
    args = parser.parse_args()
    section = main(args.quick, args.redis, args.json, args.compress)
    if args.write:
        from benchmarks.run import record

        record("deploy", section)
    print(section)
