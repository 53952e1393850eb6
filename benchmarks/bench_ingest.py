"""Ingest throughput: raw gzipped JSON lines -> validated, deduped, pseudonymised Parquet lake.

Compared, in the same run and on the same files, with a naive load:
``pandas.read_json(path, lines=True)`` per file (parse only: no validation, no dedupe, no
writes). Each side runs in its own child process pinned to ONE core (``sched_setaffinity``,
Arrow's thread pools set to 1), so peak RSS (``getrusage``) is that side's alone.

The raw set is generated here with numpy (fixed-width byte templates), not by the world,
so 2 million events take seconds to make: 1 % duplicate event ids (at-least-once redelivery)
and 0.5 % unknown artists (quarantined by a row rule), no unparseable lines.

    .venv/bin/python -m benchmarks.bench_ingest [--quick]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

N_FULL, N_QUICK = 2_000_000, 200_000
N_USERS, N_ARTISTS, N_DAYS = 50_000, 20_000, 20
START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
OFFSETS_MIN = np.array([-300, 0, 60, 120, 330, 540])
TYPES = [b"impression", b"click     ", b"stream    ", b"follow    "]


def _digits(values: np.ndarray, width: int, pad: str = "0") -> np.ndarray:
    """(N, width) uint8 ASCII digits of non-negative ints, left-padded with ``pad``.

    JSON numbers may not have leading zeros, so numbers are padded with spaces (JSON allows
    whitespace before a value) and only ids inside strings with zeros.
    """
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    out = (values[:, None] // powers % 10 + ord("0")).astype(np.uint8)
    if pad != "0":
        leading = (values[:, None] < powers) & (powers > 1)
        out[leading] = ord(pad)
    return out


def _put(buf: np.ndarray, template: bytes, marker: bytes, cols: np.ndarray) -> None:
    start = template.index(marker)
    buf[:, start : start + cols.shape[1]] = cols


def make_raw_events(n: int, seed: int = 0) -> Iterator[bytes]:
    """``N_DAYS`` uncompressed JSON-lines blobs holding ``n`` events in total, one at a time."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(n).astype(np.int64)
    dup = rng.random(n) < 0.01
    ids[dup] = ids[rng.integers(0, n, dup.sum())]  # resends of events from any day
    bounds = np.linspace(0, n, N_DAYS + 1).astype(np.int64)
    return (
        _day_blob(rng, ids[bounds[d] : bounds[d + 1]], START_MS + d * 86_400_000)
        for d in range(N_DAYS)
    )


