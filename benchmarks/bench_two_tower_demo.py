"""The lake-trained two-tower on the demo world: peers and a feature-group ablation, with
bootstrap intervals, on the temporal protocol (the held-out last week, warm users, full
catalogue, seen artists excluded).

What each feature group carries in the world: a user's genre preference is drawn from their
age group and country (``world/taste.py``), so segments carry a taste prior the history
already reveals for active users; the dense features (listen depth against other listeners,
clicks per 100 impressions against the user's own rate, log streams) describe engagement,
not taste. Followed artists (``follows_len``): a follow is the first organic stream of a
roster artist that passes ``follow_prob`` (``world/events.py``), so it marks lasting taste
among streamed artists, which repeats in the history also show, and never names a new artist.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from core.workspace import Workspace
from data.features.build import FeatureConfig, build_features
from data.ingest.job import run_ingest
from evaluation.evaluate import _baseline_scorer, _rank_and_score, _run_scorer
from evaluation.registry import make_recommender
from evaluation.stats import bootstrap_ci
from evaluation.temporal import index_lists, load_temporal
from training.train import train_two_tower
from training.train_config import TrainConfig
from world.generate import WorldConfig, generate_world

log = logging.getLogger("tastemaker.benchmarks")
COMMAND = "python -m benchmarks.run --only two_tower_demo"
METRICS = ("recall@20", "ndcg@20")
ABLATION: dict[str, dict[str, Any]] = {  # row -> TrainConfig / model overrides
    "history only": {"user_features": "history"},
    "+ segments": {"user_features": "segments"},
    "+ segments + dense (listen depth, CTR, streams)": {"user_features": "full"},
    "history only, self-attention encoder (order-aware)": {"pooling": "self-attention"},
    "history + followed artists": {"follows_len": 50},
}
PEERS = ("itemknn", "ease", "als", "popular")


def demo_config() -> TrainConfig:
    """The demo's training config (``jobs.demo``)."""
    from jobs.demo import demo_train_config

    return demo_train_config()


def _with(base: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """``base`` with fields of the training config or of its nested model config replaced."""
    top = {k: v for k, v in overrides.items() if hasattr(base, k) and k != "model"}
    model = {k: v for k, v in overrides.items() if k not in top}
    return dataclasses.replace(base, model=dataclasses.replace(base.model, **model), **top)


def _world(root: Path, seed: int = 7) -> Workspace:
    ws = Workspace(root)
    generate_world(ws, WorldConfig.preset("demo", seed))
    run_ingest(ws)
    build_features(ws, FeatureConfig())
    return ws


def _scores(ws: Workspace, name: str, run_dir: Path | None, n_boot: int) -> dict[str, list]:
    data = load_temporal(ws, "test")
    if run_dir is not None:
        score_fn, artist_ids = _run_scorer("two-tower", run_dir, data)
    else:
        model = make_recommender(name).fit(data.train)
        score_fn, artist_ids = _baseline_scorer(model, data), data.train.artist_ids
    seen = index_lists(data.users["seen"], artist_ids)
    targets = index_lists(data.users["targets"], artist_ids)
    warm = np.flatnonzero(data.warm)
    _, per_user = _rank_and_score(score_fn, artist_ids, warm, seen, targets, 100, (20,))
    values = np.stack([per_user[m] for m in METRICS], 1)  # (U, M)
    values = values[~np.isnan(values).any(1)]
    mean, lo, hi = bootstrap_ci(values, n_boot, 0)
    return {m: [float(mean[j]), float(lo[j]), float(hi[j])] for j, m in enumerate(METRICS)}


def _cell(v: list) -> str:
    return f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"


def main(quick: bool = False, only: list[str] | None = None, peers: tuple[str, ...] = PEERS) -> str:
    """The table; ``only`` (ABLATION labels) and ``peers`` narrow it (``--rows``, ``--no-peers``)."""
    # the demo world is synthetic: its pseudonyms may use the public demo key, as `make demo`
    os.environ.setdefault("TASTEMAKER_DEMO", "1")
    n_boot = 200 if quick else 1000
    base = demo_config()
    rows: list[tuple[str, dict[str, list], float]] = []
    with tempfile.TemporaryDirectory(prefix="demo-ablation-") as tmp:
        ws = _world(Path(tmp))
        groups = {"history only": ABLATION["history only"]} if quick else ABLATION
        if only is not None:
            groups = {k: ABLATION[k] for k in only}
        for label, overrides in groups.items():
            cfg = _with(base, overrides)
            started = time.perf_counter()
            run = train_two_tower(ws, cfg)
            seconds = time.perf_counter() - started
            rows.append((f"two-tower, {label}", _scores(ws, "two-tower", run, n_boot), seconds))
        for peer in peers:
            started = time.perf_counter()
            result = _scores(ws, peer, None, n_boot)
            rows.append((peer, result, time.perf_counter() - started))
    lines = [
        "## Two-tower on the demo world: feature groups and peers",
        "",
        f"Command: `{COMMAND}{' --quick' if quick else ''}` (`tastemaker demo` world, preset "
        f"demo, seed 7; test week, warm users; mean [95 % bootstrap interval, {n_boot} "
        "resamples of users]). Training seconds include the refit on train + valid.",
        "",
        "| model | Recall@20 | NDCG@20 | train s |",
        "|---|---|---|---|",
    ]
    for label, m, seconds in rows:
        lines.append(
            f"| {label} | {_cell(m['recall@20'])} | {_cell(m['ndcg@20'])} | {seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import argparse

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description="two-tower demo-world ablation")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", nargs="*", choices=list(ABLATION), default=None)
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args()
    print(main(args.quick, args.rows, () if args.no_peers else PEERS))
