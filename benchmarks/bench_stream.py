"""Streaming features: worker throughput, freshness (posted -> applied), Redis cost.

Synthetic listeners with 50-artist batch rows in a SQLite online store (the seeds), events
drawn from a fixed mix (60 % impressions, 25 % streams, 10 % clicks, 5 % follows) as raw JSON
lines on a Redis stream. The worker (:class:`data.features.stream.FeatureStreamer`, what
``tastemaker stream-features`` runs) is a child process pinned to core 0; Redis is the local
server (its CPU from ``INFO cpu``).

* Throughput: the worker drains a backlog; events/s per worker core = events / worker CPU s.
* Freshness: a publisher offers a fixed event rate for a while and a probe posts a stream
  event of its own every 20 ms and polls the probe's live row until it shows it: posted ->
  visible (what the next recommendation request reads).
* Cost: worker and Redis CPU per event, Redis memory per listener (``MEMORY USAGE``).

    .venv/bin/python -m benchmarks.bench_stream [--quick] [--redis redis://127.0.0.1:6379/N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson

from benchmarks.bench_serving import ROOT, _pin

DEFAULT_URL = "redis://127.0.0.1:6379/15"
KEY = b"bench-stream-secret-key-0123456789"
N_ARTISTS = 20_000
MIX = (("impression", 0.60), ("stream", 0.25), ("click", 0.10), ("follow", 0.05))


def _lines(n: int, n_users: int, start_ms: int, rng: np.random.Generator) -> list[bytes]:
    types = rng.choice([t for t, _ in MIX], size=n, p=[p for _, p in MIX])
    users = rng.integers(0, n_users, n)
    artists = rng.integers(0, N_ARTISTS, n)
    out = []
    for i in range(n):
        ts = start_ms + i
        e = {
            "event_id": f"b-{uuid.uuid4().hex[:12]}-{i}",
            "event_type": str(types[i]),
            "user_id": f"u{users[i]}",
            "artist_id": f"a{artists[i]}",
            "client_ts": datetime.fromtimestamp(ts / 1000, tz=timezone.utc).isoformat(),
            "server_ts": ts,
        }
        if types[i] == "stream":
            e.update(track_id=f"t{artists[i]}", ms_played=int(rng.integers(1000, 240_000)))
            e["track_duration_ms"] = 240_000
        out.append(orjson.dumps(e))
    return out


def _seed_rows(path: Path, n_users: int, rng: np.random.Generator) -> None:
    from data.features.online_store import open_online_store
    from data.pii import pseudonymise

    now = int(time.time() * 1000)
    rows = []
    for u in range(n_users):
        picks = [f"a{i}" for i in rng.choice(N_ARTISTS, 110, replace=False)]
        rows.append(
            {
                "user_key": pseudonymise(f"u{u}", KEY),
                "as_of": now - 86_400_000,
                "history": picks[:50],
                "history_age_s": [3600.0 * i for i in range(50)],
                "recent_tracks": [f"t{a[1:]}" for a in picks[:50]],
                "followed": picks[50:60],
                "seen": picks,
                "n_impressions": 100,
                "n_clicks": 5,
                "n_streams": 50,
            }
        )
    store = open_online_store(path)
    store.put_many(rows)
    store.close()


def child(url: str, stream: str, prefix: str, rows: str, n_users: int, exit_idle: bool) -> None:
    """The worker process: drain ``stream`` (until idle, or until SIGTERM)."""
    import signal

    import pyarrow as pa
    import redis

    from data.features.online_store import open_online_store
    from data.features.stream import FeatureStreamer, StreamConfig
    from data.ingest.validate import Lookups

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    client = redis.Redis.from_url(url)
    lookups = Lookups(users=pa.array([f"u{u}" for u in range(n_users)]))
    config = StreamConfig(
        stream=stream,
        state_prefix=prefix,
        consumer="bench",
        batch_size=1000,
        block_ms=5,
        exit_when_idle=exit_idle,
    )
    store = open_online_store(rows)
    worker = FeatureStreamer(client, store, KEY, lookups, config)
    cpu0, t0 = time.process_time(), time.perf_counter()
    stats = worker.run(stop)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    print(
        json.dumps({"entries": stats.entries, "outcomes": stats.outcomes, "cpu": cpu, "wall": wall})
    )


def _spawn(url: str, stream: str, prefix: str, rows: Path, n_users: int, exit_idle: bool):
    cmd = [*_pin(0), sys.executable, "-m", "benchmarks.bench_stream", "--child", url, stream]
    cmd += [prefix, str(rows), str(n_users)] + (["--exit-idle"] if exit_idle else [])
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def _redis_cpu(client) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _publish(client, stream: str, lines: list[bytes]) -> None:
    pipe = client.pipeline(transaction=False)
    for i, ln in enumerate(lines, start=1):
        pipe.xadd(stream, {b"event": ln})
        if i % 2000 == 0:
            pipe.execute()
    pipe.execute()


def _freshness(client, url, stream, prefix, rows, n_users, rate: float, seconds: float) -> dict:
    """Offer ``rate`` events/s for ``seconds`` with a worker running; probe posted -> visible."""
    from data.features.stream import state_key
    from data.pii import pseudonymise

    rng = np.random.default_rng(1)
    proc = _spawn(url, stream, prefix, rows, n_users, exit_idle=False)
    time.sleep(3.0)  # imports, group
    lines = _lines(int(rate * seconds), n_users, int(time.time() * 1000), rng)
    probe_key = state_key(pseudonymise("u0", KEY), prefix)
    lat: list[float] = []
    done = threading.Event()

    def probe() -> None:
        i = 0
        while not done.is_set():
            artist = f"probe{i}"
            ts = int(time.time() * 1000)
            line = orjson.dumps(
                {
                    "event_id": f"probe-{uuid.uuid4().hex}",
                    "event_type": "follow",
                    "user_id": "u0",
                    "artist_id": artist,
                    "client_ts": datetime.fromtimestamp(ts / 1000, tz=timezone.utc).isoformat(),
                    "server_ts": ts,
                }
            )
            t0 = time.perf_counter()
            client.xadd(stream, {b"event": line})
            while time.perf_counter() - t0 < 5.0:
                blob = client.hget(probe_key, "f")
                if blob and artist.encode() in blob:
                    lat.append(time.perf_counter() - t0)
                    break
                time.sleep(0.0005)
            i += 1
            time.sleep(0.02)

    t = threading.Thread(target=probe)
    t.start()
    start = time.perf_counter()
    chunk = max(1, int(rate / 100))  # 100 publishes a second
    for j in range(0, len(lines), chunk):
        _publish(client, stream, lines[j : j + chunk])
        wait = start + (j + chunk) / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
    achieved = len(lines) / (time.perf_counter() - start)
    time.sleep(0.5)  # the last probes of the run
    done.set()
    t.join()
    proc.terminate()
    proc.communicate(timeout=60)
    a = np.array(lat) * 1000
    return {
        "rate": rate,
        "achieved": achieved,
        "probes": len(a),
        "p50": float(np.percentile(a, 50)) if len(a) else float("nan"),
        "p99": float(np.percentile(a, 99)) if len(a) else float("nan"),
        "max": float(a.max()) if len(a) else float("nan"),
    }


def main(quick: bool = False, url: str = DEFAULT_URL) -> str:
    """``url``: the Redis to measure on (default the test Redis, DB 15; its keys are removed)."""
    import redis

    from data.features.stream import StreamConfig

    client = redis.Redis.from_url(url)
    client.ping()
    n_users, n_events = (2_000, 40_000) if quick else (10_000, 200_000)
    rates = (2_000,) if quick else (2_000, 10_000)
    tag = f"bench-stream:{uuid.uuid4().hex[:8]}:"
    stream, prefix = f"{tag}events", f"{tag}live:"
    rng = np.random.default_rng(0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = Path(tmp) / "users.sqlite"
            _seed_rows(rows, n_users, rng)
            lines = _lines(n_events, n_users, int(time.time() * 1000) - 60_000, rng)
            _publish(client, stream, lines)
            r0 = _redis_cpu(client)
            proc = _spawn(url, stream, prefix, rows, n_users, exit_idle=True)
            out, _ = proc.communicate(timeout=600)
            redis_cpu = _redis_cpu(client) - r0  # includes the worker's start (idle Redis)
            result = json.loads(out.strip().splitlines()[-1])
            cpu, wall = result["cpu"], result["wall"]
            assert result["entries"] == n_events, result
            keys = list(client.scan_iter(f"{prefix}*", count=1000))
            tracks = [k for k in keys if k.startswith(f"{prefix}track:".encode())]
            keys = [k for k in keys if not k.startswith(f"{prefix}track:".encode())]
            sample = keys[:: max(1, len(keys) // 500)]
            mem = float(np.mean([client.memory_usage(k, samples=0) or 0 for k in sample]))
            track_mem = sum(client.memory_usage(k, samples=0) or 0 for k in tracks)
            fresh = [
                _freshness(
                    client, url, f"{stream}:f{r}", prefix, rows, n_users, r, 5 if quick else 10
                )
                for r in rates
            ]
    finally:
        for k in client.scan_iter(f"{tag}*", count=1000):
            client.delete(k)
    cmd = ".venv/bin/python -m benchmarks.bench_stream" + (" --quick" if quick else "")
    chunk = StreamConfig().apply_chunk
    lines_md = [
        "## Streaming features (`benchmarks/bench_stream.py`)",
        "",
        f"`{cmd} [--redis redis://127.0.0.1:6379/N]` — {n_users:,} listeners "
        f"seeded from 50-artist batch rows (SQLite), {n_events:,} events (60 % impressions, "
        "25 % streams, 10 % clicks, 5 % follows) as raw lines on a Redis stream; the worker "
        "(`FeatureStreamer`, what `tastemaker stream-features` runs) is one process pinned to "
        f"core 0, batches of 1,000 entries, {chunk} events a Lua call; Redis is the local server. "
        "CPU: the worker's own "
        "`process_time` around its run (imports excluded), Redis's `INFO cpu`.",
        "",
        "| what | value | target |",
        "|---|---|---|",
        f"| backlog drained: events/s (wall) | {n_events / wall:,.0f} | |",
        f"| events/s per worker core (events / worker CPU s) | {n_events / max(cpu, 1e-9):,.0f} "
        "| >= 20,000 |",
        f"| worker CPU per event | {cpu / n_events * 1e6:,.1f} us | |",
        f"| Redis CPU per event (read script, Lua apply, XACK) | "
        f"{redis_cpu / n_events * 1e6:,.1f} us | |",
        f"| Redis memory per listener (live row, `MEMORY USAGE ... SAMPLES 0`, {len(sample)} sampled) | "
        f"{mem:,.0f} bytes | |",
        f"| Redis memory of the per-track listen references ({len(tracks):,} tracks) | "
        f"{track_mem / max(len(tracks), 1):,.0f} bytes a track | |",
        "",
        "Posted -> visible in the listener's live row (what the next request reads), a probe "
        "follow every 20 ms while the publisher offers the rate below:",
        "",
        "| offered events/s | published events/s (achieved) | probes | p50 ms | p99 ms | max ms "
        "| target p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in fresh:
        lines_md.append(
            f"| {f['rate']:,.0f} | {f['achieved']:,.0f} | {f['probes']} | {f['p50']:.1f} | {f['p99']:.1f} "
            f"| {f['max']:.1f} | <= 1,000 |"
        )
    lines_md += [
        "",
        f"Machine: {os.cpu_count()} cores shared with other jobs (Redis, the publisher and the "
        f"probe share core 1), 1-min load average {os.getloadavg()[0]:.1f} at the end.",
    ]
    return "\n".join(lines_md) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--redis", default=DEFAULT_URL, help="default: %(default)s")
    parser.add_argument("--child", nargs=5, metavar=("URL", "STREAM", "PREFIX", "ROWS", "USERS"))
    parser.add_argument("--exit-idle", action="store_true")
    parser.add_argument(
        "--write", action="store_true", help="record the section in benchmarks/README.md"
    )
    args = parser.parse_args()
    if args.child:
        url, stream, prefix, rows, users = args.child
        child(url, stream, prefix, rows, int(users), args.exit_idle)
    else:
        section = main(args.quick, args.redis)
        if args.write:
            from benchmarks.run import record

            record("stream", section)
        print(section)
