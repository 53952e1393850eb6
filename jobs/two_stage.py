"""The two-stage system's job: fit the discovery ranker on multi-source candidates
(``training.two_stage``), measure it on the test week against retrieval alone and the tuned
ItemKNN, and write ``runs/<run>/two_stage/`` (booster, neighbour table, record, report).

``fit_run``: a two-tower trained without its refit (the ranker's candidates at the ``valid``
cutoff must be out of sample); ``serve_run`` (default ``fit_run``): the two-tower the system
serves, whose folder receives the result and whose bundle carries it. The daily loop fits
with its no-refit sibling and serves the refit challenger.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.atomic import write_bytes, write_json
from core.workspace import Workspace
from data.features.artist import trending
from data.features.build import FeatureConfig, cutoffs, load_event_log
from data.features.candidates import SOURCES, TWO_STAGE_FEATURES, RetrievalBlend, blend_scores
from data.features.ranker import trending_from_table
from data.schemas import USER_SEGMENT_FIELDS
from evaluation.gate import Contender, GateConfig, decide, per_user_metric
from evaluation.metrics import per_user_metrics
from evaluation.ranking import context_at
from evaluation.segments import collapse_rare
from evaluation.stats import mean_interval, paired_interval
from evaluation.temporal import TemporalData, index_lists, load_temporal
from jobs.ranker import refuse_refit
from models.itemknn import ItemKNNConfig
from models.ranker import Ranker, fit_ranker
from training.inference import load_scorer
from training.two_stage import (
    NEIGHBOURS_FILE,
    TWO_STAGE_MODEL,
    TWO_STAGE_RECORD,
    TWO_STAGE_REPORT,
    Stage,
    TwoStageConfig,
    blend_of,
    build_examples,
    early_stop_mask,
    have_ids,
    load_two_stage,
    neighbour_table,
    rank_lists,
    trending_ids,
    two_stage_dir,
)

log = logging.getLogger("tastemaker.training")


def knn_shrink(ws: Workspace, config: TwoStageConfig, tuned_on: str = "demo") -> float:
    """The neighbour table's shrink: the config's, else the tuned ItemKNN's, else default."""
    from jobs.tune import tuned_params

    if config.shrink is not None:
        return float(config.shrink)
    params = tuned_params(ws, tuned_on, "itemknn") or {}
    return float(params.get("shrink", ItemKNNConfig().shrink))


def stage_at(
    ws: Workspace,
    ev: Any,
    data: TemporalData,
    at_ms: int,
    artist_ids: np.ndarray,
    config: TwoStageConfig,
    shrink: float,
    fconfig: FeatureConfig,
) -> Stage:
    """The candidate stage as of ``at_ms``: neighbours of ``data.train`` (the interactions
    before it), artist context and trending lists of the events before it."""
    lists = trending_from_table(trending(ev, at_ms, fconfig))
    return Stage(
        artist_ids,
        neighbour_table(data.train, list(artist_ids), config.neighbours, shrink),
        context_at(ev, at_ms, fconfig),
        trending_ids(lists, artist_ids),
        config.candidates,
    )


