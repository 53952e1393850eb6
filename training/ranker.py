"""The ranking stage's job: logged slates -> point-in-time features -> LambdaMART -> evaluation.

Time, with the feature job's cutoffs (``valid``, ``test``, ``end``):

* training slates: impressions of the validation week except its last day; early stopping on
  the slates of that last day; held-out slates: the test week. The two-tower that scores them
  must not have trained on the validation week (``tastemaker train --no-refit``), or its
  retrieval score would be in-sample exactly where the ranker learns how far to trust it;
  a refit run is refused.
* every impression of day D gets the user's features and the artist/trending context as of
  midnight starting D (``user_features_at`` / ``artist_features`` / ``trending`` at that
  time), so nothing of day D or later is seen; impressions of artists the user already had
  (``seen``/``followed`` as of that midnight) are left out, since serving never shows them.

Evaluation: NDCG@10 and AUC per held-out slate for the ranker (position fixed at the serving
value) against the retrieval order and the logged order, and on the temporal protocol
(test users frozen at the test cutoff): two-tower top-``candidates`` re-ranked, against the
two-tower alone, Recall@K / NDCG@K with bootstrap intervals and a paired interval of the
difference. Everything is written under ``runs/<run>/ranker/``; ``tastemaker export`` puts
the ranker into the bundle when it is there.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.atomic import write_bytes, write_json
from core.constants import DAY_MS
from core.workspace import Workspace
from data.features.artist import artist_features, trending
from data.features.build import FeatureConfig, cutoffs, load_event_log
from data.features.events import EventLog
from data.features.ranker import (
    RANKER_FEATURES,
    SERVING_POSITION,
    RankerContext,
    candidate_features,
    check_spec,
    label_impressions,
    trending_from_table,
)
from data.features.user import user_features_at
from data.schemas import USER_SEGMENT_FIELDS
from evaluation.gate import GateConfig, decide, paired_bootstrap
from evaluation.metrics import per_user_metrics
from evaluation.segments import bootstrap_ci, collapse_rare, segment_metrics
from evaluation.temporal import index_lists, lists_to_csr, load_temporal
from models.ranker import Ranker, RankerConfig, RankingSet, fit_ranker
from models.topk import top_k

log = logging.getLogger("tastemaker.training")

RANKER_DIR = "ranker"
RANKER_MODEL = "ranker.ubj"
RANKER_RECORD = "ranker.json"
_LAKE_COLS = ["event_type", "user_key", "artist_id", "request_id", "position", "event_ts"]


@dataclass(frozen=True)
class RankerJobConfig:
    model: RankerConfig = field(default_factory=RankerConfig)
    candidates: int = 200  # retrieval depth the ranker re-orders (temporal protocol, serving)
    # unshown top retrieval candidates added to each clicked training slate as non-clicks
    # (their true label is unknown: off by default, measured in the README)
    extra_negatives: int = 0
    ks: tuple[int, ...] = (10, 20)
    n_boot: int = 500
    seed: int = 0
    # the rules "retrieval + ranker" must pass against "retrieval alone" (the daily loop passes
    # its own); None: the gate's defaults with ``n_boot`` resamples (at least 100)
    gate: GateConfig | None = None


@dataclass
class Slates:
    """Candidate rows of many slates, grouped by slate (``qid``), with their provenance."""

    data: RankingSet
    day: np.ndarray  # (n,) epoch day of the impression
    retrieval: np.ndarray  # (n,) retrieval score (the baseline order)
    logged: np.ndarray  # (n,) logged slate position (the incumbent's order)

    def with_position(self, position: int) -> RankingSet:
        x = self.data.x.copy()
        x[:, RANKER_FEATURES.index("position")] = position
        return RankingSet(x, self.data.y, self.data.qid)

    def take(self, mask: np.ndarray) -> Slates:
        d = self.data
        return Slates(
            RankingSet(d.x[mask], d.y[mask], d.qid[mask]),
            self.day[mask],
            self.retrieval[mask],
            self.logged[mask],
        )


def read_labelled(ws: Workspace) -> pa.Table:
    """``LABELLED`` rows of every slate in the lake (impressions joined to their clicks)."""
    if not ws.lake_events.is_dir():
        raise FileNotFoundError(f"{ws.lake_events} not found; run `tastemaker ingest` first")
    events = pq.read_table(
        ws.lake_events,
        columns=_LAKE_COLS,
        filters=[("event_type", "in", ["impression", "click"])],
    )
    return label_impressions(events)


def context_at(ev: EventLog, at_ms: int, config: FeatureConfig) -> RankerContext:
    """Artist features and trending lists as of ``at_ms`` (only events before it)."""
    arts = artist_features(ev, at_ms, config)
    return RankerContext.build(arts, trending_from_table(trending(ev, at_ms, config)))


def _ranks(scores: np.ndarray, exclude: list[set[int]]) -> np.ndarray:
    """(U, A) 1-based rank of each artist among the user's non-excluded ones by score."""
    s = scores.copy()
    for u, cols in enumerate(exclude):
        if cols:
            s[u, list(cols)] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, s.shape[1] + 1)[None, :], axis=1)
    return ranks


