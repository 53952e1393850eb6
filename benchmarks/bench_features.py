"""Feature build time and peak memory at 10k users / 1M events and 100k users / 10M events.

Run: ``python -m benchmarks.bench_features [--quick] [--sizes 10000000,16000000] [--write]``
(default 10k/1M and 100k/10M; quick: 10k/1M and 30k/3M; ``--sizes``: those event counts, one
user per 100 events). With two sizes or more, the peak memory's slope per event between the
smallest and the largest, and the event count at which it would reach 16 GiB: the point to
switch to the Spark engine on a 16 GB machine.
The synthetic lake is drawn with numpy (power-law users and artists, 35 days) straight into
Parquet partitions; each build runs in a fresh subprocess whose own peak RSS (``VmHWM``) is
the peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.constants import DAY_MS
from core.memory import peak_rss_mb

START_MS = 1_709_251_200_000  # 2024-03-01T00:00Z
TYPES = np.array(["impression", "click", "stream", "follow", "unfollow"], dtype=object)
TYPE_P = [0.45, 0.08, 0.42, 0.04, 0.01]
COMMAND = ".venv/bin/python -m benchmarks.bench_features"


def _power(n: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** alpha
    return rng.permutation(w / w.sum())


def make_lake(root: Path, n_users: int, n_events: int, days: int = 35, seed: int = 0) -> None:
    """Write lake/events/dt=*, the lake/users view and lake/artists.parquet under ``root``."""
    from data.schemas import ARTISTS, LAKE_EVENTS, TS, USERS

    rng = np.random.default_rng(seed)
    n_artists = max(n_users // 5, 100)
    user_ids = pa.array([f"{i:016x}" * 4 for i in range(n_users)])  # 64 chars like an HMAC
    artist_ids = pa.array([f"ar{i}" for i in range(n_artists)])
    track_ids = pa.array([f"ar{i // 10}-t{i % 10}" for i in range(n_artists * 10)])
    u = rng.choice(n_users, n_events, p=_power(n_users, 0.8, rng))
    a = rng.choice(n_artists, n_events, p=_power(n_artists, 1.0, rng))
    et = rng.choice(len(TYPES), n_events, p=TYPE_P)
    ts = np.sort(START_MS + rng.integers(0, days * DAY_MS, n_events))
    stream = et == 2
    tr = np.where(stream, a * 10 + rng.integers(0, 10, n_events), -1)
    ms = np.where(stream, rng.integers(5_000, 300_000, n_events), -1)
    dur = np.where(stream & (rng.random(n_events) > 0.05), 240_000, -1)
    bounds = np.searchsorted(ts, START_MS + DAY_MS * np.arange(days + 1))
    for d in range(days):
        s = slice(bounds[d], bounds[d + 1])
        n = bounds[d + 1] - bounds[d]
        cols = {
            "event_id": pa.array(np.arange(bounds[d], bounds[d + 1])).cast(pa.string()),
            "event_type": pa.array(TYPES[et[s]], pa.string()),
            "user_key": user_ids.take(pa.array(u[s])),
            "artist_id": artist_ids.take(pa.array(a[s])),
            "track_id": track_ids.take(pa.array(np.maximum(tr[s], 0), mask=tr[s] < 0)),
            "request_id": pa.nulls(n, pa.string()),
            "position": pa.nulls(n, pa.int32()),
            "ms_played": pa.array(ms[s], mask=ms[s] < 0),
            "track_duration_ms": pa.array(dur[s], mask=dur[s] < 0),
            "event_ts": pa.array(ts[s]).cast(TS),
            "server_ts": pa.array(ts[s]).cast(TS),
            "country": pa.nulls(n, pa.string()),
            "device": pa.nulls(n, pa.string()),
        }
        # the lake columns the features never read (bundle_version, source ...) stay null
        t = pa.table({f.name: cols.get(f.name, pa.nulls(n, f.type)) for f in LAKE_EVENTS}).cast(
            LAKE_EVENTS
        )
        day = time.strftime("%Y-%m-%d", time.gmtime((START_MS + d * DAY_MS) / 1000))
        out = root / "lake" / "events" / f"dt={day}"
        out.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, out / "part-0.parquet")
    groups = np.array(["<18", "18-24", "25-34", "35-44", "45-54", "55+", "unknown"], dtype=object)
    countries = np.array(["US", "DE", "GB", "BR", "SE", "JP", "unknown"], dtype=object)
    users = {
        "user_key": user_ids,
        "age_group": pa.array(groups[rng.integers(0, 7, n_users)], pa.string()),
        "gender": pa.array(np.array(["m", "f", "n"], dtype=object)[rng.integers(0, 3, n_users)]),
        "country": pa.array(countries[rng.integers(0, 7, n_users)], pa.string()),
        "region": pa.array(["r"] * n_users),
        "city": pa.array(["c"] * n_users),
        "signup_ts": pa.array(START_MS - rng.integers(0, 400 * DAY_MS, n_users)).cast(TS),
    }
    from data.lake import publish_users

    publish_users(root / "lake" / "users", pa.table(users).cast(USERS), "bench")
    artists = {
        "artist_id": artist_ids,
        "name": artist_ids,
        "tags": pa.array([[f"g{i % 30}"] for i in range(n_artists)]),
        "created_ts": pa.array(np.full(n_artists, START_MS - 100 * DAY_MS)).cast(TS),
    }
    pq.write_table(pa.table(artists).cast(ARTISTS), root / "lake" / "artists.parquet")
    migrate(root / "lake" / "events")  # the partitions become the Delta events table


def migrate(events: Path) -> None:
    from data.lake import migrate as migrate_lake

    migrate_lake(events)


def _child(root: str) -> None:
    from core.workspace import Workspace
    from data.features.build import build_features

    started, cpu = time.perf_counter(), time.process_time()
    summary = build_features(Workspace(Path(root)))
    seconds = time.perf_counter() - started
    result = {
        "seconds": seconds,
        "cpu_s": time.process_time() - cpu,  # all threads of the build, user + system
        "peak_mb": peak_rss_mb(),  # VmHWM: this process's own, not its parent's lake
        "examples": summary["counts"]["examples"],
        "load": os.getloadavg()[0],
    }
    print(json.dumps(result))


def measure(n_users: int, n_events: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        t = time.perf_counter()
        make_lake(Path(tmp), n_users, n_events)
        gen = time.perf_counter() - t
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_features", "--child", tmp],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"users": n_users, "events": n_events, "generate_s": gen, **result}


LIMIT_MB = 16 * 1024  # the machine size the local engine's largest build is stated for


def main(quick: bool = False, sizes: list[int] | None = None) -> str:
    if sizes:
        pairs = [(n // 100, n) for n in sizes]
    else:
        pairs = [(10_000, 1_000_000), (30_000, 3_000_000) if quick else (100_000, 10_000_000)]
    rows = [measure(*s) for s in pairs]
    small, big = rows[0], rows[-1]
    flags = " --quick" if quick else ""
    if sizes:
        flags = " --sizes " + ",".join(str(n) for n in sizes)
    lines = [
        "## Feature build (`data.features.build.build_features`)",
        "",
        f"Command: `{COMMAND}{flags}`. Synthetic lake (numpy, 35 days, "
        "power-law users and artists); the build runs in a fresh process, peak = its own "
        "peak RSS (VmHWM). "
        "Includes writing all feature tables and publishing to the SQLite online store. "
        "Wall time depends on the machine's load (1-minute load average at the end of each "
        f"build shown; {os.cpu_count()} cores); CPU s is the build's own user + system time, "
        "all threads.",
        "",
        "| users | events | examples | wall s | CPU s | peak MB | load |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['users']:,} | {r['events']:,} | {r['examples']:,} | "
            f"{r['seconds']:.1f} | {r['cpu_s']:.1f} | {r['peak_mb']:.0f} | "
            f"{r['load']:.1f} |"
        )
    scale = big["events"] / small["events"]
    lines += [
        "",
        f"Scaling x{scale:.0f} events: wall x{big['seconds'] / small['seconds']:.1f}, "
        f"CPU x{big['cpu_s'] / small['cpu_s']:.1f}, "
        f"peak memory x{big['peak_mb'] / small['peak_mb']:.1f} (linear would be x{scale:.0f}).",
    ]
    slope = (big["peak_mb"] - small["peak_mb"]) / max(big["events"] - small["events"], 1)
    if slope > 0:
        at_limit = big["events"] + (LIMIT_MB - big["peak_mb"]) / slope
        under = [r for r in rows if r["peak_mb"] < LIMIT_MB]
        largest = max(under, key=lambda r: r["events"])["events"] if under else 0
        lines += [
            "",
            f"Peak memory per event (slope from {small['events']:,} to {big['events']:,} "
            f"events): {slope * 1024 * 1024:,.0f} bytes; at that slope the local build reaches "
            f"16 GiB at about {at_limit / 1e6:.0f} M events. Largest size measured under 16 GiB "
            f"here: {largest:,} events. **The point to switch to Spark** "
            "(`tastemaker features --engine spark`): a lake near that size on a 16 GB machine.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default=None, help="event counts, comma-separated")
    parser.add_argument("--write", action="store_true", help="record into benchmarks/results")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child)
    else:
        sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else None
        text = main(quick=args.quick, sizes=sizes)
        print(text)
        if args.write:
            from benchmarks.run import record

            record("features", text)
