"""Listeners with few streams: the two-tower against trending-by-segment (the cold-start
fallback, ``models.trending``) and most-popular, on the demo world's temporal protocol.

Eval users of the test week are grouped by how many streams they had before the cutoff (the
``history`` the user tower reads, up to 100); every model ranks the full catalogue with the
user's ``seen`` artists excluded, as in ``tastemaker evaluate``. The two-tower reads only the
history (the demo's training config); trending reads the user's country. Intervals: 95 %
bootstrap over users, and the paired difference two-tower minus trending over the same
resamples.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from benchmarks.bench_two_tower_demo import _cell, _world, demo_config
from evaluation.evaluate import _baseline_scorer, _rank_and_score, _run_scorer
from evaluation.registry import make_recommender
from evaluation.stats import bootstrap_ci
from evaluation.temporal import index_lists, load_temporal
from training.train import train_two_tower

log = logging.getLogger("tastemaker.benchmarks")
COMMAND = "python -m benchmarks.run --only two_tower_few_events"
METRICS = ("recall@20", "ndcg@20")
GROUPS = {"1-4 streams": (1, 4), "5-19 streams": (5, 19), "20+ streams": (20, 10**9)}
MODELS = ("two-tower", "trending", "popular")


def main(quick: bool = False) -> str:
    os.environ.setdefault("TASTEMAKER_DEMO", "1")  # synthetic world: the public demo key
    n_boot = 200 if quick else 1000
    with tempfile.TemporaryDirectory(prefix="few-events-") as tmp:
        ws = _world(Path(tmp))
        run = train_two_tower(ws, demo_config())
        data = load_temporal(ws, "test")
        n_streams = pc.list_value_length(data.users["history"]).fill_null(0).to_numpy()
        per_model: dict[str, dict[str, np.ndarray]] = {}  # model -> group -> (U, M)
        for name in MODELS:
            if name == "two-tower":
                score_fn, artist_ids = _run_scorer(name, run, data)
            else:
                model = make_recommender(name).fit(data.train)
                score_fn, artist_ids = _baseline_scorer(model, data), data.train.artist_ids
            seen = index_lists(data.users["seen"], artist_ids)
            targets = index_lists(data.users["targets"], artist_ids)
            per_model[name] = {}
            for group, (low, high) in GROUPS.items():
                pos = np.flatnonzero((n_streams >= low) & (n_streams <= high))
                _, per_user = _rank_and_score(score_fn, artist_ids, pos, seen, targets, 100, (20,))
                values = np.stack([per_user[m] for m in METRICS], 1)  # (U, M)
                per_model[name][group] = np.nan_to_num(values)  # NaN only without targets
    lines = [
        "## Listeners with few streams: two-tower vs trending-by-segment",
        "",
        f"Command: `{COMMAND}{' --quick' if quick else ''}` (`tastemaker demo` world, preset "
        "demo, seed 7; test week; eval users grouped by their streams before the cutoff; full "
        "catalogue, seen excluded; mean [95 % bootstrap interval, "
        f"{n_boot} resamples of users]). The two-tower is the demo's (lake config, history "
        "only); trending ranks by the user's country.",
        "",
        "| users | n | model | Recall@20 | NDCG@20 | two-tower minus trending, R@20 |",
        "|---|---|---|---|---|---|",
    ]
    for group in GROUPS:
        for name in MODELS:
            values = per_model[name][group]
            mean, lo, hi = bootstrap_ci(values, n_boot, 0)
            cells = [_cell([mean[j], lo[j], hi[j]]) for j in range(len(METRICS))]
            diff = ""
            if name == "two-tower":
                d = per_model["two-tower"][group][:, :1] - per_model["trending"][group][:, :1]
                dm, dlo, dhi = bootstrap_ci(d, n_boot, 0)
                diff = f"{dm[0]:+.3f} [{dlo[0]:+.3f}, {dhi[0]:+.3f}]"
            lines.append(f"| {group} | {len(values)} | {name} | {' | '.join(cells)} | {diff} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(main(quick="--quick" in sys.argv[1:]))