def train_two_stage(
    ws: Workspace,
    fit_run: str | Path | None = None,
    serve_run: str | Path | None = None,
    config: TwoStageConfig | None = None,
    fconfig: FeatureConfig | None = None,
    gate: GateConfig | None = None,
    peers: Sequence[str] = ("itemknn",),
) -> dict[str, Any]:
    """Fit on the validation week with ``fit_run``'s two-tower, measure on the test week with
    ``serve_run``'s (against retrieval alone and ``peers``, tuned where ``tastemaker tune``
    saved params), write ``<serve_run>/two_stage/``; returns the record."""
    config = config or TwoStageConfig()
    fconfig = fconfig or FeatureConfig()
    fit_dir = Path(fit_run) if fit_run else ws.latest_run()
    serve_dir = Path(serve_run) if serve_run else fit_dir
    refuse_refit(
        fit_dir,
        "its candidates at the validation cutoff (the ranker's training data) are in-sample; "
        "fit the two-stage ranker with a `tastemaker train --no-refit` run (--fit-run) and "
        "serve the refit one",
    )
    started = time.perf_counter()
    shrink = knn_shrink(ws, config)
    ev = load_event_log(ws, fconfig)
    cut = cutoffs(ev, fconfig)
    valid = load_temporal(ws, "valid")
    fit_scorer = load_scorer(fit_dir)
    stage = stage_at(
        ws, ev, valid, cut["valid"], np.asarray(fit_scorer.artist_ids), config, shrink, fconfig
    )
    log.info("two-stage: candidates and features of the validation week's listeners")
    ex = build_examples(valid.users, fit_scorer, stage)
    keys = valid.users["user_key"].to_numpy(zero_copy_only=False)
    hold = early_stop_mask(keys, config.early_stop_share)[ex.user]
    ranker, fit = fit_ranker(
        ex.take(~hold).data, ex.take(hold).data, TWO_STAGE_FEATURES, config.model
    )
    log.info("two-stage ranker: %d rounds", fit["rounds"])
    serve_scorer = load_scorer(serve_dir)
    test = load_temporal(ws, "test")
    serve_stage = stage_at(
        ws, ev, test, cut["test"], np.asarray(serve_scorer.artist_ids), config, shrink, fconfig
    )
    result: dict[str, Any] = {
        "run_id": serve_dir.name,
        "fit_run": fit_dir.name,
        "features": list(TWO_STAGE_FEATURES),
        "job": dataclasses.asdict(config),
        "shrink": shrink,
        "fit": fit,
        "rows": {
            "fit_listeners": int(len(np.unique(ex.user[~hold]))),
            "early_stop_listeners": int(len(np.unique(ex.user[hold]))),
            "fit_rows": int((~hold).sum()),
            "early_stop_rows": int(hold.sum()),
            "candidates_per_listener": float(len(ex.user) / max(ex.n_users, 1)),
            "candidate_recall_valid": ex.n_found / max(ex.n_targets, 1),
            "by_source_valid": _source_recall(ex.sources, ex.data.y),
        },
        "importance": ranker.importance(),
    }
    result["test"] = measure(
        ws, test, serve_dir, serve_scorer, serve_stage, ranker, config, gate, peers
    )
    result["clicks"] = click_objective(
        ws,
        test,
        serve_scorer,
        serve_stage,
        ranker,
        cut["test"],
        cut["end"],
        config.n_boot,
        config.seed,
        config.blend,
    )
    result["seconds"] = round(time.perf_counter() - started, 1)
    out = two_stage_dir(serve_dir)
    out.mkdir(exist_ok=True)
    write_bytes(out / TWO_STAGE_MODEL, ranker.to_bytes())
    table = serve_stage.neighbours.to_table(list(serve_scorer.artist_ids))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_bytes(out / NEIGHBOURS_FILE, sink.getvalue().to_pybytes())
    write_json(out / TWO_STAGE_RECORD, result)
    write_bytes(out / TWO_STAGE_REPORT, render_report(result).encode())
    return result