def _day_blob(rng: np.random.Generator, ids: np.ndarray, day_ms: int) -> bytes:
    n = len(ids)
    template = (
        b'{"event_id":"ev-EEEEEEEEEEEE","event_type":"TTTTTTTTTT","user_id":"uUUUUUUU",'
        b'"artist_id":"aAAAAAAA","track_id":"tKKKKKKKKK","request_id":"rRRRRRRRRRRR",'
        b'"position":P,"ms_played":MMMMMMMM,"track_duration_ms":DDDDDDDD,'
        b'"client_ts":"CCCCCCCCCCCCCCCCCCCCCCCOOOOOO","server_ts":SSSSSSSSSSSSS,'
        b'"country":"DE","device":"ios"}\n'
    )
    server = np.sort(day_ms + rng.integers(0, 86_400_000, n))
    offsets = OFFSETS_MIN[rng.integers(0, len(OFFSETS_MIN), n)]
    client_utc = server - rng.integers(0, 60_000, n)
    local = (client_utc + offsets * 60_000).astype("datetime64[ms]")
    stamp = np.frombuffer(np.datetime_as_string(local, unit="ms").astype("S23").tobytes(), np.uint8)
    sign = np.where(offsets < 0, ord("-"), ord("+")).astype(np.uint8)
    off = np.abs(offsets)
    offset_cols = np.column_stack(
        [sign, _digits(off // 60, 2), np.full(n, ord(":"), np.uint8), _digits(off % 60, 2)]
    )
    artists = np.minimum(rng.zipf(1.3, n), N_ARTISTS) - 1
    artists[rng.random(n) < 0.005] = 9_999_999  # not in the catalogue
    duration = rng.integers(120_000, 400_000, n)
    buf = np.tile(np.frombuffer(template, np.uint8), (n, 1))
    _put(buf, template, b"EEEE", _digits(ids, 12))
    types = np.frombuffer(b"".join(TYPES), np.uint8).reshape(len(TYPES), 10)
    _put(buf, template, b"TTTT", types[rng.choice(len(TYPES), n, p=[0.6, 0.1, 0.28, 0.02])])
    _put(buf, template, b"UUUU", _digits(rng.integers(0, N_USERS, n), 7))
    _put(buf, template, b"AAAA", _digits(artists, 7))
    _put(buf, template, b"KKKK", _digits(rng.integers(0, 10**9, n), 9))
    _put(buf, template, b"RRRR", _digits(rng.integers(0, 10**11, n), 11))
    _put(buf, template, b"P,", _digits(rng.integers(0, 10, n), 1))
    _put(buf, template, b"MMMM", _digits((duration * rng.random(n)).astype(np.int64), 8, " "))
    _put(buf, template, b"DDDD", _digits(duration, 8, " "))
    _put(buf, template, b"CCCC", stamp.reshape(n, 23))
    _put(buf, template, b"OOOO", offset_cols)
    _put(buf, template, b"SSSS", _digits(server, 13))
    # the padded event types keep trailing spaces: strip them back to the contract's values
    blob = buf.tobytes()
    for t in TYPES:
        blob = blob.replace(b'"' + t + b'"', b'"' + t.strip() + b'"')
    return blob


def write_raw(root: Path, n: int) -> list[Path]:
    paths = []
    for d, blob in enumerate(make_raw_events(n)):  # ~330 bytes per event in memory
        path = root / "raw" / "events" / f"dt=2025-01-{d + 1:02d}" / "part-00000.jsonl.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(blob, compresslevel=6))
        paths.append(path)
    return paths


def _one_core() -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import pyarrow as pa

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)


def _peak_rss_mb() -> float:
    """This process's peak RSS since exec (VmHWM; ru_maxrss would include the parent's)."""
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(kind: str, root: Path) -> dict:
    _one_core()
    started, cpu = time.perf_counter(), time.process_time()
    if kind == "ingest":
        import pyarrow as pa

        from core.workspace import Workspace
        from data.ingest.job import ingest_store
        from data.ingest.objectstore import ObjectStore
        from data.ingest.validate import Lookups

        users = pa.array([f"u{i:07d}" for i in range(N_USERS)])
        artists = pa.array([f"a{i:07d}" for i in range(N_ARTISTS)])
        lookups = Lookups(users=users, deleted_users=pa.array([], pa.string()), artists=artists)
        ws = Workspace(root)
        manifest = ingest_store(ws, ObjectStore(ws.raw), lookups, key=b"bench-key-0123456789")
        rows = manifest["read"]
        extra = {k: manifest[k] for k in ("accepted", "duplicates", "quarantined")}
    else:
        import pandas as pd

        files = sorted((root / "raw" / "events").rglob("*.jsonl.gz"))
        rows = sum(len(pd.read_json(f, lines=True, compression="gzip")) for f in files)
        extra = {}
    return {
        "rows": rows,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "max_rss_mb": _peak_rss_mb(),
        **extra,
    }


def _run_child(kind: str, root: Path) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_ingest", "--child", kind, str(root)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(quick: bool = False) -> str:
    n = N_QUICK if quick else N_FULL
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        paths = write_raw(root, n)
        gen_s = time.perf_counter() - t0
        gz_mb = sum(p.stat().st_size for p in paths) / 2**20
        ours = _run_child("ingest", root)
        naive = _run_child("pandas", root)
    cmd = ".venv/bin/python -m benchmarks.bench_ingest" + (" --quick" if quick else "")
    row = "| {} | {:,.0f} | {:,.0f} | {:.2f} | {:.2f} | {:.0f} |"
    rates = {}
    for side, r in (("ours", ours), ("naive", naive)):
        rates[side] = (r["rows"] / r["cpu_seconds"], r["rows"] / r["seconds"])
    cpu_ratio = rates["ours"][0] / rates["naive"][0]
    wall_ratio = rates["ours"][1] / rates["naive"][1]
    met = rates["ours"][0] >= 500_000 and cpu_ratio >= 5
    return "\n".join(
        [
            "## Ingest throughput (raw JSON lines -> Parquet lake)",
            "",
            f"{n:,} events in {len(paths)} gzipped JSON-lines files ({gz_mb:.0f} MiB, "
            f"generated in {gen_s:.1f} s); each side in its own process pinned to one core, "
            "timed from process start (imports included). CPU s is the process's own CPU "
            "time (`time.process_time`), the fair figure on a shared machine; wall s includes "
            f"waiting for the CPU and fsync. gzip is inflated with ISA-L (`isal`).",
            "",
            "| load | events/s (CPU) | events/s (wall) | CPU s | wall s | peak RSS MiB |",
            "|---|---:|---:|---:|---:|---:|",
            row.format(
                "`tastemaker ingest` (parse, validate, dedupe, pseudonymise, write Parquet)",
                *rates["ours"],
                ours["cpu_seconds"],
                ours["seconds"],
                ours["max_rss_mb"],
            ),
            row.format(
                "naive `pandas.read_json(lines=True)` (parse only)",
                *rates["naive"],
                naive["cpu_seconds"],
                naive["seconds"],
                naive["max_rss_mb"],
            ),
            "",
            f"Ratio to the naive load, same run: **{cpu_ratio:.1f}x** by CPU time, "
            f"{wall_ratio:.1f}x by wall time. Ingest accepted {ours['accepted']:,}, dropped "
            f"{ours['duplicates']:,} duplicates, quarantined {ours['quarantined']:,}. "
            f"Targets (>= 500,000 events/s and >= 5x): {'met' if met else 'NOT met'}.",
            "",
            f"Command: `{cmd}`",
            "",
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "ROOT"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], Path(args.child[1]))))
    else:
        print(main(quick=args.quick))