def build_slates(
    labelled: pa.Table,
    ev: EventLog,
    scorer: Any,
    start_ms: int,
    end_ms: int,
    config: FeatureConfig,
    extra_negatives: int = 0,
) -> Slates:
    """Features and labels of the slates shown in [start_ms, end_ms), day by day, point in time.

    ``scorer`` answers ``training.inference.TwoTowerScorer``'s ``artist_ids`` and
    ``score_users(users)``. ``extra_negatives`` > 0 adds to every clicked slate that many of
    the user's best retrieval candidates that it did not show (and the user did not have), as
    non-clicks at the position after the slate's last."""
    ts = labelled.column("ts_ms").to_numpy()
    window = labelled.filter(pa.array((ts >= start_ms) & (ts < end_ms)))
    df = window.to_pandas()
    df["day"] = df["ts_ms"] // DAY_MS
    artist_col = pd.Index(scorer.artist_ids)
    xs, ys, qids, days, rets, logged = [], [], [], [], [], []
    req_codes = pd.Index(sorted(df["request_id"].unique()))
    for day, part in df.groupby("day", sort=True):
        at = int(day) * DAY_MS
        users = user_features_at(ev, None, at, config)
        keys = part["user_key"].unique()
        users = users.filter(pc.is_in(users["user_key"], value_set=pa.array(keys, pa.string())))
        rows = users.to_pylist()
        scores = scorer.score_users(users)  # (U, A)
        excluded = [
            {
                int(i)
                for i in artist_col.get_indexer(list(r["seen"] or []) + list(r["followed"] or []))
                if i >= 0
            }
            for r in rows
        ]
        ranks = _ranks(scores, excluded)
        ctx = context_at(ev, at, config)
        of_user = {r["user_key"]: i for i, r in enumerate(rows)}
        for key, imp in part.groupby("user_key", sort=False):
            u = of_user.get(key)
            if u is None:
                continue
            col = artist_col.get_indexer(imp["artist_id"].to_numpy())
            keep = (col >= 0) & ~np.isin(col, list(excluded[u]))
            if not keep.any():
                continue
            imp, col = imp[keep], col[keep]
            x = candidate_features(
                ctx,
                rows[u],
                ctx.rows(imp["artist_id"].tolist()),
                scores[u, col],
                ranks[u, col],
                imp["position"].to_numpy(),
            )
            xs.append(x)
            ys.append(imp["label"].to_numpy(np.float32))
            qids.append(req_codes.get_indexer(imp["request_id"].to_numpy()))
            days.append(np.full(len(imp), int(day)))
            rets.append(scores[u, col])
            logged.append(imp["position"].to_numpy())
            if extra_negatives <= 0:
                continue
            best = np.argsort(ranks[u], kind="stable")  # the user's candidates, best first
            for req, shown in imp.groupby("request_id", sort=False):
                if not shown["label"].any():
                    continue
                taken = set(excluded[u]) | set(artist_col.get_indexer(shown["artist_id"]))
                extra = [int(c) for c in best[: extra_negatives + len(taken)] if c not in taken]
                extra_col = np.asarray(extra[:extra_negatives], np.int64)
                unshown = int(shown["position"].max()) + 1
                xs.append(
                    candidate_features(
                        ctx,
                        rows[u],
                        ctx.rows(list(artist_col[extra_col])),
                        scores[u, extra_col],
                        ranks[u, extra_col],
                        unshown,
                    )
                )
                ys.append(np.zeros(len(extra_col), np.float32))
                qids.append(np.full(len(extra_col), req_codes.get_loc(req)))
                days.append(np.full(len(extra_col), int(day)))
                rets.append(scores[u, extra_col])
                logged.append(np.full(len(extra_col), unshown))
        log.info(
            "ranker slates: day %s, %d impressions of %d users",
            pd.Timestamp(at, unit="ms").date(),
            len(part),
            len(rows),
        )
    if not xs:
        raise ValueError(f"no logged slates in [{start_ms}, {end_ms}); is the lake empty there?")
    qid = np.concatenate(qids)
    order = np.argsort(qid, kind="stable")
    cat = [np.concatenate(v)[order] for v in (ys, days, rets, logged)]
    data = RankingSet(np.concatenate(xs)[order], cat[0], qid[order].astype(np.int64))
    return Slates(data, cat[1], cat[2], cat[3])


