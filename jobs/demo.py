"""The demo: every stage on the embedded default world (``tastemaker demo``, which then serves).

world -> ingest -> features -> tune (the benchmark peers) -> train -> evaluate -> two-stage ->
gate + export -> serve. Each stage is the same function its own subcommand (or the daily loop)
runs; this only chains them, times them and prints the evaluation table a newcomer should see.
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
# optuna trials per benchmark peer before the gate (benchmarks/README.md: 3 peers x 8 trials
# took 13 s on the demo world)
TUNE_TRIALS = 8


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
    """Run stages 1-6 on a fresh world in ``ws``; returns paths, metrics, the gate's decision,
    what serves and timings. With ``gate`` the day's systems are weighed as the daily loop
    weighs them (:func:`jobs.daily.gate_and_publish` with the daily config): the benchmark
    peers are tuned (:data:`TUNE_TRIALS` trials each, ``tastemaker tune --dataset demo``), the
    two-stage system is fitted for the run, and the best servable system (the two-stage
    system, else the two-tower) is published only if it beats the champion (most-popular when
    the workspace has none) *and* the best tuned peer; when it trails that peer, the peer
    faces the champion in its place and, promoted, serves through precomputed slates. With
    nothing promoted the champion's bundle keeps serving. ``gate=False`` publishes the
    two-tower unconditionally (the tiny test world, whose catalogue is too small for any model
    to beat most-popular clearly, uses it to test the plumbing)."""
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
    if gate:
        _timed("tune", lambda: tune_benchmarks(ws), timings)
    run_dir = Path(_timed("train", lambda: train_two_tower(ws, train_cfg), timings))
    metrics = _timed("evaluate", lambda: evaluate_temporal(ws, run_dir), timings)
    decision = serving = two_stage = None
    if gate:
        from jobs.daily import DailyConfig, gate_and_publish
        from jobs.daily.steps import fit_two_stage

        # the daily loop's gate: the champion and the best tuned benchmark peer; the demo
        # serves at once, so CURRENT moves at export (`tastemaker demo` precomputes after)
        config = DailyConfig(train=train_cfg, warm_slates=False)
        two_stage = _timed(
            "two-stage", lambda: fit_two_stage(ws, run_dir, train_cfg, config, None), timings
        )
        decision, version, serving = _timed(
            "gate",
            lambda: gate_and_publish(ws, run_dir, metrics, config, two_stage=two_stage),
            timings,
        )
        if version is None and (serving is None or serving.bundle_version is None):
            raise RuntimeError(
                f"no system was promoted and no earlier champion exists to serve: "
                f"{decision.summary()}"
            )
        bundle = ws.bundles / (version or serving.bundle_version)
    else:
        bundle = _timed("export", lambda: export_bundle(ws, run_dir), timings)
    from evaluation.dashboard import write_dashboard

    _timed("dashboard", lambda: write_dashboard(ws), timings)
    return {
        "run_dir": run_dir,
        "bundle": Path(bundle),
        "metrics": metrics,
        "decision": decision,
        "serving": serving,  # the champion's registry row after the gate (None without gate)
        "two_stage": two_stage,  # the two-stage job's record (None without gate)
        "timings": timings,
    }


def tune_benchmarks(ws: Any, trials: int = TUNE_TRIALS) -> dict[str, Any]:
    """``tastemaker tune --dataset demo`` for the gate's tunable benchmark peers, ``trials``
    each (the same budget per peer); the gate reads the saved params."""
    from evaluation.gate import DEFAULT_BENCHMARKS
    from jobs.tune import MODELS, TuneConfig, make_validation, run_tuning

    peers = [m for m in DEFAULT_BENCHMARKS if m in MODELS]
    return run_tuning(ws, make_validation(ws, "demo"), peers, TuneConfig(trials=trials))


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
