"""New information on HetRec: the friend graph and each listener's own tags as user-tower inputs.

An ablation on the public 80/20 splits (seeds 0, 1, 2), defaults only (no tuning on test):
the two-tower with its history alone, + friends' artists, + own tags, + both. Each row runs the
bring-your-own-data path: ``tastemaker import hetrec --split-seed S`` (train/test, artists,
friends, user_tags files), ``tastemaker train --interactions train --artist-meta artists
[--friends friends] [--user-tags user_tags] --out RUN``, then full ranking over every artist
with the training artists excluded. What the side inputs may read is fixed by
:mod:`training.user_side`: friends count with their *training* artists only, and a user's tags
only on their *training* artists (``tests/training/test_user_side.py`` proves the filter on
this module's own file writer and training call).

ALS is fitted on the same files in the same run (factors 32, regularisation 0.1, α 10: its
defaults, which the 8-trial optuna tuning of ``benchmarks/results/tuned_hetrec.md`` kept).
Intervals: 95 % bootstrap over test users (500 resamples); the Δ columns are paired per user
against the history-only row.

Run: ``python -m benchmarks.run --only hetrec_inputs`` (``--quick``: seed 0), or
``python -m benchmarks.bench_hetrec_inputs --seeds 0 --write``; ``--rows history,both
--cached``: only those rows, then the table of every row finished so far (rows are kept in
``$TMPDIR/tastemaker-hetrec-inputs`` and not refitted).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from data.datasets import hetrec_dir
from data.importers import (
    holdout_split,
    import_hetrec,
    import_hetrec_social,
    write_artists,
    write_interactions,
    write_side_table,
)
from evaluation.metrics import per_user_metrics
from evaluation.runs import interactions_from_table, load_fitted, read_interactions_file
from evaluation.stats import mean_interval, paired_interval
from training.byod import train_interactions
from training.train_config import TrainConfig

log = logging.getLogger("tastemaker.benchmarks")
COMMAND = "python -m benchmarks.run --only hetrec_inputs"
SEEDS = (0, 1, 2)
# row -> (friends, own tags)
ROWS = {
    "history only": (False, False),
    "+ friends": (True, False),
    "+ own tags": (False, True),
    "+ both": (True, True),
}
SHORT = {"history": "history only", "friends": "+ friends", "tags": "+ own tags", "both": "+ both"}
ALS = "als"
N_BOOT = 500
CACHE = Path(tempfile.gettempdir()) / "tastemaker-hetrec-inputs"


def hetrec_files(out: Path, seed: int, folder: Path | None = None) -> dict[str, Path]:
    """What ``tastemaker import hetrec --split-seed SEED --format tsv`` writes, in ``out``:
    train/test interactions, artists, and every user's friends and tag assignments (held-out
    artists' tags included: the training path filters them)."""
    folder = folder or hetrec_dir()
    if folder is None:
        raise FileNotFoundError("HetRec 2K not found under ../shared/data/lastfm-hetrec-2k")
    out.mkdir(parents=True, exist_ok=True)
    interactions, artists = import_hetrec(folder)
    friends, user_tags = import_hetrec_social(folder)
    train, test = holdout_split(interactions, 0.2, seed)
    paths = {
        "train": out / "train.tsv",
        "test": out / "test.tsv",
        "artists": out / "artists.tsv",
        "friends": out / "friends.tsv",
        "user_tags": out / "user_tags.tsv",
    }
    write_interactions(train, paths["train"])
    write_interactions(test, paths["test"])
    write_artists(artists, paths["artists"])
    write_side_table(friends, paths["friends"])
    write_side_table(user_tags, paths["user_tags"])
    return paths


def train_run(
    paths: dict[str, Path], run: Path, row: str, config: TrainConfig | None = None
) -> Path:
    """``tastemaker train --interactions`` for ablation row ``row`` (a ``ROWS`` key or its
    short name) with the artist tags, and the friends / user tags files the row reads."""
    friends, tags = ROWS[SHORT.get(row, row)]
    return train_interactions(
        paths["train"],
        run,
        "two-tower",
        paths["artists"],
        config,
        friends_path=paths["friends"] if friends else None,
        user_tags_path=paths["user_tags"] if tags else None,
    )