def slate_metrics(y: np.ndarray, qid: np.ndarray, score: np.ndarray, k: int = 10) -> pd.DataFrame:
    """Per slate with a click and a non-click: NDCG@k and AUC of ordering by ``score``."""
    df = pd.DataFrame({"q": qid, "y": y, "s": score})
    # ties broken against the clicked row (a constant score earns no credit)
    df = df.sort_values(["q", "s", "y"], ascending=[True, False, True], kind="stable")
    df["rank"] = df.groupby("q").cumcount() + 1
    df["gain"] = np.where(df["rank"] <= k, df["y"] / np.log2(df["rank"] + 1), 0.0)
    g = df.groupby("q")
    out = pd.DataFrame({"dcg": g["gain"].sum(), "pos": g["y"].sum(), "n": g["y"].size()})
    ideal = np.array([np.sum(1.0 / np.log2(np.arange(2, min(int(p), k) + 2))) for p in out["pos"]])
    out["ndcg"] = out["dcg"] / np.where(ideal > 0, ideal, 1.0)
    # AUC: share of (click, non-click) pairs ordered right; ties count half
    df["r_asc"] = df.groupby("q")["s"].rank(method="average")
    pos_rank = df[df["y"] > 0].groupby("q")["r_asc"].sum()
    n_pos, n_neg = out["pos"], out["n"] - out["pos"]
    out["auc"] = (pos_rank.reindex(out.index).fillna(0) - n_pos * (n_pos + 1) / 2) / np.maximum(
        n_pos * n_neg, 1
    )
    return out[(out["pos"] > 0) & (out["pos"] < out["n"])]


