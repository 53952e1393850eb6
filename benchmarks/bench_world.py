"""World generator at scale: ``tastemaker world --users N`` up to 1 M listeners (~100 M events).

Each size runs the real command in a child process (``python -m tastemaker.cli world``), on
this machine's cores (the chunked generator forks one worker per CPU it may use). Measured:
wall time, CPU time (user + system of the command and its workers), the peak resident memory
of the whole process tree (sampled every 0.2 s from ``/proc``) and of its largest process.
Worlds up to 25,000 users are one pass (the draws the presets use); bigger ones are written
10,000 users at a time (``world.generate.CHUNK_USERS``).

Target (issue 18): 1 M users in at most 10 minutes of wall time on 2 cores.

    .venv/bin/python -m benchmarks.bench_world [--quick]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.procs import TreePeak

SIZES_FULL = (10_000, 50_000, 200_000, 1_000_000)
SIZES_QUICK = (10_000, 50_000)
TARGET_USERS, TARGET_S = 1_000_000, 600.0
ROOT = Path(__file__).resolve().parents[1]

# the generator before the chunked one (commit e24567d), same machine, same command
BEFORE = (
    "Before (commit e24567d, one pass over all users, every line kept as its own orjson "
    "result): 10,000 users 11.4 s wall, 11.3 s CPU, peak 5.2 GB; 50,000 users killed by the "
    "kernel (out of memory) after 61 s at 21.8 GB; memory grew ~4 KiB per delivered line "
    "(orjson keeps a 4 KiB allocation behind each small result)."
)


def run_world(users: int, workspace: Path) -> dict:
    """Run ``tastemaker world --users N`` once; wall, CPU, peak memory and its summary."""
    env = dict(os.environ, TASTEMAKER_DEMO="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "tastemaker.cli", "--workspace", str(workspace)]
    cmd += ["world", "--users", str(users)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    peak = TreePeak(proc.pid)
    out, _ = proc.communicate()
    wall = time.perf_counter() - started
    peak.stop()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = {}
    for line in out.splitlines():
        key, _, value = line.strip().partition(": ")
        if value.strip().isdigit():
            summary[key] = int(value)
    raw = sum(f.stat().st_size for f in (workspace / "raw").rglob("*") if f.is_file())
    return {
        "users": users,
        "events": summary["events"],
        "lines": summary["lines"],
        "files": summary["files"],
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_tree_gb": peak.tree / 1e9,
        "peak_process_gb": peak.largest / 1e9,
        "raw_gb": raw / 1e9,
    }


def main(quick: bool = False) -> str:
    sizes = SIZES_QUICK if quick else SIZES_FULL
    rows = []
    for users in sizes:
        with tempfile.TemporaryDirectory(prefix="tastemaker-bench-world-") as tmp:
            ws = Path(tmp) / "ws"
            rows.append(run_world(users, ws))
            shutil.rmtree(ws, ignore_errors=True)
        print(f"   world {users:,} users: {rows[-1]['wall_s']:.0f} s", file=sys.stderr)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        "## World generator",
        "",
        f"`python -m benchmarks.bench_world{' --quick' if quick else ''}`: runs "
        "`python -m tastemaker.cli --workspace WS world --users N` (demo preset, seed 0) on "
        f"{cores} cores; wall time, CPU time of the command and its workers, peak resident "
        "memory of the process tree (sampled) and of its largest process, raw bytes written.",
        "",
        "| users | events | lines | files | wall s | CPU s | events/s (wall) "
        "| peak RSS, tree | largest process | raw gz |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['users']:,} | {r['events']:,} | {r['lines']:,} | {r['files']:,} "
            f"| {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['events'] / r['wall_s']:,.0f} "
            f"| {r['peak_tree_gb']:.2f} GB | {r['peak_process_gb']:.2f} GB "
            f"| {r['raw_gb']:.2f} GB |"
        )
    big = max(rows, key=lambda r: r["users"])
    if big["users"] >= TARGET_USERS:
        verdict = "met" if big["wall_s"] <= TARGET_S else "NOT met"
        measured = f"{big['wall_s']:.0f} s wall ({big['cpu_s']:.0f} s CPU)"
        lines += ["", f"Target, 1 M users ≤ 10 minutes on 2 cores: **{verdict}** ({measured})."]
    else:
        projected = big["wall_s"] * TARGET_USERS / big["users"]
        lines += [
            "",
            f"Target, 1 M users ≤ 10 minutes on 2 cores: not measured in this run (--quick); "
            f"linear projection from {big['users']:,} users: {projected:.0f} s wall.",
        ]
    lines += ["", BEFORE]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(main(quick=parser.parse_args().quick))
