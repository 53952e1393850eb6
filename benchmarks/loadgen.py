"""An open-loop HTTP load generator (its own process; pin it to another core than the server).

Requests are *scheduled* at a fixed rate and latency is measured from the scheduled time, so
time spent waiting for a free connection counts (no coordinated omission). Raw HTTP/1.1 over
keep-alive asyncio connections: one core generates a few thousand requests/s.

    python -m benchmarks.loadgen --url http://127.0.0.1:8000 --paths paths.txt --rate 500 \\
        --duration 10 [--probe /healthz]
    python -m benchmarks.loadgen ... --schedule sends.txt --phases 6   # a varying rate

Prints one JSON object: sent, ok, by status, timeouts, errors, latency percentiles (ms) of the
200s, of all answered requests, and of the probe path (requested every 100 ms on its own
connection, to show whether health checks wait behind the load). With ``--schedule`` (one send
time per line, seconds from the start) the rate follows the file, and ``--phases N`` adds the
same counts and percentiles for N equal slices of the schedule's duration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, path: str
) -> int:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def run(
    url: str,
    paths: list[str],
    rate: float,
    duration: float,
    timeout: float,
    conns: int,
    probe: str | None,
    offsets: list[float] | None = None,
    phases: int = 0,
) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if offsets is None:
        offsets = [i / rate for i in range(int(rate * duration))]
    else:
        duration = max(offsets[-1], 1e-9) if offsets else 0.0
        rate = len(offsets) / duration if duration else 0.0
    n = len(offsets)
    outcome: list[tuple[float, int, float]] = []  # (offset, status | 0 timeout | -1 error, s)
    queue: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
    lat: list[float] = []
    status_lat: dict[int, list[float]] = {}
    timeouts = errors = 0
    # the connections are opened before the clock starts, as a proxy's keep-alive pool would
    # be: a connection opened mid-overload waits in the kernel's accept queue (seen with
    # uvloop: ~100 connections unaccepted for over a second), which is not what is measured
    pool = [await asyncio.open_connection(host, port) for _ in range(conns)]
    t0 = time.perf_counter() + 0.2

    async def worker() -> None:
        nonlocal timeouts, errors
        conn: Any = pool.pop()
        while True:
            sched, path = await queue.get()
            if sched < 0:
                return
            try:
                if conn is None:
                    conn = await asyncio.open_connection(host, port)
                remaining = sched + timeout - time.perf_counter()
                if remaining <= 0:
                    raise TimeoutError
                try:
                    status = await asyncio.wait_for(_request(*conn, host, path), remaining)
                except (ConnectionError, asyncio.IncompleteReadError):
                    # the server closed the idle keep-alive connection (uvicorn: after 5 s):
                    # reconnect and send again, as an HTTP client's pool does for a GET
                    conn[1].close()
                    conn = await asyncio.open_connection(host, port)
                    remaining = sched + timeout - time.perf_counter()
                    status = await asyncio.wait_for(_request(*conn, host, path), remaining)
                done = time.perf_counter() - sched
                status_lat.setdefault(status, []).append(done)
                lat.append(done)
                outcome.append((sched - t0, status, done))
            except TimeoutError:
                timeouts += 1
                outcome.append((sched - t0, 0, timeout))
                if conn is not None:
                    conn[1].close()
                conn = None
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                outcome.append((sched - t0, -1, 0.0))
                conn = None

    probe_lat: list[float] = []

    async def prober() -> None:
        if probe is None:
            return
        conn = await asyncio.open_connection(host, port)
        end = t0 + duration
        while time.perf_counter() < end:
            await asyncio.sleep(0.1)
            s = time.perf_counter()
            try:
                await asyncio.wait_for(_request(*conn, host, probe), 5.0)
                probe_lat.append(time.perf_counter() - s)
            except TimeoutError:
                probe_lat.append(5.0)
                conn = await asyncio.open_connection(host, port)

    workers = [asyncio.create_task(worker()) for _ in range(conns)]
    probe_task = asyncio.create_task(prober())
    for i in range(n):
        sched = t0 + offsets[i]
        delay = sched - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((sched, paths[i % len(paths)]))
    for _ in workers:
        queue.put_nowait((-1.0, ""))
    await asyncio.gather(*workers)
    await probe_task

    def pct(xs: list[float]) -> dict:
        if not xs:
            return {}
        p = np.percentile(np.asarray(xs) * 1e3, [50, 99, 100])
        return {"p50": round(p[0], 2), "p99": round(p[1], 2), "max": round(p[2], 2)}

    per_phase = []
    for p in range(phases):
        lo, hi = duration * p / phases, duration * (p + 1) / phases
        part = [o for o in outcome if lo <= o[0] < hi or (p == phases - 1 and o[0] == hi)]
        sent = sum(lo <= x < hi or (p == phases - 1 and x == hi) for x in offsets)
        per_phase.append(
            {
                "from_s": round(lo, 2),
                "to_s": round(hi, 2),
                "rate": round(sent / (hi - lo), 1),
                "sent": sent,
                "status": {str(c): sum(o[1] == c for o in part) for c in (200, 503)},
                "timeouts": sum(o[1] == 0 for o in part),
                "errors": sum(o[1] == -1 for o in part),
                "ok": pct([o[2] for o in part if o[1] == 200]),
            }
        )
    return {
        "rate": rate,
        "sent": n,
        "phases": per_phase,
        "status": {str(k): len(v) for k, v in sorted(status_lat.items())},
        "timeouts": timeouts,
        "errors": errors,
        "ok": pct(status_lat.get(200, [])),
        "shed": pct(status_lat.get(503, [])),
        "all": pct(lat),
        "probe": pct(probe_lat),
    }


def wrk_paths_script(root: Path, paths: list[str]) -> tuple[Path, Path]:
    """``paths`` as a text file (``root/paths.txt``, the open-loop generator's ``--paths``) and
    a ``wrk`` Lua script (``root/paths.lua``) that GETs them in turn, round robin."""
    listed = root / "paths.txt"
    listed.write_text("".join(f"{p}\n" for p in paths))
    lua = root / "paths.lua"
    lua.write_text(
        'local paths = {}\nfor line in io.lines("' + str(listed) + '") do '
        "paths[#paths + 1] = line end\nlocal i = 0\n"
        "request = function()\n  i = i % #paths + 1\n"
        '  return wrk.format("GET", paths[i])\nend\n'
    )
    return listed, lua


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--paths", required=True, help="file with one request path per line")
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--schedule", default=None, help="file of send times (s), one per line")
    p.add_argument("--phases", type=int, default=0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--conns", type=int, default=256)
    p.add_argument("--probe", default=None)
    a = p.parse_args()
    import uvloop

    with open(a.paths) as f:
        paths = [line.strip() for line in f if line.strip()]
    offsets = None
    if a.schedule:
        with open(a.schedule) as f:
            offsets = sorted(float(line) for line in f if line.strip())
    elif a.rate <= 0:
        p.error("give --rate or --schedule")
    result = uvloop.run(
        run(a.url, paths, a.rate, a.duration, a.timeout, a.conns, a.probe, offsets, a.phases)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
