"""The Spark feature engine (``local[2]``) beside the local engine, on the same lakes.

Run: ``python -m benchmarks.bench_spark_features [--quick] [--sizes 1000000,10000000]``
(quick: 1M events only; sizes: events, 100 per user). The lake is
:func:`benchmarks.bench_features.make_lake` (a Delta table, 35 days). Each build runs in a
fresh process; its own peak RSS (``VmHWM``) is the driver's Python peak, and the process
tree (the Python driver, Spark's JVM, its Python workers) is sampled for the tree's peak and the
largest process's. After both builds the six tables are compared file by file
(``pa.Table.equals``: same rows in the same order, same types, exact values). Above
``--local-max`` events the local engine is not run (it would not fit this machine's memory:
see the feature build's memory slope), so the Spark build has nothing to be compared with.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.bench_features import make_lake
from benchmarks.procs import TreePeak
from core.memory import peak_rss_mb

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

        spark = spark_session(Settings(), "local[2]")  # TASTEMAKER_SPARK_DRIVER_MEMORY
    summary = build_features(Workspace(Path(root)), spark=spark)
    if spark is not None:
        spark.stop()
    result = {
        "seconds": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu,  # the driver's own; Spark's workers are not in it
        "peak_mb": peak_rss_mb(),  # VmHWM: ru_maxrss would carry the parent's lake peak
        "examples": summary["counts"]["examples"],
        "load": os.getloadavg()[0],
    }
    print(json.dumps(result))


def _build(root: Path, engine: str) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_spark_features", "--child", str(root), engine]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    peak = TreePeak(proc.pid, every=0.5)
    out, err = proc.communicate()
    peak.stop()
    if proc.returncode:
        raise RuntimeError(f"the {engine} build failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "tree_mb": peak.tree / 2**20, "largest_mb": peak.largest / 2**20}


def _same(a: Path, b: Path) -> bool:
    from core.workspace import FeatureDir

    left, right = FeatureDir(a), FeatureDir(b)
    return all(
        pq.read_table(getattr(left, t)).equals(pq.read_table(getattr(right, t))) for t in TABLES
    )


def measure(n_users: int, n_events: int, local_max: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
        root = Path(tmp)
        make_lake(root, n_users, n_events)
        local = None
        if n_events <= local_max:
            local = _build(root, "local")
            shutil.move(root / "features", root / "features-local")
        spark = _build(root, "spark")
        same = _same(root / "features-local", root / "features") if local else None
    print(f"   {n_events:,} events: spark {spark['seconds']:.0f} s", file=sys.stderr)
    return {"users": n_users, "events": n_events, "local": local, "spark": spark, "same": same}


LOCAL_MAX = 30_000_000  # the largest lake the local feature build was measured under 16 GB


def main(quick: bool = False, sizes: list[int] | None = None, local_max: int = LOCAL_MAX) -> str:
    events = sizes or ([1_000_000] if quick else [1_000_000, 10_000_000])
    rows = [measure(n // 100, n, local_max) for n in events]
    from core.settings import Settings

    heap = Settings().spark_driver_memory or "Spark's default, 1g"
    args = " --quick" if quick and not sizes else ""
    args += f" --sizes {','.join(str(n) for n in events)}" if sizes else ""
    args += f" --local-max {local_max}" if local_max != LOCAL_MAX else ""
    lines = [
        "## Feature build on Spark (`tastemaker features --engine spark --master 'local[2]'`)",
        "",
        f"Command: `{COMMAND}{args}`. The lake of the feature build above (a Delta table, 35 "
        "days, 100 events a listener); each engine builds in a fresh process, one after the "
        "other on the same lake. Driver peak = the Python driver's own peak RSS (VmHWM; "
        "ru_maxrss would carry the benchmark's lake-making peak into the child); largest = the "
        "largest process of the build's process tree (Spark's JVM, in local mode the driver "
        f"and the executor at once, heap {heap}; or the Python driver); tree = the peak sum "
        "of the driver, the JVM "
        "and Spark's Python workers (sampled every 0.5 s). Same tables: all six compared file "
        f"by file, exactly; the local engine is not run above {local_max:,} events (its "
        f"memory slope puts it past this machine's). {os.cpu_count()} shared cores; load = "
        "1-minute load average after.",
        "",
        "| users | events | engine | wall s | driver CPU s | driver peak MB | largest MB | tree MB "
        "| load | same tables |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        for engine in ("local", "spark"):
            m = r[engine]
            if m is None:
                continue
            same = "not compared" if r["same"] is None else ("yes" if r["same"] else "NO")
            jvm = f"{m['largest_mb']:.0f}" if engine == "spark" else "-"
            lines.append(
                f"| {r['users']:,} | {r['events']:,} | {engine} | {m['seconds']:.1f} | "
                f"{m['cpu_s']:.1f} | {m['peak_mb']:.0f} | {jvm} | {m['tree_mb']:.0f} | "
                f"{m['load']:.1f} | {same} |"
            )
    by_size = {r["events"]: r["spark"] for r in rows}
    if 10_000_000 in by_size and 100_000_000 in by_size:
        small, big = by_size[10_000_000], by_size[100_000_000]
        ratio = big["seconds"] / small["seconds"]
        peak_gb = big["peak_mb"] / 1024
        lines += [
            "",
            "| target | measured | |",
            "|---|---|---|",
            f"| Spark `local[2]`, 10 M -> 100 M events: time x10 events <= x11 | "
            f"x{ratio:.1f} wall | {'met' if ratio <= 11 else 'NOT met'} |",
            f"| driver peak memory <= 4 GB at 100 M events | {peak_gb:.2f} GB (Python "
            f"driver); the largest process {big['largest_mb'] / 1024:.2f} GB | "
            f"{'met' if peak_gb <= 4 else 'NOT met'} |",
        ]
    elif len(rows) > 1:
        small, big = rows[0]["spark"], rows[-1]["spark"]
        scale = rows[-1]["events"] / rows[0]["events"]
        lines += [
            "",
            f"Spark, x{scale:.0f} events: wall x{big['seconds'] / small['seconds']:.1f} "
            "(target: 10 M -> 100 M at most x11; 100 M events not run in this record).",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default=None, help="events per lake, comma-separated")
    parser.add_argument("--local-max", type=int, default=LOCAL_MAX)
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
    else:
        sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else None
        print(main(quick=args.quick, sizes=sizes, local_max=args.local_max))