def _source_recall(sources: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Share of the found targets each source proposed (a target may have several)."""
    hit = y > 0
    return {
        name: float(sources[hit, j].mean()) if hit.any() else 0.0 for j, name in enumerate(SOURCES)
    }


def two_stage_per_user(
    data: TemporalData,
    scorer: Any,
    stage: Stage,
    ranker: Ranker,
    ks: tuple[int, ...],
    blend: RetrievalBlend,
) -> dict[str, np.ndarray]:
    """Per-user metrics (``per_user_metrics`` at ``ks``) of the two-stage system (``ranker``
    ordering with ``blend``) on ``data``'s warm users, in the order of
    ``np.flatnonzero(data.warm)`` (what the gate compares)."""
    users = data.users.take(pa.array(np.flatnonzero(data.warm)))
    top = rank_lists(ranker, users, scorer, stage, max(ks), blend)
    targets = index_lists(users["targets"], stage.artist_ids)
    return per_user_metrics(top, targets, ks)


def measure(
    ws: Workspace,
    test: TemporalData,
    serve_dir: Path,
    scorer: Any,
    stage: Stage,
    ranker: Ranker,
    config: TwoStageConfig,
    gate: GateConfig | None = None,
    peers: Sequence[str] = ("itemknn",),
) -> dict[str, Any]:
    """Test week, warm users: two-stage vs retrieval alone vs each of ``peers`` with the params
    ``tastemaker tune --dataset demo`` saved (its defaults otherwise): Recall@K / NDCG@K,
    bootstrap intervals, paired differences, and the gate's verdict against each."""
    from jobs.tune import tuned_params

    ks = tuple(sorted(config.ks))
    gate = gate or GateConfig(n_boot=max(config.n_boot, 100))
    metrics = list(
        dict.fromkeys([*(f"{m}@{k}" for k in ks for m in ("recall", "ndcg")), gate.metric])
    )
    mks = tuple(sorted({int(m.split("@")[1]) for m in metrics}))
    two = two_stage_per_user(test, scorer, stage, ranker, mks, config.blend)
    others = {"retrieval alone": Contender("retrieval alone", "two-tower", serve_dir)}
    params: dict[str, Any] = {}
    for peer in peers:
        p = tuned_params(ws, "demo", peer)
        label = f"{peer} (tuned)" if p else f"{peer} (defaults)"
        others[label] = Contender(label, peer, params=p)
        params[label] = p or {}
    values: dict[str, dict[str, np.ndarray]] = {"two-stage": {m: two[m] for m in metrics}}
    for name, c in others.items():
        values[name] = {m: per_user_metric(test, c, m) for m in metrics}
    out: dict[str, Any] = {"n_users": int(test.warm.sum()), "peer_params": params}
    peer_labels = [n for n in others if n != "retrieval alone"]
    out["best_peer"] = max(peer_labels, key=lambda n: float(np.nanmean(values[n][gate.metric])))
    for m in metrics:
        a = values["two-stage"][m]
        ok = ~np.isnan(a)
        out[m] = {
            name: mean_interval(v[m][ok], config.n_boot, config.seed) for name, v in values.items()
        }
        for name in others:
            out[m][f"two-stage − {name}"] = paired_interval(
                a[ok], values[name][m][ok], config.n_boot, config.seed
            )
    warm = np.flatnonzero(test.warm)
    seg = {f: test.users[f].to_numpy(zero_copy_only=False)[warm] for f in USER_SEGMENT_FIELDS}
    seg["country"] = collapse_rare(seg["country"])
    gm = gate.metric
    out["gate"] = {}
    for name in others:
        d = decide(values[name][gm], values["two-stage"][gm], seg, gate, (name, "two-stage"))
        out["gate"][name] = {**d.as_dict(), "summary": d.summary()}
    return out


def click_objective(
    ws: Workspace,
    test: TemporalData,
    scorer: Any,
    stage: Stage,
    ranker: Ranker,
    at_ms: int,
    until_ms: int,
    n_boot: int,
    seed: int,
    blend: RetrievalBlend,
) -> dict[str, Any]:
    """The second objective, clicked when shown: the test week's logged slates of the warm
    listeners (artists they already had left out, as serving never shows them), each shown
    artist scored by the two-stage system (the discovery ranker, blended as served) with the
    listener as of the test cutoff, against the
    two-tower's score and the logged order: per-slate NDCG@10 and AUC (``slate_metrics``)."""
    from evaluation.ranking import slate_metrics
    from training.ranker import read_labelled

    labelled = read_labelled(ws)
    ts = labelled.column("ts_ms").to_numpy()
    df = labelled.filter(pa.array((ts >= at_ms) & (ts < until_ms))).to_pandas()
    users = test.users.take(pa.array(np.flatnonzero(test.warm)))
    rows = users.to_pylist()
    of_user = {r["user_key"]: i for i, r in enumerate(rows)}
    df = df[df["user_key"].isin(of_user)]
    tt_all = scorer.score_users(users)  # (U, A)
    knn_all = stage.neighbours.scores_many(have_ids(rows, stage.artist_ids))
    ys, qs, sr, st, sl = [], [], [], [], []
    unions: dict[int, Any] = {}  # listener -> its candidate union (one per listener)
    for q, (key, part) in enumerate(df.groupby(["user_key", "request_id"], sort=True)):
        u = of_user[key[0]]
        ids = stage.index.get_indexer(part["artist_id"].to_numpy())
        had = stage.index.get_indexer(list(rows[u].get("seen") or []))
        keep = (ids >= 0) & ~np.isin(ids, had)
        if keep.sum() < 2:
            continue
        ids = ids[keep]
        if u not in unions:
            unions[u] = stage.candidates(rows[u], tt_all[u], knn_all[u])[0]
        x = stage.features_for(rows[u], tt_all[u], knn_all[u], ids, unions[u])
        ys.append(part["label"].to_numpy(np.float32)[keep])
        qs.append(np.full(len(ids), q))
        sr.append(blend_scores(ranker.predict(x), x, blend))
        st.append(tt_all[u][ids])
        sl.append(-part["position"].to_numpy(np.float64)[keep])
    if not ys:
        return {"n_slates": 0}
    y, qid = np.concatenate(ys), np.concatenate(qs)
    per = {
        name: slate_metrics(y, qid, np.concatenate(v))
        for name, v in (("two-stage ranker", sr), ("retrieval", st), ("logged", sl))
    }
    out: dict[str, Any] = {"n_slates": len(per["retrieval"]), "n_rows": int(len(y))}
    for name, m in per.items():
        out[name] = {
            k: mean_interval(m[c].to_numpy(), n_boot, seed)
            for k, c in (("ndcg@10", "ndcg"), ("auc", "auc"))
        }
    out["two-stage ranker − retrieval"] = {
        k: paired_interval(
            per["two-stage ranker"][c].to_numpy(), per["retrieval"][c].to_numpy(), n_boot, seed
        )
        for k, c in (("ndcg@10", "ndcg"), ("auc", "auc"))
    }
    return out


def two_stage_gate_values(
    ws: Workspace, run_dir: Path, data: TemporalData, metric: str, fconfig: FeatureConfig
) -> np.ndarray:
    """``(U_warm,)`` per-user ``metric`` of ``run_dir``'s two-stage system on ``data`` (the
    daily gate's contender ``"two-stage"``): candidates and context as of the test cutoff."""
    ranker, record = load_two_stage(run_dir)
    config = TwoStageConfig(
        candidates=dataclasses.replace(TwoStageConfig().candidates, **record["job"]["candidates"]),
        neighbours=int(record["job"]["neighbours"]),
        shrink=float(record["shrink"]),
        blend=blend_of(record),
    )
    ev = load_event_log(ws, fconfig)
    cut = cutoffs(ev, fconfig)
    scorer = load_scorer(run_dir)
    stage = stage_at(
        ws,
        ev,
        data,
        cut[data.split],
        np.asarray(scorer.artist_ids),
        config,
        config.shrink or 0.0,
        fconfig,
    )
    k = int(metric.split("@")[1]) if "@" in metric else 20
    per = two_stage_per_user(data, scorer, stage, ranker, (k,), config.blend)
    if metric not in per:
        raise ValueError(f"unknown gate metric {metric!r}; have {sorted(per)}")
    return np.asarray(per[metric], np.float64)


def _blend_text(blend: RetrievalBlend) -> str:
    if blend.off:
        return "the ranker's probability"
    return (
        f"the ranker's log-odds − {blend.weight:g} × log1p(two-tower rank), "
        f"{blend.heavy_weight:g} × for activity level high"
    )


def _ci(v: dict[str, float], d: int = 3) -> str:
    return f"{v['mean']:.{d}f} [{v['lo']:.{d}f}, {v['hi']:.{d}f}]"


def _diff(v: dict[str, float]) -> str:
    return f"{v['mean']:+.4f} [{v['lo']:+.4f}, {v['hi']:+.4f}]"


def render_report(result: dict[str, Any]) -> str:
    """The Markdown report of a two-stage record (``two_stage/report.md``)."""
    t, rows = result["test"], result["rows"]
    model = result["job"]["model"]
    at = model["eval_at"]
    stop = model.get("stop_metric") or f"ndcg@{at}"
    held = f"valid ndcg@{at} {result['fit'][f'valid/ndcg@{at}']:.4f}"
    if f"valid/{stop}" in result["fit"] and stop != f"ndcg@{at}":
        held += f", {stop} {result['fit'][f'valid/{stop}']:.4f}"
    src = ", ".join(f"{k} {v:.2f}" for k, v in rows["by_source_valid"].items())
    systems = [k for k in t["gate"]]
    lines = [
        f"# Two-stage system for run {result['run_id']} (ranker fitted with {result['fit_run']})",
        "",
        f"Candidates per listener (validation week): {rows['candidates_per_listener']:.0f}; "
        f"share of the week's new artists among them {rows['candidate_recall_valid']:.3f} "
        f"(of those found, proposed by: {src}). Ranker: {model.get('objective', 'rank:ndcg')}, "
        f"{result['fit']['rounds']} rounds, early stopping on the {stop} of "
        f"{rows['early_stop_listeners']} held-out listeners of the validation week ({held}). "
        f"Order: {_blend_text(blend_of(result))}.",
        "",
        f"## Test week ({t['n_users']} warm listeners, mean [95 % interval])",
        "",
        "| metric | two-stage | "
        + " | ".join(systems)
        + " | "
        + " | ".join(f"two-stage − {s}" for s in systems)
        + " |",
        "|---|---|" + "---|" * (2 * len(systems)),
    ]
    for m, v in t.items():
        if not (isinstance(v, dict) and isinstance(v.get("two-stage"), dict)):
            continue
        lines.append(
            f"| {m} | {_ci(v['two-stage'])} | "
            + " | ".join(_ci(v[s]) for s in systems)
            + " | "
            + " | ".join(_diff(v[f"two-stage − {s}"]) for s in systems)
            + " |"
        )
    lines += [""]
    for name, g in t["gate"].items():
        lines.append(f"Gate vs {name}: {g['summary']}")
        lines.append("")
    c = result.get("clicks") or {}
    if c.get("n_slates"):
        lines += [
            f"## Second objective: clicked when shown ({c['n_slates']} test-week slates with a "
            "click and a non-click)",
            "",
            "| order | NDCG@10 | AUC |",
            "|---|---|---|",
        ]
        for name in ("two-stage ranker", "retrieval", "logged"):
            lines.append(f"| {name} | {_ci(c[name]['ndcg@10'])} | {_ci(c[name]['auc'])} |")
        d = c["two-stage ranker − retrieval"]
        lines += [
            f"| two-stage ranker − retrieval | {_diff(d['ndcg@10'])} | {_diff(d['auc'])} |",
            "",
        ]
    lines += ["## Feature importance (share of total gain, top 10)", ""]
    lines += [f"- {k}: {v:.3f}" for k, v in list(result["importance"].items())[:10]]
    return "\n".join(lines) + "\n"
