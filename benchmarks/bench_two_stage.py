"""The two-stage system (multi-source candidates + a ranker trained for discovery) on the demo
world against retrieval alone and the peers tuned with the same budget, on the test week; and a
simulated A/B of the served bundle against retrieval alone and the tuned ItemKNN.

Windows (``training.two_stage``): the ranker is fitted on the validation week's listeners with
a two-tower trained without the refit (``tastemaker train --no-refit``) and neighbours of the
train weeks; early stopping on a held-out fifth of those listeners; the served two-tower is the
demo's (refit), with neighbours of train + valid; the test week is read only to report.
The order (the ranker blended with the two-tower rank, ``TwoStageConfig.blend``) is chosen on
two development folds that lack the test week (:func:`development_split`), not on it.
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
import pandas as pd
import pyarrow as pa

from core.settings import Settings
from core.workspace import Workspace
from data.features.build import FeatureConfig, build_features
from data.features.candidates import TWO_STAGE_FEATURES, RetrievalBlend
from data.ingest.job import run_ingest
from jobs.simulate import simulate
from jobs.tune import TemporalValidation, TuneConfig, run_tuning
from jobs.two_stage import knn_shrink, render_report, stage_at, train_two_stage
from models.ranker import fit_ranker
from training.export import export_bundle
from training.inference import load_scorer
from training.train import train_two_tower
from training.train_config import TrainConfig, lake_config
from training.two_stage import TwoStageConfig, build_examples, early_stop_mask, top_of, unions
from world.generate import WorldConfig, generate_world

log = logging.getLogger("tastemaker.benchmarks")
COMMAND = "TASTEMAKER_DEMO=1 python -m benchmarks.run --only two_stage"
PEERS = ("itemknn", "ease", "als")
TRIALS, QUICK_TRIALS = 8, 2
SIM_DAYS = 14
ARMS = ("retrieval", "two-stage", "itemknn")
# the orders compared on the development folds (the default ranker, fitted once per fold); the
# last is TwoStageConfig's default
DEV_ORDERS: dict[str, RetrievalBlend] = {
    "ranker's probability (before)": RetrievalBlend(weight=0.0, heavy_weight=0.0),
    "log-odds − 0.5 × log1p(two-tower rank)": RetrievalBlend(weight=0.5, heavy_weight=0.5),
    "log-odds − 1 × log1p(two-tower rank)": RetrievalBlend(weight=1.0, heavy_weight=1.0),
    "log-odds − 1 × log1p(two-tower rank), heavy listeners only": RetrievalBlend(
        weight=0.0, heavy_weight=1.0
    ),
    "log-odds − 0.5 × log1p(two-tower rank), 1 × for heavy listeners (default)": (
        TwoStageConfig().blend
    ),
}
FOLDS = 2  # development folds: without the test week, then without the validation week too
SLATE = 10  # the simulator's slate


def without_last_week(src: Workspace, root: Path, base: TrainConfig, trials: int) -> dict[str, Any]:
    """A workspace of the same world as ``src`` without the raw events from ``src``'s test
    cutoff's day on (so its ``test`` week is ``src``'s validation week and its ``valid`` the
    week before), with the same pipeline: the two-towers (no-refit and refit) and the ItemKNN
    tuned there with ``trials`` trials. Returns the workspace and its runs."""
    from data.features.build import cutoffs, load_event_log

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
    return {"ws": ws, "fit_run": fit_run, "serve_run": serve_run}


def expected_clicks(
    population: Any, key: bytes, users: Any, artist_ids: np.ndarray, top: np.ndarray, at_ms: int
) -> np.ndarray:
    """(U,) clicks per 100 impressions each listener of ``users`` (``EVAL_USERS`` rows) is
    expected to give its first slate, the first :data:`SLATE` of ``top`` (U, >= SLATE) ids of
    ``artist_ids`` (-1 empty), at ``at_ms``: the world's click rule
    (``world.events.click_logit``, what the simulator draws from) without the draws."""
    from data.pii import pseudonymise
    from world.events import click_logit

    world = {pseudonymise(str(u), key): i for i, u in enumerate(population.people.user_id)}
    col = pd.Index(population.catalogue.artist_id).get_indexer(list(artist_ids))
    slates = top[:, :SLATE]
    art = np.where(slates >= 0, col[np.maximum(slates, 0)], -1)  # (U, SLATE) world artist
    ok = art >= 0
    u = np.repeat([world[k] for k in users["user_key"].to_pylist()], SLATE)
    a = np.maximum(art, 0).ravel()
    known, future = population.world.known_at(u, a, np.full(len(u), at_ms, np.int64))
    pos = np.tile(np.arange(SLATE), len(slates))
    p = 1.0 / (1.0 + np.exp(-click_logit(population.world.affinity(u, a), known, future, pos)))
    p = np.where(ok.ravel(), p, 0.0).reshape(slates.shape)
    return np.asarray(100.0 * p.sum(axis=1) / np.maximum(ok.sum(axis=1), 1), np.float64)


def development_fold(fold: dict[str, Any], population: Any, key: bytes) -> dict[str, Any]:
    """Each of :data:`DEV_ORDERS` on one development fold (``without_last_week``): the default
    ranker fitted on its validation week, scored on its test week against retrieval alone and
    the ItemKNN tuned there (Recall@20, NDCG@20, the gate's segments), and the first slates'
    expected clicks against retrieval's."""
    from data.features.build import cutoffs, load_event_log
    from data.schemas import USER_SEGMENT_FIELDS
    from evaluation.gate import Contender, GateConfig, decide, per_user_metric
    from evaluation.metrics import per_user_metrics
    from evaluation.segments import collapse_rare
    from evaluation.stats import paired_interval
    from evaluation.temporal import index_lists, load_temporal
    from jobs.tune import tuned_params

    ws, fconfig, config = fold["ws"], FeatureConfig(), TwoStageConfig()
    shrink = knn_shrink(ws, config)
    ev = load_event_log(ws, fconfig)
    cut = cutoffs(ev, fconfig)
    valid, test = load_temporal(ws, "valid"), load_temporal(ws, "test")
    fit_scorer, serve_scorer = load_scorer(fold["fit_run"]), load_scorer(fold["serve_run"])
    fit_ids, serve_ids = np.asarray(fit_scorer.artist_ids), np.asarray(serve_scorer.artist_ids)
    stage = stage_at(ws, ev, valid, cut["valid"], fit_ids, config, shrink, fconfig)
    serve_stage = stage_at(ws, ev, test, cut["test"], serve_ids, config, shrink, fconfig)
    ex = build_examples(valid.users, fit_scorer, stage)
    keys = valid.users["user_key"].to_numpy(zero_copy_only=False)
    hold = early_stop_mask(keys, config.early_stop_share)[ex.user]
    ranker, fit = fit_ranker(
        ex.take(~hold).data, ex.take(hold).data, TWO_STAGE_FEATURES, config.model
    )
    warm = np.flatnonzero(test.warm)
    users = test.users.take(pa.array(warm))
    union = unions(users, serve_scorer, serve_stage)
    targets = index_lists(users["targets"], serve_ids)
    seg = {f: test.users[f].to_numpy(zero_copy_only=False)[warm] for f in USER_SEGMENT_FIELDS}
    seg["country"] = collapse_rare(seg["country"])
    metrics = ("recall@20", "ndcg@20")
    peer = Contender("itemknn", "itemknn", params=tuned_params(ws, "demo", "itemknn"))
    alone = Contender("retrieval alone", "two-tower", Path(fold["serve_run"]))
    refs = {
        name: {m: per_user_metric(test, c, m) for m in metrics}
        for name, c in (("retrieval", alone), ("itemknn", peer))
    }
    rank_col = TWO_STAGE_FEATURES.index("retrieval_log_rank")
    tt_top = np.full((len(union), SLATE), -1, np.int64)  # the two-tower's own first slate
    for u, (cands, x) in enumerate(union):
        order = np.argsort(x[:, rank_col], kind="stable")[:SLATE]
        tt_top[u, : len(order)] = cands.ids[order]
    clicks_alone = expected_clicks(population, key, users, serve_ids, tt_top, cut["test"])
    gate = GateConfig()
    high = seg["activity_level"] == "high"
    rows: dict[str, dict[str, Any]] = {}
    for name, blend in DEV_ORDERS.items():
        top = top_of(union, ranker, 20, blend)
        per = per_user_metrics(top, targets, (20,))
        row: dict[str, Any] = {}
        for m in metrics:
            ok = ~np.isnan(per[m])
            row[m] = float(np.mean(per[m][ok]))
            for ref, v in refs.items():
                row[f"{m} − {ref}"] = paired_interval(per[m][ok], v[m][ok], 1000, 0)
        clicks = expected_clicks(population, key, users, serve_ids, top, cut["test"])
        row["clicks"] = float(clicks.mean())
        row["clicks − retrieval"] = paired_interval(clicks, clicks_alone, 1000, 0)
        r, a = per["recall@20"], refs["retrieval"]["recall@20"]
        ok = ~(np.isnan(r) | np.isnan(a))
        row["high"] = (float(r[ok & high].mean()), float(a[ok & high].mean()))
        d = decide(a, r, seg, gate, ("retrieval alone", "two-stage"))
        row["gate"] = d
        row["worst"] = _worst_segment(a, r, seg, gate.segment_min_users)
        rows[name] = row
    return {
        "n": len(warm),
        "n_high": int(high.sum()),
        "rounds": fit["rounds"],
        "clicks_alone": float(clicks_alone.mean()),
        "rows": rows,
    }


def _worst_segment(
    alone: np.ndarray, two: np.ndarray, seg: dict[str, np.ndarray], min_users: int
) -> tuple[str, float]:
    """(segment, drop) of the segment with the largest drop of ``two`` against ``alone``."""
    ok = ~(np.isnan(alone) | np.isnan(two))
    worst = ("", -np.inf)
    for field, values in seg.items():
        v = np.asarray(values).astype(str)
        for value in np.unique(v[ok]):
            mask = ok & (v == value)
            if mask.sum() >= min_users:
                drop = float(alone[mask].mean() - two[mask].mean())
                if drop > worst[1]:
                    worst = (f"{field}={value} ({int(mask.sum())})", drop)
    return worst


def _d(v: dict[str, Any]) -> str:
    return f"{v['mean']:+.4f} [{v['lo']:+.4f}, {v['hi']:+.4f}]"


def development_split(
    src: Workspace, root: Path, base: TrainConfig, trials: int, settings: Settings
) -> str:
    """Choose the two-stage order without the test week: :data:`FOLDS` development folds
    (``without_last_week`` of the world, then of that fold), each of :data:`DEV_ORDERS`
    measured on each (``development_fold``). Returns the Markdown tables."""
    from data.pii import pseudonym_key
    from jobs.simulate.arms import world_config
    from world.population import rebuild

    population = rebuild(world_config(src))
    key = pseudonym_key(settings)
    out: list[str] = [
        "**Choosing the order without the test week** (development folds: the same world "
        "without the raw events from the test cutoff's day on, so the fold's test week is the "
        "validation week above; the second fold also without the validation week. In each, "
        "the default ranker is fitted on the fold's validation week and every order is scored "
        f"on its test week against retrieval alone and the ItemKNN tuned there ({trials} "
        "trials); paired 95 % intervals, 1000 resamples. Expected clicks: clicks per 100 "
        f"impressions of each listener's first {SLATE}-artist slate at the fold's test cutoff "
        "under the world's click rule (the simulator's, without its draws), against the "
        "two-tower's own first slate):",
    ]
    here = src
    for f in range(1, FOLDS + 1):
        fold = without_last_week(here, root / f"fold{f}", base, trials)
        res = development_fold(fold, population, key)
        here = fold["ws"]
        out += [
            "",
            f"Fold {f} ({res['n']} warm listeners, {res['n_high']} of activity level high; "
            f"ranker {res['rounds']} rounds; retrieval alone's expected clicks "
            f"{res['clicks_alone']:.2f} per 100):",
            "",
            "| order | Recall@20 | − retrieval alone | − itemknn (tuned) | NDCG@20 | "
            "− retrieval alone | − itemknn (tuned) | expected clicks /100 − retrieval | "
            "activity high, vs retrieval | worst segment, drop | gate vs retrieval |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in res["rows"].items():
            g = r["gate"]
            out.append(
                f"| {name} | {r['recall@20']:.3f} | {_d(r['recall@20 − retrieval'])} | "
                f"{_d(r['recall@20 − itemknn'])} | {r['ndcg@20']:.3f} | "
                f"{_d(r['ndcg@20 − retrieval'])} | {_d(r['ndcg@20 − itemknn'])} | "
                f"{r['clicks']:.2f}, {_d(r['clicks − retrieval'])} | "
                f"{r['high'][0]:.3f} vs {r['high'][1]:.3f} | {r['worst'][0]} {r['worst'][1]:+.3f} "
                f"| {'passes' if g.promote else 'KEPT OUT'} |"
            )
    return "\n".join(out)


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
        dev = development_split(ws, Path(tmp) / "dev", base, trials, Settings(workspace=ws.root))
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