def _interval(values: np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    mean, lo, hi = bootstrap_ci(values[:, None].astype(np.float64), n_boot, seed)
    return {"mean": float(mean[0]), "lo": float(lo[0]), "hi": float(hi[0])}


def _diff(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    d = (a - b).astype(np.float64)
    lo, hi = paired_bootstrap(d, n_boot, 0.95, seed)
    return {"mean": float(d.mean()), "lo": lo, "hi": hi}


def evaluate_slates(ranker: Ranker, slates: Slates, n_boot: int, seed: int) -> dict[str, Any]:
    """Held-out slates: ranker (position fixed at serving) vs retrieval vs logged order."""
    held = slates.with_position(SERVING_POSITION)
    orders = {
        "ranker": ranker.predict(held.x),
        "retrieval": slates.retrieval,
        "logged": -slates.logged.astype(np.float64),
    }
    per = {name: slate_metrics(held.y, held.qid, s) for name, s in orders.items()}
    out: dict[str, Any] = {"n_slates": len(per["ranker"]), "n_rows": int(len(held.y))}
    for name, m in per.items():
        out[name] = {
            "ndcg@10": _interval(m["ndcg"].to_numpy(), n_boot, seed),
            "auc": _interval(m["auc"].to_numpy(), n_boot, seed),
        }
    for metric, col in (("ndcg@10", "ndcg"), ("auc", "auc")):
        out[f"ranker-retrieval/{metric}"] = _diff(
            per["ranker"][col].to_numpy(), per["retrieval"][col].to_numpy(), n_boot, seed
        )
    return out


def rerank_top(
    ranker: Ranker,
    ctx: RankerContext,
    rows: list[dict[str, Any]],
    artist_ids: np.ndarray,
    cand: np.ndarray,
    cand_scores: np.ndarray,
) -> np.ndarray:
    """(U, N) the candidates of each user (retrieval order, -1 padded) in the ranker's order."""
    out = cand.copy()
    n = cand.shape[1]
    ranks = np.arange(1, n + 1)
    for u, row in enumerate(rows):
        ok = cand[u] >= 0
        if not ok.any():
            continue
        ids = list(artist_ids[cand[u][ok]])
        x = candidate_features(
            ctx, row, ctx.rows(ids), cand_scores[u][ok], ranks[ok], SERVING_POSITION
        )
        order = np.argsort(-ranker.predict(x), kind="stable")
        out[u, : ok.sum()] = cand[u][ok][order]
    return out


# the registry's name of a run's two-tower re-ranked by its ranker (the daily loop's challenger)
RANKED_MODEL = "two-tower+ranker"


def reranked_metrics(
    ev: EventLog,
    scorer: Any,
    ranker: Ranker,
    users: pa.Table,
    at_ms: int,
    candidates: int,
    ks: tuple[int, ...],
    fconfig: FeatureConfig,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-user metrics (``per_user_metrics`` at ``ks``) of ``users`` (``EVAL_USERS`` rows):
    (two-tower top-``candidates`` in retrieval order, the same re-ranked by ``ranker`` with
    the artist context as of ``at_ms``)."""
    artist_ids = np.asarray(scorer.artist_ids)
    scores = scorer.score_users(users).astype(np.float32)  # (U, A)
    seen = index_lists(users["seen"], artist_ids)
    targets = index_lists(users["targets"], artist_ids)
    cand, cand_scores = top_k(scores, candidates, lists_to_csr(seen, len(artist_ids)))
    ctx = context_at(ev, at_ms, fconfig)
    reranked = rerank_top(ranker, ctx, users.to_pylist(), artist_ids, cand, cand_scores)
    return per_user_metrics(cand, targets, ks), per_user_metrics(reranked, targets, ks)


def load_ranker(run_dir: Path) -> Ranker:
    """The ranker fitted against ``run_dir`` (``<run>/ranker/``), its spec checked."""
    folder = Path(run_dir) / RANKER_DIR
    record = json.loads((folder / RANKER_RECORD).read_text())
    check_spec(record["features"], f"{folder}")
    return Ranker.from_bytes((folder / RANKER_MODEL).read_bytes(), record["features"])


def ranked_per_user(
    ws: Workspace, run_dir: Path, data: Any, metric: str, fconfig: FeatureConfig | None = None
) -> np.ndarray:
    """``(U_warm,)`` per-user ``metric`` of "``run_dir``'s two-tower top-N re-ranked by its
    ranker" on ``data``'s (``evaluation.temporal.TemporalData``) warm users, in the order of
    ``np.flatnonzero(data.warm)``: what ``evaluation.gate`` needs of a ``"two-tower+ranker"``
    contender. The artist context is taken as of the test cutoff of today's features."""
    from training.inference import load_scorer

    fconfig = fconfig or FeatureConfig()
    record = json.loads((Path(run_dir) / RANKER_DIR / RANKER_RECORD).read_text())
    ev = load_event_log(ws, fconfig)
    users = data.users.take(pa.array(np.flatnonzero(data.warm)))
    k = int(metric.split("@")[1]) if "@" in metric else 20
    _, ranked = reranked_metrics(
        ev,
        load_scorer(run_dir),
        load_ranker(run_dir),
        users,
        cutoffs(ev, fconfig)["test"],
        int(record["job"]["candidates"]),
        (k,),
        fconfig,
    )
    if metric not in ranked:
        raise ValueError(f"unknown gate metric {metric!r}; have {sorted(ranked)}")
    return np.asarray(ranked[metric], np.float64)


def evaluate_temporal_rerank(
    ws: Workspace,
    ev: EventLog,
    scorer: Any,
    ranker: Ranker,
    at_ms: int,
    config: RankerJobConfig,
    fconfig: FeatureConfig,
) -> dict[str, Any]:
    """Test users frozen at the test cutoff: two-tower top-N re-ranked vs the two-tower."""
    data = load_temporal(ws, "test")
    warm = np.flatnonzero(data.warm)
    users = data.users.take(pa.array(warm))
    ks = config.ks
    gate = config.gate or GateConfig(n_boot=max(config.n_boot, 100))
    gk = int(gate.metric.split("@")[1]) if "@" in gate.metric else 20
    base, rank = reranked_metrics(
        ev, scorer, ranker, users, at_ms, config.candidates, tuple(sorted({*ks, gk})), fconfig
    )
    out: dict[str, Any] = {"n_users": len(warm), "candidates": config.candidates}
    seg = {f: users[f].to_numpy(zero_copy_only=False) for f in USER_SEGMENT_FIELDS}
    seg["country"] = collapse_rare(seg["country"])
    # the daily gate's rules (evaluation.gate.decide): "retrieval + ranker" is a challenger of
    # "retrieval alone" on the same users, per-user Recall@20, paired interval, segments
    gm = gate.metric
    decision = decide(base[gm], rank[gm], seg, gate, ("retrieval alone", "retrieval + ranker"))
    out["gate"] = {**decision.as_dict(), "summary": decision.summary()}
    only = {m: v for m, v in base.items() if m in (f"recall@{ks[-1]}", f"ndcg@{ks[-1]}")}
    out["segments"] = {
        "two-tower": segment_metrics(only, seg, config.n_boot, config.seed),
        "two-tower+ranker": segment_metrics(
            {m: rank[m] for m in only}, seg, config.n_boot, config.seed
        ),
    }
    for k in ks:
        for m in (f"recall@{k}", f"ndcg@{k}"):
            a, b = rank[m], base[m]
            ok = ~np.isnan(a)
            out[m] = {
                "two-tower": _interval(b[ok], config.n_boot, config.seed),
                "two-tower+ranker": _interval(a[ok], config.n_boot, config.seed),
                "difference": _diff(a[ok], b[ok], config.n_boot, config.seed),
            }
    return out


def train_ranker(
    ws: Workspace,
    run_dir: str | Path | None = None,
    config: RankerJobConfig | None = None,
    fconfig: FeatureConfig | None = None,
) -> dict[str, Any]:
    """Fit the ranker against ``run_dir``'s two-tower (default: the latest run), evaluate it,
    write ``<run>/ranker/``; returns the record (also ``ranker.json``)."""
    from training.inference import load_scorer

    config = config or RankerJobConfig()
    fconfig = fconfig or FeatureConfig()
    run_dir = Path(run_dir) if run_dir else ws.latest_run()
    train_cfg = json.loads((run_dir / "config.json").read_text()).get("train", {})
    if train_cfg.get("refit", False):
        raise ValueError(
            f"run {run_dir.name} was refit on train + valid, so its retrieval scores on the "
            "validation week's slates (the ranker's training data) are in-sample; train the "
            "two-tower with `tastemaker train --no-refit` and fit the ranker against that run"
        )
    started = time.perf_counter()
    ev = load_event_log(ws, fconfig)
    cut = cutoffs(ev, fconfig)
    scorer = load_scorer(run_dir)
    labelled = read_labelled(ws)
    stop_day = cut["test"] - DAY_MS
    log.info("ranker: building slates (train, early stopping, held out)")
    fit_part = build_slates(
        labelled, ev, scorer, cut["valid"], cut["test"], fconfig, config.extra_negatives
    )
    held = build_slates(labelled, ev, scorer, cut["test"], cut["end"], fconfig)
    train_part = fit_part.take(fit_part.day < stop_day // DAY_MS)
    valid_part = fit_part.take(fit_part.day >= stop_day // DAY_MS)
    ranker, record = fit_ranker(train_part.data, valid_part.data, RANKER_FEATURES, config.model)
    log.info("ranker: %d rounds, valid/ndcg@10 %.4f", record["rounds"], record["valid/ndcg@10"])
    result: dict[str, Any] = {
        "run_id": run_dir.name,
        "features": list(RANKER_FEATURES),
        "serving_position": SERVING_POSITION,
        "fit": record,
        "job": dataclasses.asdict(config),
        "rows": {
            "train": int(len(train_part.data.y)),
            "train_clicks": int(train_part.data.y.sum()),
            "valid": int(len(valid_part.data.y)),
            "held_out": int(len(held.data.y)),
            "held_out_clicks": int(held.data.y.sum()),
        },
        "importance": ranker.importance(),
        "held_out_slates": evaluate_slates(ranker, held, config.n_boot, config.seed),
        "temporal": evaluate_temporal_rerank(ws, ev, scorer, ranker, cut["test"], config, fconfig),
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    out = run_dir / RANKER_DIR
    out.mkdir(exist_ok=True)
    write_bytes(out / RANKER_MODEL, ranker.to_bytes())
    write_json(out / RANKER_RECORD, result)
    write_bytes(out / "report.md", render_report(result).encode())
    return result


def bundle_ranker(run_dir: Path) -> tuple[bytes, dict[str, Any]] | None:
    """(booster bytes, manifest ``"ranker"`` section) when ``run_dir`` has a fitted ranker."""
    folder = run_dir / RANKER_DIR
    if not (folder / RANKER_MODEL).is_file():
        return None
    record = json.loads((folder / RANKER_RECORD).read_text())
    section = {
        "features": record["features"],
        "serving_position": record["serving_position"],
        "candidates": record["job"]["candidates"],
        "rounds": record["fit"]["rounds"],
        "held_out_slates": {
            k: record["held_out_slates"][k]["ndcg@10"]["mean"] for k in ("ranker", "retrieval")
        },
    }
    return (folder / RANKER_MODEL).read_bytes(), section


def _ci(v: Mapping[str, float], digits: int = 4) -> str:
    return f"{v['mean']:.{digits}f} [{v['lo']:.{digits}f}, {v['hi']:.{digits}f}]"


def segment_table(t: Mapping[str, Any], metric: str = "recall@20") -> list[str]:
    """Markdown rows: ``metric`` per segment value, two-tower vs re-ranked, with intervals."""
    base, ranked = t["segments"]["two-tower"], t["segments"]["two-tower+ranker"]
    lines = [
        f"| segment | users | {metric} two-tower | {metric} two-tower → ranker |",
        "|---|---|---|---|",
    ]
    for name, values in base.items():
        for value, row in values.items():
            other = ranked[name][value]
            a, b = row[metric], other[metric]
            lines.append(
                f"| {name}={value} | {row['n_users']} | {a[0]:.3f} [{a[1]:.3f}, "
                f"{a[2]:.3f}] | {b[0]:.3f} [{b[1]:.3f}, {b[2]:.3f}] |"
            )
    return lines


def render_report(result: Mapping[str, Any]) -> str:
    s = result["held_out_slates"]
    lines = [
        f"# Ranker for run {result['run_id']}",
        "",
        f"{result['fit']['rounds']} rounds (early stopping on the last validation day: "
        f"ndcg@10 {result['fit']['valid/ndcg@10']:.4f}); rows {result['rows']}.",
        "",
        f"## Held-out slates (test week, {s['n_slates']} slates with a click and a non-click)",
        "",
        "| order | NDCG@10 | AUC |",
        "|---|---|---|",
    ]
    for name in ("ranker", "retrieval", "logged"):
        lines.append(f"| {name} | {_ci(s[name]['ndcg@10'])} | {_ci(s[name]['auc'])} |")
    lines.append(
        f"| ranker − retrieval | {_ci(s['ranker-retrieval/ndcg@10'])} | "
        f"{_ci(s['ranker-retrieval/auc'])} |"
    )
    t = result["temporal"]
    lines += [
        "",
        f"## Temporal protocol (test users, two-tower top-{t['candidates']} re-ranked, "
        f"{t['n_users']} users)",
        "",
        "| metric | two-tower | two-tower + ranker | difference |",
        "|---|---|---|---|",
    ]
    for m, v in t.items():
        if isinstance(v, dict) and "two-tower" in v and "difference" in v:
            lines.append(
                f"| {m} | {_ci(v['two-tower'])} | {_ci(v['two-tower+ranker'])} | "
                f"{_ci(v['difference'])} |"
            )
    lines += ["", f"Gate (the daily loop's rules): {t['gate']['summary']}", ""]
    lines += segment_table(t)
    lines += [
        "",
        "## Feature importance (share of total gain)",
        "",
        "| feature | share |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.3f} |" for k, v in result["importance"].items()]
    return "\n".join(lines) + "\n"
