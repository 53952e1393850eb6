"""The Spark feature engine (``local[2]``) beside the local engine, on the same lakes.

Run: ``python -m benchmarks.bench_spark_features [--quick]`` (quick: 1M events only).
The lake is :func:`benchmarks.bench_features.make_lake` (a Delta table, 35 days). Each build
runs in a fresh process; its ``ru_maxrss`` is the driver's Python peak (Spark's JVM and its
Python workers are other processes, bounded by Spark's own memory settings). After both
builds the six tables are compared file by file (``pa.Table.equals``: same rows in the same
order, same types, exact values).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.bench_features import make_lake

COMMAND = ".venv/bin/python -m benchmarks.bench_spark_features"
TABLES = ("examples", "sequences", "eval_users", "user_features", "artist_features", "trending")


def _child(root: str, engine: str) -> None:
    from core.settings import Settings
    from core.workspace import Workspace
    from data.features.build import build_features

    started, cpu = time.perf_counter(), time.process_time()
    spark = None
    if engine == "spark":
        from data.features.spark import spark_session

        spark = spark_session(Settings(), "local[2]")
    summary = build_features(Workspace(Path(root)), spark=spark)
    if spark is not None:
        spark.stop()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "seconds": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu,  # the driver's own; Spark's workers are not in it
        "peak_mb": usage.ru_maxrss / 1024,
        "examples": summary["counts"]["examples"],
        "load": os.getloadavg()[0],
    }
    print(json.dumps(result))


def _build(root: Path, engine: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_spark_features", "--child", str(root), engine],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    if out.returncode:
        raise RuntimeError(f"the {engine} build failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _same(a: Path, b: Path) -> bool:
    from core.workspace import FeatureDir

    left, right = FeatureDir(a), FeatureDir(b)
    return all(
        pq.read_table(getattr(left, t)).equals(pq.read_table(getattr(right, t))) for t in TABLES
    )


def measure(n_users: int, n_events: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
        root = Path(tmp)
        make_lake(root, n_users, n_events)
        local = _build(root, "local")
        shutil.move(root / "features", root / "features-local")
        spark = _build(root, "spark")
        same = _same(root / "features-local", root / "features")
    return {"users": n_users, "events": n_events, "local": local, "spark": spark, "same": same}


def main(quick: bool = False) -> str:
    sizes = [(10_000, 1_000_000)] + ([] if quick else [(100_000, 10_000_000)])
    rows = [measure(*s) for s in sizes]
    lines = [
        "## Feature build on Spark (`tastemaker features --engine spark --master 'local[2]'`)",
        "",
        f"Command: `{COMMAND}{' --quick' if quick else ''}`. The lake of the feature build "
        "above (a Delta table, 35 days); each engine builds in a fresh process, one after the "
        "other on the same lake. Peak = the driver's Python ru_maxrss (Spark's JVM and Python "
        "workers are separate processes, not in it). Same tables: all six compared file by "
        f"file, exactly. {os.cpu_count()} shared cores; load = 1-minute load average after.",
        "",
        "| users | events | engine | wall s | driver CPU s | driver peak MB | load | same tables |",
        "|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        for engine in ("local", "spark"):
            m = r[engine]
            lines.append(
                f"| {r['users']:,} | {r['events']:,} | {engine} | {m['seconds']:.1f} | "
                f"{m['cpu_s']:.1f} | {m['peak_mb']:.0f} | {m['load']:.1f} | "
                f"{'yes' if r['same'] else 'NO'} |"
            )
    if len(rows) > 1:
        small, big = rows[0]["spark"], rows[-1]["spark"]
        scale = rows[-1]["events"] / rows[0]["events"]
        lines += [
            "",
            f"Spark, x{scale:.0f} events: wall x{big['seconds'] / small['seconds']:.1f} "
            "(target: 10 M -> 100 M at most x11; 100 M events was not run here: the 2 shared "
            "cores would need hours).",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
    else:
        print(main(quick=args.quick))
