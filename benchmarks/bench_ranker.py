"""The ranking stage (XGBoost ``rank:ndcg`` over two-tower candidates) on the demo world:
offline against retrieval order, a simulated A/B against retrieval alone, and the latency it
adds in-process for 200 candidates.

The two-tower is trained with the demo's config but without the refit on train + valid, so
the validation week — where the ranker learns from the logged slates — is out of its sample
(``training.ranker`` explains the windows). Latency is measured on the exported bundle through
the serving code (``serving.ranker``), one thread, against the retrieval-only path of the same
bundle measured in the same run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import xgboost as xgb

from core.settings import Settings
from core.workspace import Workspace
from data.features.build import FeatureConfig, build_features
from data.features.ranker import RANKER_FEATURES
from data.ingest.job import run_ingest
from evaluation.ranking import evaluate_slates, segment_table
from index import load_bundle
from jobs.ranker import train_ranker
from jobs.simulate import simulate
from models.ranker import Ranker, RankerConfig, fit_ranker
from serving.model import ServingModel
from serving.ranker import DensePredictor
from serving.recommender import recommend_from_row
from training.export import export_bundle
from training.ranker import RankerJobConfig, build_slates, read_labelled
from training.train import train_two_tower
from training.train_config import TrainConfig, lake_config
from world.generate import WorldConfig, generate_world

log = logging.getLogger("tastemaker.benchmarks")
COMMAND = "python -m benchmarks.run --only ranker"
SIM_DAYS = 14


def _ci(v: dict[str, float], d: int = 3) -> str:
    return f"{v['mean']:.{d}f} [{v['lo']:.{d}f}, {v['hi']:.{d}f}]"


def _candidates(model: ServingModel, row: dict[str, Any], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The retrieval candidates the real-time path hands the ranker (unseen, best first)."""
    enc = model.encoder
    exclude = {enc.artist_index(a) for a in (row["seen"] or []) + (row["followed"] or [])}
    vec = model.user_vectors([row])
    ids, scores = model.index.search(vec, min(model.index.ntotal, n + len(exclude) + 2))
    keep = [
        (int(i), float(s))
        for i, s in zip(ids[0], scores[0], strict=True)
        if i > 1 and int(i) not in exclude
    ][:n]
    return np.array([i for i, _ in keep], np.int64), np.array([s for _, s in keep], np.float32)


def _pcts(ns: list[int]) -> tuple[float, float]:
    a = np.asarray(ns, np.float64) / 1e6  # ms
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


# the ranker config before the latency work, fitted on the same slates for comparison
FORMER = RankerConfig(max_depth=6, eta=0.05)


def fit_former(ws: Workspace, run: Path) -> tuple[Ranker, dict[str, Any], dict[str, Any]]:
    """:data:`FORMER` fitted exactly as ``train_ranker`` fits the default (same windows, same
    slates), with its held-out slate metrics; (ranker, fit record, held-out evaluation)."""
    from core.constants import DAY_MS
    from data.features.build import cutoffs, load_event_log
    from training.inference import load_scorer

    fconfig = FeatureConfig()
    ev = load_event_log(ws, fconfig)
    cut = cutoffs(ev, fconfig)
    scorer, labelled = load_scorer(run), read_labelled(ws)
    fit_part = build_slates(labelled, ev, scorer, cut["valid"], cut["test"], fconfig)
    held = build_slates(labelled, ev, scorer, cut["test"], cut["end"], fconfig)
    stop = (cut["test"] - DAY_MS) // DAY_MS
    ranker, record = fit_ranker(
        fit_part.take(fit_part.day < stop).data,
        fit_part.take(fit_part.day >= stop).data,
        RANKER_FEATURES,
        FORMER,
    )
    ranker.booster.set_param({"nthread": 1})
    return ranker, record, evaluate_slates(ranker, held, 1000, 0)


