"""The demo: every stage on the embedded default world (``tastemaker demo``, which then serves).

world -> ingest -> features -> train -> evaluate -> export -> serve. Each stage is the same
function its own subcommand runs; this only chains them, times them and prints the
evaluation table a newcomer should see.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("tastemaker.demo")

TABLE_MODELS = ("two-tower", "als", "ease", "itemknn", "popular", "random")
TABLE_METRICS = ("recall@20", "ndcg@20", "recall@50", "hitrate@10")


def demo_train_config() -> Any:
    """The lake's training config (:func:`training.train_config.lake_config`)."""
    from training.train_config import lake_config

    return lake_config()


def _timed(name: str, fn: Callable[[], Any], timings: dict[str, float]) -> Any:
    started = time.perf_counter()
    log.info("stage %s ...", name)
    out = fn()
    timings[name] = time.perf_counter() - started
    log.info("stage %s done in %.1f s", name, timings[name])
    return out


def run_pipeline(
    ws: Any, preset: str = "demo", seed: int = 7, gate: bool = True, key: bytes | None = None
) -> dict[str, Any]:
    """Run stages 1-6 on a fresh world in ``ws``; returns paths, metrics, the gate's decision
    and timings. With ``gate`` the model is published only if the champion/challenger gate
    promotes it (against most-popular when the workspace has no champion yet); a model kept
    out leaves the champion's bundle serving. ``gate=False`` publishes unconditionally (the
    tiny test world, whose catalogue is too small for any model to beat most-popular clearly,
    uses it to test the plumbing)."""
    from data.features.build import FeatureConfig, build_features
    from data.ingest.job import run_ingest
    from evaluation.evaluate import evaluate_temporal
    from training.export import export_bundle
    from training.train import TrainConfig, train_two_tower
    from world.generate import WorldConfig, generate_world

    world_cfg = WorldConfig.preset(preset, seed)
    train_cfg = demo_train_config() if preset == "demo" else TrainConfig(epochs=3, batch_size=256)
    timings: dict[str, float] = {}
    _timed("world", lambda: generate_world(ws, world_cfg), timings)
    _timed("ingest", lambda: run_ingest(ws, key=key), timings)
    _timed("features", lambda: build_features(ws, FeatureConfig()), timings)
    run_dir = _timed("train", lambda: train_two_tower(ws, train_cfg), timings)
    metrics = _timed("evaluate", lambda: evaluate_temporal(ws, run_dir), timings)
    decision = None
    if gate:
        from jobs.daily import DailyConfig, gate_and_publish

        decision, version, champion = _timed(
            "gate",
            # the demo's first publication has nothing else servable: its gate's reference is
            # most-popular alone (the daily loop adds the best benchmark peer)
            lambda: gate_and_publish(
                ws,
                Path(run_dir),
                metrics,
                DailyConfig(train=train_cfg, warm_slates=False, benchmarks=()),
            ),
            timings,
        )
        if version is None and (champion is None or champion.bundle_version is None):
            raise RuntimeError(
                f"the model was kept out by the gate and no earlier champion "
                f"exists to serve: {decision.summary()}"
            )
        bundle = ws.bundles / (version or champion.bundle_version)
    else:
        bundle = _timed("export", lambda: export_bundle(ws, run_dir), timings)
    from evaluation.dashboard import write_dashboard

    _timed("dashboard", lambda: write_dashboard(ws), timings)
    return {
        "run_dir": Path(run_dir),
        "bundle": Path(bundle),
        "metrics": metrics,
        "decision": decision,
        "timings": timings,
    }


def format_table(evaluation: dict[str, Any], split: str = "test") -> str:
    """Markdown table of the headline metrics, one row per model that was evaluated."""
    models = evaluation["models"]
    header = "| model | " + " | ".join(TABLE_METRICS) + " |"
    rows = [header, "|---" * (len(TABLE_METRICS) + 1) + "|"]
    for name in TABLE_MODELS:
        if name in models:
            vals = models[name]
            cells = [f"{vals.get(f'{split}/{m}', float('nan')):.3f}" for m in TABLE_METRICS]
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
    n = evaluation.get("n_users")
    return "\n".join(rows) + (f"\n\n{n} users evaluated." if n else "")
