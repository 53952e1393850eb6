"""The two-tower on HetRec Last.fm 2K against its peers, three 80/20 splits, through the CLI path.

Each split seed runs what a user would: ``tastemaker import hetrec --split-seed S`` (files),
``tastemaker train --interactions train.tsv [--artist-meta artists.tsv] --out RUN`` with the
defaults, ``tastemaker evaluate --run RUN --test test.tsv`` (full ranking over all artists,
training artists excluded). Peers are fitted and scored the same way. Training seconds are the
two-tower's ``fit_seconds`` (the Lightning fit) and the peers' fit; shared 2-core CPU.

Settings were chosen on validation slices of the training part only
(``python -m benchmarks.bench_two_tower_hetrec --val key=value ...``: 10 % of every user's
training artists, seed 1); the test split is scored once per reported setting.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from data.datasets import hetrec_dir
from data.importers import holdout_split, import_hetrec, write_artists, write_interactions
from evaluation.runs import evaluate_run
from training.byod import train_interactions
from training.train_config import TrainConfig

log = logging.getLogger("tastemaker.benchmarks")
COMMAND = "python -m benchmarks.run --only hetrec"
SEEDS = (0, 1, 2)
PEERS = ("popular", "itemknn", "ease", "als")


def _files(tmp: Path, seed: int) -> tuple[Path, Path, Path]:
    folder = hetrec_dir()
    if folder is None:
        raise FileNotFoundError("HetRec 2K not found under ../shared/data/lastfm-hetrec-2k")
    interactions, artists = import_hetrec(folder)
    train, test = holdout_split(interactions, 0.2, seed)
    paths = (tmp / f"train{seed}.tsv", tmp / f"test{seed}.tsv", tmp / "artists.tsv")
    write_interactions(train, paths[0])
    write_interactions(test, paths[1])
    write_artists(artists, paths[2])
    return paths


def run_split(
    seed: int, models: tuple[str, ...], config: TrainConfig | None = None
) -> dict[str, dict[str, float]]:
    """{model: {recall@20, ndcg@20, seconds}} on split ``seed``; "two-tower" uses the artist
    file's tags, "two-tower (no meta)" does not."""
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="hetrec-") as tmp:
        train, test, artists = _files(Path(tmp), seed)
        for name in models:
            run = Path(tmp) / name.replace(" ", "_")
            started = time.perf_counter()
            if name.startswith("two-tower"):
                meta = None if "no meta" in name else artists
                train_interactions(train, run, "two-tower", meta, config)
                timing = json.loads((run / "config.json").read_text())
                seconds, cpu = timing["fit_seconds"], timing["fit_cpu_seconds"]
            else:
                cpu_started = time.process_time()
                train_interactions(train, run, name)
                seconds = time.perf_counter() - started
                cpu = time.process_time() - cpu_started
            m = evaluate_run(run, test, k=100)["models"]
            metrics = next(iter(m.values()))
            out[name] = {
                "recall@20": metrics["test/recall@20"],
                "ndcg@20": metrics["test/ndcg@20"],
                "seconds": seconds,
                "cpu_seconds": cpu,
                "load": os.getloadavg()[0],
            }
            log.info("seed %d %s: %s", seed, name, out[name])
    return out


def main(quick: bool = False) -> str:
    models = ("two-tower", "two-tower (no meta)", *PEERS)
    seeds = SEEDS[:1] if quick else SEEDS
    rows = {s: run_split(s, models) for s in seeds}
    lines = [
        "## Two-tower on HetRec Last.fm 2K, three 80/20 splits",
        "",
        f"Command: `{COMMAND}{' --quick' if quick else ''}` — per split seed: "
        "`tastemaker import hetrec --split-seed S`, `tastemaker train --interactions "
        "train.tsv --artist-meta artists.tsv --out RUN` (defaults), `tastemaker evaluate "
        "--test test.tsv`. Full ranking over 17,632 artists, training artists excluded. "
        "Seconds: the fit only (for the two-tower the Lightning fit), wall / CPU (the "
        "process's CPU time, all threads), on 2 cores shared with other jobs: wall time is an "
        "upper bound when the machine was busy (1-minute load average at the end of each "
        "two-tower fit: "
        + ", ".join(f"seed {s} {rows[s]['two-tower']['load']:.1f}" for s in seeds)
        + ").",
        "",
        "| model | " + " | ".join(f"seed {s} R@20 / N@20 / s / CPU s" for s in seeds) + " | "
        "mean R@20 | mean N@20 |",
        "|---" * (len(seeds) + 3) + "|",
    ]
    for name in models:
        cells = [
            f"{rows[s][name]['recall@20']:.4f} / {rows[s][name]['ndcg@20']:.4f} / "
            f"{rows[s][name]['seconds']:.0f} / {rows[s][name]['cpu_seconds']:.0f}"
            for s in seeds
        ]
        r = np.mean([rows[s][name]["recall@20"] for s in seeds])
        n = np.mean([rows[s][name]["ndcg@20"] for s in seeds])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r:.4f} | {n:.4f} |")
    best_peer = {
        s: max(rows[s][p]["recall@20"] for p in PEERS) for s in seeds
    }  # the target is each seed's best peer + 0.02
    margin = [rows[s]["two-tower"]["recall@20"] - best_peer[s] for s in seeds]
    lines += [
        "",
        "Two-tower minus the best peer, Recall@20 per seed: "
        + ", ".join(f"{m:+.4f}" for m in margin)
        + ".",
    ]
    return "\n".join(lines) + "\n"


def _val(overrides: dict[str, str]) -> str:
    """Validation Recall@20 per epoch for a config override (never touches the test split)."""
    import torch

    from evaluation.protocols import random_holdout
    from evaluation.runs import interactions_from_table
    from training.byod import read_artist_tags
    from training.two_tower_recommender import TwoTowerRecommender

    torch.set_num_threads(1)
    folder = hetrec_dir()
    if folder is None:
        raise FileNotFoundError("HetRec 2K not found under ../shared/data/lastfm-hetrec-2k")
    interactions, artists = import_hetrec(folder)
    use_tags = overrides.pop("tags", "1") == "1"
    cfg = TrainConfig(val_fraction=0.1)
    top, model = {}, {}
    for k, v in overrides.items():
        target = cfg if hasattr(cfg, k) else cfg.model
        cur = getattr(target, k)
        val = v.lower() == "true" if isinstance(cur, bool) else type(cur)(v)
        (top if target is cfg else model)[k] = val
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **model), **top)
    split = random_holdout(interactions_from_table(interactions), 0.2, 0)
    with tempfile.TemporaryDirectory() as tmp:
        write_artists(artists, Path(tmp) / "a.tsv")
        tags = read_artist_tags(Path(tmp) / "a.tsv") if use_tags else None
    rec = TwoTowerRecommender(cfg, tags).fit(split.train)
    curve = [(h["epoch"], round(h["val/recall@20"], 4)) for h in rec.val_history]
    return f"{overrides} tags={use_tags}: {curve} ({rec.fit_seconds:.0f} s)"


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = sys.argv[1:]
    if "--val" in args:
        print(_val(dict(a.split("=", 1) for a in args if "=" in a)))
    else:
        print(main(quick="--quick" in args))