def latency(
    ws: Workspace, bundle: Path, n_users: int, repeats: int, former: Ranker
) -> dict[str, Any]:
    """Per-call times (ms) of each step the ranker adds, and of the whole request path, all
    interleaved per call so that a busy machine slows every row alike."""
    model = ServingModel.from_bundle(load_bundle(bundle))
    assert model.ranker is not None
    ranker = model.ranker
    plain = dataclasses.replace(model, ranker=None)
    fast_former = DensePredictor(former.booster, len(RANKER_FEATURES))
    rows = [
        r for r in pq.read_table(ws.features / "user_features.parquet").to_pylist() if r["history"]
    ]
    rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))[:n_users]]
    steps = {
        "features": lambda row, ids, sc, x: ranker.features(row, ids, sc),
        "inplace_predict": lambda row, ids, sc, x: ranker.booster.inplace_predict(
            x, validate_features=False
        ),
        "direct_predict": lambda row, ids, sc, x: ranker.predict(x),
        "dmatrix_predict": lambda row, ids, sc, x: ranker.booster.predict(
            xgb.DMatrix(x, nthread=1), validate_features=False
        ),
        "former_inplace": lambda row, ids, sc, x: former.booster.inplace_predict(
            x, validate_features=False
        ),
        "former_direct": lambda row, ids, sc, x: fast_former(x),
        "rerank": lambda row, ids, sc, x: ranker.rerank(row, ids, sc),
        "request_retrieval": lambda row, ids, sc, x: recommend_from_row(plain, row, 10),
        "request_ranker": lambda row, ids, sc, x: recommend_from_row(model, row, 10),
    }
    times: dict[str, list[int]] = {k: [] for k in steps}
    n_cands = []
    for row in rows:
        ids, scores = _candidates(model, row, ranker.candidates)
        n_cands.append(len(ids))
        x = ranker.features(row, ids, scores)
        for _ in range(repeats):
            for name, fn in steps.items():
                t0 = time.perf_counter_ns()
                fn(row, ids, scores, x)
                times[name].append(time.perf_counter_ns() - t0)
    out: dict[str, Any] = {k: _pcts(v) for k, v in times.items()}
    out["candidates"] = int(np.median(n_cands))
    out["calls"] = len(times["rerank"])
    out["users"] = len(rows)
    out["direct"] = ranker.predict.fast
    out["trees"] = ranker.booster.num_boosted_rounds()
    out["former_trees"] = former.booster.num_boosted_rounds()
    return out


