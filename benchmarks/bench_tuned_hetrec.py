"""Peers tuned as hard as the two-tower on HetRec Last.fm 2K, split seed 0.

``tastemaker tune --dataset hetrec --model all --trials N`` (:mod:`jobs.tune`): every model
gets the same budget of N optuna trials (the first its defaults) on a validation slice of the
*training* part of split 0 (10 % of every user's training artists, seed 1). Each model is then
fitted with its default and with its tuned params on the whole training part, through the CLI
path of ``benchmarks.bench_two_tower_hetrec`` (``tastemaker train --interactions train.tsv
[--artist-meta artists.tsv]``, ``tastemaker evaluate --test test.tsv``), and scored once on
the test part: full ranking over 17,632 artists, training artists excluded.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_two_tower_hetrec import _files
from data.datasets import hetrec_dir
from evaluation.registry import TWO_TOWER
from evaluation.runs import evaluate_run
from jobs.tune import MODELS, HoldoutValidation, TuneConfig, run_tuning, two_tower_config
from training.byod import train_interactions

log = logging.getLogger("tastemaker.benchmarks")
COMMAND = "python -m benchmarks.bench_tuned_hetrec"  # or benchmarks.run --only tuned_hetrec
TRIALS, QUICK_TRIALS = 8, 2
SEED = 0


def _test(model: str, params: dict[str, Any] | None, tmp: Path, files: tuple) -> dict[str, float]:
    train, test, artists = files
    run = tmp / f"{model}-{'tuned' if params is not None else 'default'}"
    if model == "two-tower":
        cfg = two_tower_config("hetrec", params or {})
        train_interactions(train, run, model, artists, cfg)
    else:
        train_interactions(train, run, model, params=params)
    m = next(iter(evaluate_run(run, test, k=100)["models"].values()))
    return {"recall@20": m["test/recall@20"], "ndcg@20": m["test/ndcg@20"]}


def _params(p: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.items())


def main(quick: bool = False, models: tuple[str, ...] = MODELS, tuning: Path | None = None) -> str:
    """Tune ``models`` and score them on test; with ``tuning`` (a ``tuning/hetrec.json`` that
    ``tastemaker tune --dataset hetrec`` wrote) its studies are scored instead of tuning."""
    folder = hetrec_dir()
    if folder is None:
        raise FileNotFoundError("HetRec 2K not found under ../shared/data/lastfm-hetrec-2k")
    trials = QUICK_TRIALS if quick else TRIALS
    with tempfile.TemporaryDirectory(prefix="tuned-hetrec-") as tmp_:
        tmp = Path(tmp_)
        from core.workspace import Workspace

        started = time.perf_counter()
        if tuning is None:
            record = run_tuning(
                Workspace(tmp / "ws"),
                HoldoutValidation.from_hetrec(folder, SEED),
                models,
                TuneConfig(trials=trials),
            )
        else:
            saved = json.loads(Path(tuning).read_text())
            record = {"models": {m: saved["models"][m] for m in models}}
            trials = max(s["trials"] for s in record["models"].values())
        tune_s = time.perf_counter() - started
        files = _files(tmp, SEED)
        rows = {}
        test_models = ("popular", *models, *(() if TWO_TOWER in models else (TWO_TOWER,)))
        for model in test_models:
            study = record["models"].get(model)
            default = _test(model, None, tmp, files)
            tuned = _test(model, study["best_params"], tmp, files) if study else None
            rows[model] = (study, default, tuned)
            log.info("tuned hetrec %s: default %s tuned %s", model, default, tuned)
    lines = [
        f"## Tuned peers on HetRec Last.fm 2K (split seed {SEED})",
        "",
        f"Command: `{COMMAND}{' --quick' if quick else ''}"
        + ("" if models == MODELS else f" --models {','.join(models)}")
        + f"`: `tastemaker tune --dataset hetrec --model M --trials {trials}` for M in "
        f"{', '.join(models)} (optuna TPE, seed 0, the same {trials} trials per "
        "model, the first = its defaults; objective: Recall@20 on 10 % of every user's "
        f"*training* artists of split {SEED}, seed 1), then each model fitted on the whole "
        "training part with its default and its tuned params and scored once on the test part "
        f"(full ranking, training artists excluded). "
        + (f"Tuning took {tune_s / 60:.0f} min on 2 shared cores. " if tuning is None else "")
        + "Two-tower: with artist tags; its search space: lr, temperature, "
        "history share (12 epochs, as the default).",
        "",
        "| model | valid R@20 default → tuned | test R@20 default | test R@20 tuned | "
        "test N@20 default | test N@20 tuned | tuned params |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, (study, default, tuned) in rows.items():
        if study is None:
            lines.append(
                f"| {model} | – | {default['recall@20']:.4f} | – | {default['ndcg@20']:.4f} "
                f"| – | {'(nothing to tune)' if model == 'popular' else '(not tuned here)'} |"
            )
            continue
        assert tuned is not None
        lines.append(
            f"| {model} | {study['default']['recall@20']:.4f} → {study['best_value']:.4f} | "
            f"{default['recall@20']:.4f} | {tuned['recall@20']:.4f} | "
            f"{default['ndcg@20']:.4f} | {tuned['ndcg@20']:.4f} | {_params(study['best_params'])} |"
        )
    peers = {m: rows[m][2] for m in ("als", "ease", "itemknn") if m in rows}
    best = max(peers, key=lambda m: peers[m]["recall@20"])  # type: ignore[index]
    bp = peers[best]
    assert bp is not None
    for label, tt in (
        ("default", rows["two-tower"][1] if "two-tower" in rows else None),
        ("tuned", rows["two-tower"][2] if "two-tower" in rows else None),
    ):
        if tt is not None:
            lines += [
                "",
                f"Two-tower ({label}) minus the best tuned peer ({best}) on test: Recall@20 "
                f"{tt['recall@20'] - bp['recall@20']:+.4f}, NDCG@20 "
                f"{tt['ndcg@20'] - bp['ndcg@20']:+.4f}.",
            ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", default=",".join(MODELS), help="models to tune and score")
    parser.add_argument("--tuning", type=Path, help="score the studies of this tuning file")
    args = parser.parse_args(sys.argv[1:])
    print(main(args.quick, tuple(args.models.split(",")), args.tuning))
