"""Peers tuned as hard as the two-tower on the demo world (``tastemaker demo``'s, seed 7).

``tastemaker tune --dataset demo --model all --trials N`` (:mod:`jobs.tune`): every model
gets the same budget of N optuna trials (the first its defaults), fitted on the train weeks
and scored on the validation week's warm users. Then each model with its default and its
tuned params is scored once on the test week (the temporal protocol of ``tastemaker
evaluate``: fitted on train + valid, warm users, seen artists excluded, full catalogue); the
two-tower is the lake job with its refit, as ``tastemaker demo`` trains it. Intervals: 95 %
bootstrap over users; the served two-tower (defaults) against the best tuned peer: paired.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_two_tower_demo import _world
from core.workspace import Workspace
from evaluation.evaluate import _baseline_scorer, _rank_and_score, _run_scorer
from evaluation.registry import TWO_TOWER, make_recommender
from evaluation.stats import mean_interval, paired_interval
from evaluation.temporal import index_lists, load_temporal
from jobs.tune import MODELS, TemporalValidation, TuneConfig, run_tuning, two_tower_config

log = logging.getLogger("tastemaker.benchmarks")
COMMAND = "python -m benchmarks.run --only tuned_demo"
TRIALS, QUICK_TRIALS = 8, 2
METRICS = ("recall@20", "ndcg@20")


def per_user_test(ws: Workspace, model: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Per-user test-week metrics (warm users, in order) of ``model`` with ``params``."""
    data = load_temporal(ws, "test")
    if model == TWO_TOWER:
        from training.train import train_two_tower

        run_dir = train_two_tower(ws, two_tower_config("demo", params or {}))
        score_fn, artist_ids = _run_scorer(TWO_TOWER, run_dir, data)
    else:
        rec = make_recommender(model, params).fit(data.train)
        score_fn, artist_ids = _baseline_scorer(rec, data), data.train.artist_ids
    seen = index_lists(data.users["seen"], artist_ids)
    targets = index_lists(data.users["targets"], artist_ids)
    warm = np.flatnonzero(data.warm)
    _, per_user = _rank_and_score(score_fn, artist_ids, warm, seen, targets, 100, (20,))
    return {m: np.asarray(per_user[m], np.float64) for m in METRICS}


def _cell(v: np.ndarray, n_boot: int) -> str:
    ci = mean_interval(v[~np.isnan(v)], n_boot, 0)
    return f"{ci['mean']:.3f} [{ci['lo']:.3f}, {ci['hi']:.3f}]"


def _params(p: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.items())


def main(quick: bool = False) -> str:
    os.environ.setdefault("TASTEMAKER_DEMO", "1")  # synthetic world: the public demo key
    trials = QUICK_TRIALS if quick else TRIALS
    n_boot = 200 if quick else 1000
    with tempfile.TemporaryDirectory(prefix="tuned-demo-") as tmp:
        ws = _world(Path(tmp))
        started = time.perf_counter()
        record = run_tuning(ws, TemporalValidation(ws), MODELS, TuneConfig(trials=trials))
        tune_s = time.perf_counter() - started
        rows: dict[str, tuple[Any, dict, dict | None]] = {}
        for model in ("popular", *MODELS):
            study = record["models"].get(model)
            default = per_user_test(ws, model, None)
            tuned = per_user_test(ws, model, study["best_params"]) if study else None
            rows[model] = (study, default, tuned)
            log.info("tuned demo %s done", model)
    lines = [
        "## Tuned peers on the demo world (preset demo, seed 7)",
        "",
        f"Command: `{COMMAND}{' --quick' if quick else ''}` = `tastemaker tune --dataset demo "
        f"--model all --trials {trials}` (optuna TPE, seed 0, the same {trials} trials per "
        "model, the first = its defaults; objective: Recall@20 of the validation week's warm "
        "users, fitted on the train weeks), then each model with its default and its tuned "
        "params scored once on the test week (fitted on train + valid; the two-tower is the "
        f"lake job with its refit). Tuning took {tune_s / 60:.0f} min on 2 shared cores. "
        f"Mean [95 % bootstrap interval, {n_boot} resamples of users]. Two-tower search "
        "space: lr, temperature, history share.",
        "",
        "| model | valid R@20 default → tuned | test R@20 default | test R@20 tuned | "
        "test N@20 default | test N@20 tuned | tuned params |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, (study, d, t) in rows.items():
        if study is None or t is None:
            lines.append(
                f"| {model} | – | {_cell(d['recall@20'], n_boot)} | – | "
                f"{_cell(d['ndcg@20'], n_boot)} | – | (nothing to tune) |"
            )
            continue
        lines.append(
            f"| {model} | {study['default']['recall@20']:.4f} → {study['best_value']:.4f} | "
            f"{_cell(d['recall@20'], n_boot)} | {_cell(t['recall@20'], n_boot)} | "
            f"{_cell(d['ndcg@20'], n_boot)} | {_cell(t['ndcg@20'], n_boot)} | "
            f"{_params(study['best_params'])} |"
        )
    peers = {m: rows[m][2] for m in ("als", "ease", "itemknn")}
    best = max(peers, key=lambda m: float(np.nanmean(peers[m]["recall@20"])))  # type: ignore[index]
    bp = peers[best]
    assert bp is not None
    lines.append("")
    for label, tt in (("served (default)", rows[TWO_TOWER][1]), ("tuned", rows[TWO_TOWER][2])):
        assert tt is not None
        cells = []
        for m in METRICS:
            ok = ~(np.isnan(tt[m]) | np.isnan(bp[m]))
            d = paired_interval(tt[m][ok], bp[m][ok], n_boot, 0)
            cells.append(f"{m} {d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]")
        lines.append(
            f"Two-tower {label} minus the best tuned peer ({best}), paired on the same "
            f"users: {'; '.join(cells)}."
        )
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(main(quick="--quick" in sys.argv[1:]))
