"""Simulated online A/B tests: the served two-tower against most-popular, EASE and random; and
the same model with streamed against day-old features.

A world with more listeners than the demo (so that the intervals separate) goes through the
whole pipeline (world -> ingest -> features -> train -> export), then ``tastemaker simulate``
runs the arms for 14 days on the same listeners. The listeners' rules (click, stream, follow,
churn) are in ``world/population.py`` and do not know which policy served them.

The freshness test (``--policy model@day-old --policy model@streamed --sessions-per-day 3``)
streams every simulated event through the streaming-features worker into Redis
(:mod:`jobs.simulate.fresh`), so it needs a Redis (``--redis``).
Run: ``.venv/bin/python -m benchmarks.bench_simulate [--quick] [--redis URL] [--write]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

COMMAND = ".venv/bin/python -m benchmarks.bench_simulate"
POLICIES = ("popular", "model", "ease", "random")
FRESH = ("model@day-old", "model@streamed")
SESSIONS = 3
DEFAULT_URL = "redis://127.0.0.1:6379/15"


def main(quick: bool = False, url: str = DEFAULT_URL) -> str:
    os.environ.setdefault("TASTEMAKER_DEMO", "1")
    from core.settings import Settings
    from core.workspace import Workspace
    from data.features.build import FeatureConfig, build_features
    from data.ingest.job import run_ingest
    from jobs.simulate import simulate
    from training.export import export_bundle
    from training.train import train_two_tower
    from training.train_config import lake_config
    from world.config import WorldConfig
    from world.generate import generate_world

    n_users = 4_000 if quick else 24_000
    world = dataclasses.replace(WorldConfig.demo(seed=11), n_users=n_users)
    with tempfile.TemporaryDirectory(prefix="tastemaker-bench-sim-") as tmp:
        ws = Workspace(Path(tmp) / "ws").ensure()
        started = time.perf_counter()
        generate_world(ws, world)
        run_ingest(ws)
        build_features(ws, FeatureConfig())
        run_dir = train_two_tower(ws, lake_config())
        export_bundle(ws, run_dir)
        pipeline_s = time.perf_counter() - started
        started = time.perf_counter()
        settings = Settings(workspace=ws.root)
        result = simulate(ws, list(POLICIES), days=14, seed=0, settings=settings)
        sim_s = time.perf_counter() - started
        started = time.perf_counter()
        fresh = simulate(
            ws,
            list(FRESH),
            days=14,
            seed=0,
            settings=settings,
            sessions_per_day=SESSIONS,
            redis_url=url,
        )
        fresh_s = time.perf_counter() - started
    return (
        "## Simulated A/B test (CTR, stream-through, churn)\n\n"
        f"Command: `{COMMAND}{' --quick' if quick else ''}` (the arms: "
        f"`tastemaker simulate --policy {' --policy '.join(POLICIES)} --days 14`)\n\n"
        f"A demo-like world with {n_users:,} listeners (seed 11), the whole pipeline in "
        f"{pipeline_s:.0f} s, then 14 simulated days in {sim_s:.0f} s. Listeners split at random "
        "between the arms; intervals are 95 % (Wilson for rates, normal approximation for "
        "differences).\n\n" + result["markdown"] + "\n" + _fresh_section(fresh, fresh_s)
    )


def _new_clicks(raw: dict[str, dict[str, Any]]) -> str:
    """Clicks on an artist the listener had not clicked before, per 100 impressions: the
    world clicks a re-shown favourite again as readily, which CTR rewards."""
    from evaluation.stats import Z95, diff_interval, wilson

    lines = []
    for arm in FRESH:
        r = raw[arm]
        lo, hi = wilson(r["new_clicks"], r["impressions"], Z95)
        rate = 100 * r["new_clicks"] / r["impressions"]
        lines.append(f"- `{arm}`: {rate:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]")
    a, b = (raw[arm] for arm in FRESH)
    d, dlo, dhi = diff_interval(
        a["new_clicks"], a["impressions"], b["new_clicks"], b["impressions"]
    )
    lines.append(f"- difference: {100 * d:+.3f} [{100 * dlo:+.3f}, {100 * dhi:+.3f}]")
    return (
        "\nNew-artist clicks per 100 impressions (a click on an artist the listener had not "
        "clicked before in the simulation):\n\n" + "\n".join(lines) + "\n"
    )


def _fresh_section(fresh: dict[str, Any], seconds: float) -> str:
    costs = {arm: fresh["raw"][arm]["cost"] for arm in FRESH}
    rows = "\n".join(
        f"| {arm} | {c['stream_events']:,} | {c['worker_cpu_us_per_event']:,.0f} us "
        f"| {c['live_rows']:,} | {c['redis_bytes_per_listener']:,} bytes "
        f"| {c['redis_track_bytes'] / 1e6:,.1f} MB |"
        for arm, c in costs.items()
    )
    return (
        "### Streamed against day-old features (the same model)\n\n"
        f"Command: the same world and bundle, then `tastemaker simulate --policy "
        f"{' --policy '.join(FRESH)} --days 14 --sessions-per-day {SESSIONS} --redis-url URL` "
        f"({seconds:.0f} s). A listener who logs in on a day has {SESSIONS} sessions that day. "
        "Both arms post every impression, click, stream and follow as raw events through the "
        "streaming-features worker (parse, validate, pseudonymise, the Lua update; seeded from "
        "the online store and the lake's reference counters); `@streamed` ranks every session "
        "from the live row as it is, `@day-old` once a day from the live row as of midnight "
        "(equal to the nightly batch features: the parity test). Clicks are kept off later "
        "slates from the next session (streamed) or the next day (day-old).\n\n"
        + fresh["markdown"]
        + _new_clicks(fresh["raw"])
        + "\nExtra cost of the live rows, measured in this run (the worker in-process; the Redis "
        "side of an event and the worker's throughput are in the streaming benchmark):\n\n"
        "| arm | events streamed | worker CPU per event | listeners with a live row "
        "| Redis per listener (`MEMORY USAGE`) | track references |\n"
        "|---|---|---|---|---|---|\n" + rows + "\n\n"
        f"Machine: {os.cpu_count()} cores shared with other jobs, 1-min load average "
        f"{os.getloadavg()[0]:.1f} at the end.\n"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--redis", default=DEFAULT_URL, help="default: %(default)s")
    parser.add_argument("--write", action="store_true", help="record the section (run.record)")
    args = parser.parse_args()
    section = main(args.quick, args.redis)
    print(section)
    if args.write:
        from benchmarks.run import record

        record("simulate", section)
    sys.exit(0)
