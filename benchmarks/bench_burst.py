"""The 6 a.m. burst, replayed against the real server on its precomputed path.

The shape: logins grow from 100 to 200,000 users within 10 minutes, exponentially (alarm
clocks go off together): ``N(t) = 100 * 2000**(t / 600)``, so the login rate
``N'(t) = N(t) * ln(2000) / 600`` rises to ~2,530 logins/s at the end, and every login asks
for its recommendations once. One server process (one core, the load generator on the other)
is measured for its saturation rate on the precomputed path; the cores needed at the peak are
``ceil(peak rate / (0.7 x per-core rate))`` (70 % utilisation keeps queueing inside the
latency budget). Then the burst is replayed open loop, time-compressed (the same rates,
a tenth of the duration, every tenth login kept), twice:

* as one of those replicas sees it (behind a balancer, a 1/R share of the logins);
* the whole burst on this one core: past its saturation the excess must be shed with 503
  (and retried later by the app), never left to time out.

Per phase of the replay: offered rate, served, shed, timeouts and p50/p99 of the served.

    TASTEMAKER_DEMO=1 .venv/bin/python -m benchmarks.bench_burst [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.bench_serving import ROOT, _check_source, _pin, _saturation, _server, prepare

START_USERS, PEAK_USERS, WINDOW_S = 100, 200_000, 600.0
UTILISATION = 0.7
PHASES = 6


def login_times(compress: float, share: int) -> np.ndarray:
    """Send times (s from the start of the replay) of the logins one server gets: the burst's
    logins in order, every ``compress * share``-th kept, time divided by ``compress``."""
    growth = math.log(PEAK_USERS / START_USERS) / WINDOW_S  # N(t) = START * e^(growth t)
    n = np.arange(START_USERS, PEAK_USERS, max(1, round(compress * share)), dtype=np.float64)
    return np.log(n / START_USERS) / growth / compress  # (logins,)


def _replay(base: str, paths: Path, times: np.ndarray, root: Path, name: str) -> dict:
    schedule = root / f"{name}.txt"
    schedule.write_text("".join(f"{t:.6f}\n" for t in times))
    cmd = [*_pin(1), sys.executable, "-m", "benchmarks.loadgen", "--url", base, "--paths"]
    cmd += [str(paths), "--schedule", str(schedule), "--phases", str(PHASES)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return json.loads(out)


def _rows(label: str, result: dict, compress: float) -> list[str]:
    rows = []
    for p in result["phases"]:
        ok = p["ok"] or {"p50": "-", "p99": "-"}
        rows.append(
            f"| {label} | {p['from_s'] * compress / 60:.1f}-{p['to_s'] * compress / 60:.1f} "
            f"| {p['rate']:,.0f} | {p['status']['200']:,} | {p['status']['503']:,} "
            f"| {p['timeouts']} | {ok['p50']} | {ok['p99']} |"
        )
    return rows


def main(quick: bool = False) -> str:
    os.environ.setdefault("TASTEMAKER_DEMO", "1")  # synthetic users only: the demo key is fine
    compress = 30.0 if quick else 10.0
    growth = math.log(PEAK_USERS / START_USERS) / WINDOW_S
    peak = PEAK_USERS * growth  # logins/s at the end of the window
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _, _, uids, paths, lua, env = prepare(root, 400 if quick else 2000)
        app = ["serving.app:create_app", "--factory"]
        env = {**env, "TASTEMAKER_SLATE_STORE_URL": str(root / "slates.sqlite")}
        with _server(app, env) as base:
            _check_source(base, uids[0], "precomputed")
            _saturation(base, lua, 1)  # warm-up
            per_core, cpu_us = _saturation(base, lua, 3 if quick else 8)
            cores = max(1, math.ceil(peak / (UTILISATION * per_core)))
            share = _replay(base, paths, login_times(compress, cores), root, "share")
            whole = _replay(base, paths, login_times(compress, 1), root, "whole")
    cmd = (
        f"TASTEMAKER_DEMO=1 .venv/bin/python -m benchmarks.bench_burst{' --quick' if quick else ''}"
    )
    lines = [
        "## The 6 a.m. burst (`benchmarks/bench_burst.py`)",
        "",
        f"`{cmd}` — logins growing exponentially from {START_USERS} to {PEAK_USERS:,} users "
        f"in {WINDOW_S / 60:.0f} minutes (peak {peak:,.0f} logins/s, one recommendation request "
        f"each), against the precomputed path ({len(uids):,} users with slates in SQLite, "
        "20,000 artists, k=10); server: one uvicorn process on core 0, load generator "
        f"(`benchmarks.loadgen --schedule`, open loop, 1 s timeout) on core 1. Replays are "
        f"time-compressed {compress:.0f}x: the same rates, every {compress:.0f}th login, "
        f"{WINDOW_S / compress:.0f} s long; minutes below are burst time.",
        "",
        f"Per-core saturation (precomputed path, `wrk -c8`, 2xx only): **{per_core:,.0f} req/s** "
        f"({cpu_us:,.0f} us of server CPU a request). Cores needed at the peak: "
        f"ceil({peak:,.0f} / ({UTILISATION} x {per_core:,.0f})) = **{cores}** "
        f"(one worker process per core: `tastemaker serve --workers {cores}` on a "
        f"{cores}-core machine, or {cores} one-core replicas behind a balancer).",
        "",
        "| replay | burst minutes | offered req/s | 200 | 503 | timeouts | p50 ms (200s) "
        "| p99 ms (200s) |",
        "|---|---|---|---|---|---|---|---|",
        *_rows(f"one of {cores} replicas (1/{cores} of the logins)", share, compress),
        *_rows("the whole burst on this one core", whole, compress),
        "",
        f"Totals: one replica's share {share['status']} with {share['timeouts']} timeouts and "
        f"{share['errors']} errors; the whole burst on one core {whole['status']} with "
        f"{whole['timeouts']} timeouts and {whole['errors']} errors. 1-min load average at the "
        f"end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores shared with other jobs.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(main(parser.parse_args().quick))
