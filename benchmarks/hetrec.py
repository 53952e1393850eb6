"""The published HetRec Last.fm-2K table, reproduced with one command.

Protocol: per-user random 80/20 holdout (seed 0, ``evaluation.protocols.random_holdout``),
full ranking over all 17,632 artists, training artists excluded, Recall@20 = hits / |test|.
Run: ``.venv/bin/python -m benchmarks.hetrec`` (``--quick``: without EASE and two-tower).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import numpy as np

from data.datasets import hetrec_dir
from data.importers import import_hetrec
from evaluation.metrics import ranking_metrics
from evaluation.protocols import random_holdout
from evaluation.registry import make_recommender
from evaluation.runs import interactions_from_table

COMMAND = ".venv/bin/python -m benchmarks.hetrec"
REFERENCE = {"random": 0.001, "popular": 0.101, "itemknn": 0.249, "ease": 0.274, "als": 0.281}
FULL = ("random", "popular", "itemknn", "ease", "als", "two-tower")
QUICK = ("random", "popular", "itemknn", "als")


def hetrec_table(models: Sequence[str] = FULL, seed: int = 0) -> dict[str, dict[str, float]]:
    folder = hetrec_dir()
    if folder is None:
        raise FileNotFoundError("HetRec 2K not found under ../shared/data/lastfm-hetrec-2k")
    interactions, _ = import_hetrec(folder)
    split = random_holdout(interactions_from_table(interactions), 0.2, seed)
    rows = np.flatnonzero([len(t) for t in split.test])
    out = {}
    for name in models:
        start = time.perf_counter()
        model = make_recommender(name).fit(split.train)
        idx, _ = model.recommend(rows, 100)
        metrics = ranking_metrics(idx, [split.test[u] for u in rows], ks=(20, 100))
        out[name] = {**metrics, "seconds": time.perf_counter() - start}
    return out


def main(quick: bool = False) -> str:
    """The two-tower against its peers on three splits, through the CLI path
    (:mod:`benchmarks.bench_two_tower_hetrec`)."""
    from benchmarks.bench_two_tower_hetrec import main as three_seeds

    return three_seeds(quick)


def published_table(quick: bool = False) -> str:
    """The published peers' table on split seed 0 (``python -m benchmarks.hetrec``)."""
    models = QUICK if quick else FULL
    rows = hetrec_table(models)
    lines = [
        "## HetRec Last.fm 2K: per-user 80/20 holdout, full ranking, seen excluded",
        "",
        f"Command: `{COMMAND}{' --quick' if quick else ''}` (seed 0; 1,892 users, 17,632 artists)",
        "",
        "| model | Recall@20 | published | NDCG@20 | Recall@100 | fit+rank s |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in rows.items():
        ref = REFERENCE.get(name)
        lines.append(
            f"| {name} | {m['recall@20']:.4f} | {'' if ref is None else f'{ref:.3f}'} | "
            f"{m['ndcg@20']:.4f} | {m['recall@100']:.4f} | {m['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(published_table(quick="--quick" in sys.argv[1:]))
