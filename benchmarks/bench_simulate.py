"""Simulated online A/B test: the served two-tower against most-popular, EASE and random.

A world with more listeners than the demo (so that the intervals separate) goes through the
whole pipeline (world -> ingest -> features -> train -> export), then ``tastemaker simulate``
runs the arms for 14 days on the same listeners. The listeners' rules (click, stream, follow,
churn) are in ``world/population.py`` and do not know which policy served them.
Run: ``.venv/bin/python -m benchmarks.bench_simulate [--quick]``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

COMMAND = ".venv/bin/python -m benchmarks.bench_simulate"
POLICIES = ("popular", "model", "ease", "random")


def main(quick: bool = False) -> str:
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
    return (
        "## Simulated A/B test (CTR, stream-through, churn)\n\n"
        f"Command: `{COMMAND}{' --quick' if quick else ''}` (the arms: "
        f"`tastemaker simulate --policy {' --policy '.join(POLICIES)} --days 14`)\n\n"
        f"A demo-like world with {n_users:,} listeners (seed 11), the whole pipeline in "
        f"{pipeline_s:.0f} s, then 14 simulated days in {sim_s:.0f} s. Listeners split at random "
        "between the arms; intervals are 95 % (Wilson for rates, normal approximation for "
        "differences).\n\n" + result["markdown"]
    )


if __name__ == "__main__":
    print(main(quick="--quick" in sys.argv[1:]))