def main(quick: bool = False) -> str:
    os.environ.setdefault("TASTEMAKER_DEMO", "1")  # synthetic world: the public demo key
    preset = "tiny" if quick else "demo"
    n_boot = 200 if quick else 1000
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-ranker-") as tmp:
        ws = Workspace(Path(tmp) / "ws").ensure()
        generate_world(ws, WorldConfig.preset(preset, 7))
        run_ingest(ws)
        build_features(ws, FeatureConfig())
        base = lake_config() if preset == "demo" else TrainConfig(epochs=3, batch_size=256)
        run = train_two_tower(ws, dataclasses.replace(base, refit=False))
        t0 = time.perf_counter()
        result = train_ranker(ws, run, RankerJobConfig(n_boot=n_boot))
        fit_s = time.perf_counter() - t0
        bundle = export_bundle(ws, run)
        former, former_fit, former_held = fit_former(ws, run)
        lat = latency(ws, bundle, 50 if quick else 300, 3 if quick else 5, former)
        t0 = time.perf_counter()
        settings = Settings(workspace=ws.root)
        sim = simulate(ws, ["retrieval", "model+ranker"], days=SIM_DAYS, seed=0, settings=settings)
        sim_s = time.perf_counter() - t0
    total = time.perf_counter() - started
    s, t, rows = result["held_out_slates"], result["temporal"], result["rows"]
    lines = [
        "## Ranking stage: XGBoost over two-tower candidates",
        "",
        f"Command: `{COMMAND}{' --quick' if quick else ''}` (`tastemaker demo` world, preset "
        f"{preset}, seed 7; two-tower `tastemaker train --no-refit` with the demo config, then "
        "`tastemaker train ranker`, `tastemaker export`, `tastemaker simulate --policy retrieval "
        f"--policy model+ranker --days {SIM_DAYS}`; {total:.0f} s in all, the ranker job "
        f"{fit_s:.0f} s). Mean [95 % bootstrap interval, {n_boot} resamples].",
        "",
        f"Training slates: the validation week's impressions but its last day "
        f"({rows['train']:,} rows, {rows['train_clicks']:,} clicks), early stopping on that "
        f"last day ({rows['valid']:,} rows; {result['fit']['rounds']} rounds); held out: the test "
        f"week ({rows['held_out']:,} rows, {rows['held_out_clicks']:,} clicks). Impressions of "
        "artists the user already had are left out (serving never shows them).",
        "",
        f"**Held-out slates** ({s['n_slates']:,} test-week slates with a click and a "
        "non-click; the ranker scores every row at the serving position):",
        "",
        "| order | NDCG@10 | AUC |",
        "|---|---|---|",
        f"| ranker | {_ci(s['ranker']['ndcg@10'])} | {_ci(s['ranker']['auc'])} |",
        f"| retrieval (two-tower score) | {_ci(s['retrieval']['ndcg@10'])} | "
        f"{_ci(s['retrieval']['auc'])} |",
        f"| logged order (the incumbent's slate) | {_ci(s['logged']['ndcg@10'])} | "
        f"{_ci(s['logged']['auc'])} |",
        f"| ranker − retrieval (paired) | {_ci(s['ranker-retrieval/ndcg@10'])} | "
        f"{_ci(s['ranker-retrieval/auc'])} |",
        "",
        f"**Temporal protocol** (test week, {t['n_users']:,} warm users frozen at the cutoff, "
        f"new artists they engaged with; two-tower top-{t['candidates']} re-ranked):",
        "",
        "| metric | two-tower | two-tower → ranker | difference (paired) |",
        "|---|---|---|---|",
    ]
    for m in ("recall@20", "ndcg@20", "recall@10", "ndcg@10"):
        v = t[m]
        lines.append(
            f"| {m} | {_ci(v['two-tower'])} | {_ci(v['two-tower+ranker'])} | "
            f"{_ci(v['difference'])} |"
        )
    imp = list(result["importance"].items())[:8]
    lines += [
        "",
        f"Gate (the daily loop's rules, `evaluation.gate.decide`): {t['gate']['summary']}",
        "",
        "Segments (Recall@20, two-tower top-200 → ranker vs the two-tower alone):",
        "",
        *segment_table(t),
    ]
    lines += [
        "",
        "Feature importance (share of total gain, top 8): "
        + ", ".join(f"{k} {v:.3f}" for k, v in imp)
        + ".",
        "",
        f"**Simulated A/B** ({SIM_DAYS} days, the world's listeners split at random; "
        f"{sim_s:.0f} s):",
        "",
        sim["markdown"].strip(),
        "",
        f"**Ranker size** (same slates, same windows): the default (depth "
        f"{result['job']['model']['max_depth']}, eta {result['job']['model']['eta']}) stopped at "
        f"{lat['trees']} trees with held-out NDCG@10 {_ci(s['ranker']['ndcg@10'])}, AUC "
        f"{_ci(s['ranker']['auc'])}; the first version's config (depth {FORMER.max_depth}, eta "
        f"{FORMER.eta}) stopped at {lat['former_trees']} trees with NDCG@10 "
        f"{_ci(former_held['ranker']['ndcg@10'])}, AUC {_ci(former_held['ranker']['auc'])} "
        f"(valid NDCG@10 {result['fit']['valid/ndcg@10']:.4f} vs "
        f"{former_fit['valid/ndcg@10']:.4f}).",
        "",
        f"**Added latency in-process** ({lat['calls']:,} calls: {lat['users']} users, median "
        f"{lat['candidates']} candidates, one thread, every step timed in turn on each call so a "
        "busy machine shows in all rows alike, the retrieval-only request included; ms; "
        f"direct predict {'on' if lat['direct'] else 'OFF (fell back to inplace_predict)'}):",
        "",
        "| step | p50 ms | p99 ms |",
        "|---|---|---|",
    ]
    for k, label in (
        ("features", "features (`ServingRanker.features`, 200 × 22 float32)"),
        ("inplace_predict", f"XGBoost `inplace_predict`, {lat['trees']} trees"),
        (
            "direct_predict",
            f"XGBoost dense predict called directly (`DensePredictor`), {lat['trees']} trees",
        ),
        ("dmatrix_predict", f"XGBoost `DMatrix` + `predict`, {lat['trees']} trees"),
        ("former_inplace", f"first version: `inplace_predict`, {lat['former_trees']} trees"),
        ("former_direct", f"first version's trees, direct predict ({lat['former_trees']})"),
        ("rerank", "**re-rank as served: features + direct predict + sort (added)**"),
        ("request_retrieval", "whole request, retrieval only (k = 10): the same-run baseline"),
        ("request_ranker", "whole request with the ranker (k = 10, 200 candidates fetched)"),
    ):
        p50, p99 = lat[k]
        lines.append(f"| {label} | {p50:.3f} | {p99:.3f} |")
    r50, r99 = lat["request_retrieval"]
    k50, k99 = lat["request_ranker"]
    lines += [
        "",
        f"Added to the whole request (with ranker − retrieval only): p50 "
        f"{k50 - r50:+.3f} ms, p99 {k99 - r99:+.3f} ms; load average during the run "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(main(quick="--quick" in sys.argv[1:]))
