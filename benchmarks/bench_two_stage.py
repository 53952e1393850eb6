"""The two-stage system (multi-source candidates + a ranker trained for discovery) on the demo
world against retrieval alone and the peers tuned with the same budget, on the test week; and a
simulated A/B of the served bundle against retrieval alone and the tuned ItemKNN.

Windows (``training.two_stage``): the ranker is fitted on the validation week's listeners with
a two-tower trained without the refit (``tastemaker train --no-refit``) and neighbours of the
train weeks; early stopping on a held-out fifth of those listeners; the served two-tower is the
demo's (refit), with neighbours of train + valid; the test week is read only to report.
The ranker's settings are compared on a development split that lacks the test week
(:func:`development_split`), not on the test week.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from core.settings import Settings
from core.workspace import Workspace
from data.features.build import FeatureConfig, build_features
from data.features.candidates import TWO_STAGE_FEATURES
from data.ingest.job import run_ingest
from jobs.simulate import simulate
from jobs.tune import TemporalValidation, TuneConfig, run_tuning
from jobs.two_stage import knn_shrink, render_report, stage_at, train_two_stage, two_stage_per_user
from models.ranker import RankerConfig, fit_ranker
from training.export import export_bundle
from training.inference import load_scorer
from training.train import train_two_tower
from training.train_config import TrainConfig, lake_config
from training.two_stage import TwoStageConfig, build_examples, early_stop_mask
from world.generate import WorldConfig, generate_world

log = logging.getLogger("tastemaker.benchmarks")
COMMAND = "TASTEMAKER_DEMO=1 python -m benchmarks.run --only two_stage"
PEERS = ("itemknn", "ease", "als")
TRIALS, QUICK_TRIALS = 8, 2
SIM_DAYS = 14
ARMS = ("retrieval", "two-stage", "itemknn")
# the ranker settings compared on the development split (the last is TwoStageConfig's default)
_LAMBDAMART = RankerConfig(max_depth=6, eta=0.05, eval_at=20, n_rounds=600)
DEV_RANKERS: dict[str, RankerConfig] = {
    "rank:ndcg, depth 6, eta 0.05, stop on NDCG@20 (before)": _LAMBDAMART,
    "binary:logistic, depth 6, eta 0.05, stop on NDCG@20": dataclasses.replace(
        _LAMBDAMART, objective="binary:logistic"
    ),
    "binary:logistic, depth 6, eta 0.02, min_child_weight 5, stop on logloss (default)": (
        TwoStageConfig().model
    ),
}


def development_split(src: Workspace, root: Path, base: TrainConfig, trials: int) -> str:
    """Choose the ranker without the test week: a workspace of the same world without the raw
    events from the test cutoff's day on (so its ``test`` week is the real validation week and its
    ``valid`` the week before), the same pipeline (two-towers, the ItemKNN tuned there), each
    of :data:`DEV_RANKERS` fitted on its validation week and compared with the tuned ItemKNN
    on its test week. Returns the Markdown table."""
    from data.features.build import cutoffs, load_event_log
    from evaluation.gate import Contender, per_user_metric
    from evaluation.stats import paired_interval
    from evaluation.temporal import load_temporal
    from jobs.tune import tuned_params

    fconfig = FeatureConfig()
    test_at = cutoffs(load_event_log(src, fconfig), fconfig)["test"]
    ws = Workspace(root).ensure()
    for part in ("raw", "pii"):
        if (src.root / part).is_dir():
            shutil.copytree(src.root / part, ws.root / part, dirs_exist_ok=True)
    # raw partitions are days of arrival: none from the test cutoff's day on is kept (a late
    # arrival of an earlier event goes with it); the check below refuses any event of the
    # test week that arrived before it
    first = f"dt={datetime.fromtimestamp(test_at / 1000, timezone.utc):%Y-%m-%d}"
    for day in ws.raw_events.iterdir():
        if day.name.startswith("dt=") and day.name >= first:
            shutil.rmtree(day)
    run_ingest(ws)
    build_features(ws, fconfig)
    if cutoffs(load_event_log(ws, fconfig), fconfig)["end"] > test_at:
        raise RuntimeError("the development workspace holds events of the test week")
    fit_run = train_two_tower(ws, dataclasses.replace(base, refit=False))
    serve_run = train_two_tower(ws, base)
    run_tuning(ws, TemporalValidation(ws), ("itemknn",), TuneConfig(trials=trials))
    config = TwoStageConfig()
    shrink = knn_shrink(ws, config)
    ev = load_event_log(ws, fconfig)
    cut = cutoffs(ev, fconfig)
    valid, test = load_temporal(ws, "valid"), load_temporal(ws, "test")
    fit_scorer, serve_scorer = load_scorer(fit_run), load_scorer(serve_run)
    fit_ids, serve_ids = np.asarray(fit_scorer.artist_ids), np.asarray(serve_scorer.artist_ids)
    stage = stage_at(ws, ev, valid, cut["valid"], fit_ids, config, shrink, fconfig)
    serve_stage = stage_at(ws, ev, test, cut["test"], serve_ids, config, shrink, fconfig)
    ex = build_examples(valid.users, fit_scorer, stage)
    keys = valid.users["user_key"].to_numpy(zero_copy_only=False)
    hold = early_stop_mask(keys, config.early_stop_share)[ex.user]
    params = tuned_params(ws, "demo", "itemknn")
    peer = Contender("itemknn (tuned)", "itemknn", params=params)
    metrics = ("recall@20", "ndcg@20")
    knn = {m: per_user_metric(test, peer, m) for m in metrics}
    rows: list[str] = []
    for name, model in DEV_RANKERS.items():
        ranker, fit = fit_ranker(ex.take(~hold).data, ex.take(hold).data, TWO_STAGE_FEATURES, model)
        two = two_stage_per_user(test, serve_scorer, serve_stage, ranker, (20,))
        cells: list[str] = []
        for m in metrics:
            ok = ~np.isnan(two[m])
            d: dict[str, Any] = paired_interval(two[m][ok], knn[m][ok], 1000, 0)
            cells.append(
                f"{np.mean(two[m][ok]):.3f} vs {np.mean(knn[m][ok]):.3f}, "
                f"{d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"
            )
        rows.append(f"| {name} | {fit['rounds']} | " + " | ".join(cells) + " |")
    n = int(test.warm.sum())
    return "\n".join(
        [
            f"**Choosing the ranker without the test week** (development split: the same world "
            "without the raw events from the test cutoff's day on, so its test week is the "
            f"validation week above ({n} warm listeners) and the ranker is fitted on the week "
            f"before; ItemKNN tuned there with the same {trials} trials; paired 95 % interval, "
            "1000 resamples):",
            "",
            "| ranker | rounds | Recall@20 two-stage vs itemknn (tuned), delta | "
            "NDCG@20 two-stage vs itemknn (tuned), delta |",
            "|---|---|---|---|",
            *rows,
        ]
    )


def main(quick: bool = False) -> str:
    preset = "tiny" if quick else "demo"
    trials = QUICK_TRIALS if quick else TRIALS
    n_boot = 200 if quick else 1000
    started = time.perf_counter()
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-two-stage-") as tmp:
        ws = Workspace(Path(tmp) / "ws").ensure()
        generate_world(ws, WorldConfig.preset(preset, 7))
        run_ingest(ws)
        build_features(ws, FeatureConfig())
        base = lake_config() if preset == "demo" else TrainConfig(epochs=3, batch_size=256)
        fit_run = train_two_tower(ws, dataclasses.replace(base, refit=False))
        serve_run = train_two_tower(ws, base)
        t0 = time.perf_counter()
        run_tuning(ws, TemporalValidation(ws), PEERS, TuneConfig(trials=trials))
        timings["tune"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = train_two_stage(ws, fit_run, serve_run, TwoStageConfig(n_boot=n_boot), peers=PEERS)
        timings["two_stage"] = time.perf_counter() - t0
        export_bundle(ws, serve_run)
        t0 = time.perf_counter()
        dev = development_split(ws, Path(tmp) / "dev", base, trials)
        timings["development"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        sim = simulate(ws, list(ARMS), days=SIM_DAYS, seed=0, settings=Settings(workspace=ws.root))
        timings["simulate"] = time.perf_counter() - t0
    total = time.perf_counter() - started
    t = result["test"]
    best = t["best_peer"]
    reached = all(t[m][f"two-stage − {best}"]["lo"] > 0 for m in ("recall@20", "ndcg@20"))
    report = render_report(result).split("\n", 2)[2]  # without its title line
    lines = [
        "## Two-stage system: multi-source candidates + a ranker trained for discovery",
        "",
        f"Command: `{COMMAND}{' --quick' if quick else ''}` (`tastemaker demo` world, preset "
        f"{preset}, seed 7: `tastemaker train --no-refit` (the ranker's candidates) and `tastemaker "
        f"train` (served), `tastemaker tune --dataset demo --model {'|'.join(PEERS)} --trials "
        f"{trials}` (the same budget per peer), `tastemaker train two-stage --fit-run <no-refit> "
        f"--run <served>`, `tastemaker export`, `tastemaker simulate --policy "
        f"{' --policy '.join(ARMS)} --days {SIM_DAYS}`). {total:.0f} s in all (tuning "
        f"{timings['tune']:.0f} s, the two-stage job {timings['two_stage']:.0f} s, the development "
        f"split {timings['development']:.0f} s, the simulation "
        f"{timings['simulate']:.0f} s); load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores. Mean [95 % bootstrap interval, {n_boot} resamples of users].",
        "",
        f"Target (issue 22): the served system ahead of the best tuned peer ({best}) on Recall@20 "
        f"and NDCG@20 with the paired interval above zero: **{'met' if reached else 'NOT met'}**.",
        "",
        report.strip(),
        "",
        dev,
        "",
        f"**Simulated A/B** ({SIM_DAYS} days, the world's listeners split at random; the served "
        "bundle carries the two-stage system, `retrieval` switches it off, `itemknn` is the "
        "tuned peer):",
        "",
        sim["markdown"].strip(),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(main(quick="--quick" in sys.argv[1:]))