def per_user(run: Path, test_path: Path) -> dict[str, np.ndarray]:
    """Recall@20 and NDCG@20 per test user (users ordered by id), full ranking, training
    artists excluded; a test artist absent from training counts in |targets| (never hit)."""
    model, inter, _ = load_fitted(run)
    test = interactions_from_table(read_interactions_file(test_path))
    rows = pd.Index(inter.user_ids).get_indexer(test.user_ids)
    cols = pd.Index(inter.artist_ids).get_indexer(test.artist_ids)
    known = np.flatnonzero(rows >= 0)
    m = test.matrix.tocsr()
    targets = [cols[m.indices[m.indptr[u] : m.indptr[u + 1]]] for u in known]
    targets = [np.where(t < 0, -2, t) for t in targets]  # -2: never recommended
    idx, _ = model.recommend(rows[known], 20)
    metrics = per_user_metrics(idx, targets, ks=(20,))
    order = np.argsort(test.user_ids[known])
    return {k: metrics[k][order] for k in ("recall@20", "ndcg@20")}


def _row_cache(seed: int, row: str) -> tuple[Path, Path]:
    name = f"seed{seed}-" + row.replace(" ", "_").replace("+", "p")
    return CACHE / f"{name}.npz", CACHE / f"{name}.json"


def _load_row(seed: int, row: str) -> dict | None:
    arrays, meta = _row_cache(seed, row)
    if not (arrays.is_file() and meta.is_file()):
        return None
    with np.load(arrays, allow_pickle=False) as z:
        return {**json.loads(meta.read_text()), **{k: z[k] for k in z.files}}


def _store_row(seed: int, row: str, result: dict) -> None:
    from core.atomic import write_bytes, write_json
    from evaluation.runs import npz_bytes

    arrays, meta = _row_cache(seed, row)
    write_bytes(arrays, npz_bytes({m: result[m] for m in ("recall@20", "ndcg@20")}))
    write_json(meta, {k: result[k] for k in ("seconds", "cpu_seconds", "load")})


def run_seed(seed: int, rows: tuple[str, ...] = (*ROWS, ALS), resume: bool = True) -> dict:
    """{row: {"recall@20": (U,), "ndcg@20": (U,), "seconds", "cpu_seconds", "load"}}; each
    finished row is kept under ``CACHE`` (``resume``: a stopped run picks up from there)."""
    out: dict[str, dict] = {}
    todo = []
    for row in rows:
        done = _load_row(seed, row) if resume else None
        if done is None:
            todo.append(row)
        else:
            out[row] = done
    if not todo:
        return out
    with tempfile.TemporaryDirectory(prefix="hetrec-inputs-") as tmp:
        paths = hetrec_files(Path(tmp), seed)
        for row in todo:
            run = Path(tmp) / row.replace(" ", "_").replace("+", "p")
            started, cpu = time.perf_counter(), time.process_time()
            if row == ALS:
                train_interactions(paths["train"], run, ALS)
                seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
            else:
                train_run(paths, run, row)
                timing = json.loads((run / "config.json").read_text())
                seconds, cpu_s = timing["fit_seconds"], timing["fit_cpu_seconds"]
            out[row] = {
                **per_user(run, paths["test"]),
                "seconds": seconds,
                "cpu_seconds": cpu_s,
                "load": os.getloadavg()[0],
            }
            _store_row(seed, row, out[row])
            log.info("seed %d %s: R@20 %.4f", seed, row, np.mean(out[row]["recall@20"]))
    return out


def _cell(values: np.ndarray, seed: int) -> str:
    ci = mean_interval(values, N_BOOT, seed)
    return f"{ci['mean']:.4f} [{ci['lo']:.4f}, {ci['hi']:.4f}]"


def _delta(a: np.ndarray, b: np.ndarray, seed: int) -> str:
    ci = paired_interval(a, b, N_BOOT, seed)
    return f"{ci['mean']:+.4f} [{ci['lo']:+.4f}, {ci['hi']:+.4f}]"


def table(results: dict[int, dict[str, dict]]) -> str:
    seeds = sorted(s for s in results if "history only" in results[s])
    lines = [
        "## HetRec Last.fm 2K: friends and own tags as user-tower inputs (ablation)",
        "",
        f"Command: `{COMMAND}` (split seeds {', '.join(map(str, seeds))}"
        + ("" if seeds == list(SEEDS) else f"; seeds {sorted(set(SEEDS) - set(seeds))} not run")
        + "). Per seed: `tastemaker import hetrec --split-seed S`, `tastemaker train "
        "--interactions train --artist-meta artists [--friends friends] [--user-tags "
        "user_tags]` with the defaults (12 epochs; friends: the 50 artists most of a user's "
        "friends have in *training*, weighted by that count; own tags: up to 64 assignments "
        "on the user's *training* artists; both through gates that start at 0), full ranking "
        "over 17,632 artists, training artists excluded. ALS (its tuned = default params) is "
        "fitted on the same files in the same run. Intervals: 95 % bootstrap over test users; "
        "Δ: paired per user against *history only*. Fit seconds wall / CPU (all threads) on 2 "
        "cores shared with other jobs.",
        "",
        "| seed | row | Recall@20 | NDCG@20 | Δ Recall@20 | Δ NDCG@20 | fit s / CPU s | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in seeds:
        res = results[s]
        base = res["history only"]
        for row in (*ROWS, ALS):
            if row not in res:
                continue
            r = res[row]
            d_r = "–" if row == "history only" else _delta(r["recall@20"], base["recall@20"], s)
            d_n = "–" if row == "history only" else _delta(r["ndcg@20"], base["ndcg@20"], s)
            lines.append(
                f"| {s} | {row} | {_cell(r['recall@20'], s)} | {_cell(r['ndcg@20'], s)} | "
                f"{d_r} | {d_n} | {r['seconds']:.0f} / {r['cpu_seconds']:.0f} | "
                f"{r['load']:.1f} |"
            )
    missing = [f"seed {s} {row}" for s in seeds for row in (*ROWS, ALS) if row not in results[s]]
    if missing:
        lines += ["", "Not run (out of time on the shared machine): " + "; ".join(missing) + "."]
    lines += ["", "Mean over the seeds run, and the margin over ALS per seed:", ""]
    lines += ["| row | mean R@20 | mean N@20 | R@20 − ALS per seed | N@20 − ALS per seed |"]
    lines += ["|---|---|---|---|---|"]
    for row in ROWS:
        if not all(row in results[s] for s in seeds):
            continue
        r = np.mean([np.mean(results[s][row]["recall@20"]) for s in seeds])
        n = np.mean([np.mean(results[s][row]["ndcg@20"]) for s in seeds])
        mr, mn = (
            ", ".join(
                f"{np.mean(results[s][row][m]) - np.mean(results[s][ALS][m]):+.4f}"
                if ALS in results[s]
                else "–"
                for s in seeds
            )
            for m in ("recall@20", "ndcg@20")
        )
        lines.append(f"| {row} | {r:.4f} | {n:.4f} | {mr} | {mn} |")
    return "\n".join(lines) + "\n"


def main(quick: bool = False, seeds: tuple[int, ...] | None = None) -> str:
    seeds = seeds if seeds is not None else (SEEDS[:1] if quick else SEEDS)
    return table({s: run_seed(s) for s in seeds})


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = sys.argv[1:]
    chosen: tuple[int, ...] = SEEDS
    if "--seeds" in argv:
        chosen = tuple(int(x) for x in argv[argv.index("--seeds") + 1].split(","))
    if "--rows" in argv:  # run just these rows first (a short budget), e.g. "history,both"
        names = [SHORT.get(r, r) for r in argv[argv.index("--rows") + 1].split(",")]
        for seed in chosen:
            run_seed(seed, tuple(names))
    if "--cached" in argv:  # the rows a (running or stopped) run has finished so far
        found = {s: {r: _load_row(s, r) for r in (*ROWS, ALS)} for s in chosen}
        text = table({s: {r: v for r, v in rows.items() if v} for s, rows in found.items()})
    else:
        text = main(seeds=chosen)
    print(text)
    if "--write" in argv:
        from benchmarks.run import record

        record("hetrec_inputs", text)
