"""Measuring the ranking stage: held-out slates and the temporal protocol, and its report.

Held-out slates: NDCG@10 and AUC per slate (a click and a non-click) for the ranker (position
fixed at the serving value) against the retrieval order and the logged order. Temporal
protocol (test users frozen at the test cutoff): the two-tower's top-``candidates`` re-ranked
against the two-tower alone, Recall@K / NDCG@K with bootstrap intervals, a paired interval of
the difference, the daily gate's decision and per-segment rows. Fitting is ``training.ranker``;
``jobs.ranker`` fits, measures with this module and writes the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from core.workspace import Workspace
from data.features.artist import artist_features, trending
from data.features.build import FeatureConfig
from data.features.events import EventLog
from data.features.ranker import (
    SERVING_POSITION,
    RankerContext,
    candidate_features,
    trending_from_table,
)
from data.schemas import USER_SEGMENT_FIELDS
from evaluation.gate import GateConfig, decide
from evaluation.metrics import discounts, ideal_dcg, per_user_metrics
from evaluation.segments import collapse_rare, segment_metrics
from evaluation.stats import mean_interval, paired_interval
from evaluation.temporal import index_lists, lists_to_csr, load_temporal
from models.ranker import Ranker, RankingSet
from models.topk import top_k


class SlateSet(Protocol):
    """What measuring needs of ``training.ranker.Slates``."""

    @property
    def retrieval(self) -> np.ndarray: ...  # (n,) retrieval score (the baseline order)

    @property
    def logged(self) -> np.ndarray: ...  # (n,) logged slate position (the incumbent's order)

    def with_position(self, position: int) -> RankingSet: ...


class RerankSettings(Protocol):
    """What measuring needs of ``training.ranker.RankerJobConfig``."""

    @property
    def candidates(self) -> int: ...

    @property
    def ks(self) -> tuple[int, ...]: ...

    @property
    def n_boot(self) -> int: ...

    @property
    def seed(self) -> int: ...

    @property
    def gate(self) -> GateConfig | None: ...


def context_at(ev: EventLog, at_ms: int, config: FeatureConfig) -> RankerContext:
    """Artist features and trending lists as of ``at_ms`` (only events before it)."""
    arts = artist_features(ev, at_ms, config)
    return RankerContext.build(arts, trending_from_table(trending(ev, at_ms, config)))


def slate_metrics(y: np.ndarray, qid: np.ndarray, score: np.ndarray, k: int = 10) -> pd.DataFrame:
    """Per slate with a click and a non-click: NDCG@k and AUC of ordering by ``score``."""
    df = pd.DataFrame({"q": qid, "y": y, "s": score})
    # ties broken against the clicked row (a constant score earns no credit)
    df = df.sort_values(["q", "s", "y"], ascending=[True, False, True], kind="stable")
    df["rank"] = df.groupby("q").cumcount() + 1
    rank = df["rank"].to_numpy()
    disc = discounts(k)[np.minimum(rank, k) - 1]
    df["gain"] = np.where(rank <= k, df["y"].to_numpy() * disc, 0.0)
    g = df.groupby("q")
    out = pd.DataFrame({"dcg": g["gain"].sum(), "pos": g["y"].sum(), "n": g["y"].size()})
    ideal = ideal_dcg(out["pos"].to_numpy().astype(np.int64), k)
    out["ndcg"] = out["dcg"] / np.where(ideal > 0, ideal, 1.0)
    # AUC: share of (click, non-click) pairs ordered right; ties count half
    df["r_asc"] = df.groupby("q")["s"].rank(method="average")
    pos_rank = df[df["y"] > 0].groupby("q")["r_asc"].sum()
    n_pos, n_neg = out["pos"], out["n"] - out["pos"]
    out["auc"] = (pos_rank.reindex(out.index).fillna(0) - n_pos * (n_pos + 1) / 2) / np.maximum(
        n_pos * n_neg, 1
    )
    return out[(out["pos"] > 0) & (out["pos"] < out["n"])]


def evaluate_slates(ranker: Ranker, slates: SlateSet, n_boot: int, seed: int) -> dict[str, Any]:
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
            "ndcg@10": mean_interval(m["ndcg"].to_numpy(), n_boot, seed),
            "auc": mean_interval(m["auc"].to_numpy(), n_boot, seed),
        }
    for metric, col in (("ndcg@10", "ndcg"), ("auc", "auc")):
        out[f"ranker-retrieval/{metric}"] = paired_interval(
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
    the artist context as of ``at_ms``). ``scorer`` answers ``artist_ids`` and
    ``score_users(users)`` (``training.inference.TwoTowerScorer``)."""
    artist_ids = np.asarray(scorer.artist_ids)
    scores = scorer.score_users(users).astype(np.float32)  # (U, A)
    seen = index_lists(users["seen"], artist_ids)
    targets = index_lists(users["targets"], artist_ids)
    cand, cand_scores = top_k(scores, candidates, lists_to_csr(seen, len(artist_ids)))
    ctx = context_at(ev, at_ms, fconfig)
    reranked = rerank_top(ranker, ctx, users.to_pylist(), artist_ids, cand, cand_scores)
    return per_user_metrics(cand, targets, ks), per_user_metrics(reranked, targets, ks)


def evaluate_temporal_rerank(
    ws: Workspace,
    ev: EventLog,
    scorer: Any,
    ranker: Ranker,
    at_ms: int,
    config: RerankSettings,
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
                "two-tower": mean_interval(b[ok], config.n_boot, config.seed),
                "two-tower+ranker": mean_interval(a[ok], config.n_boot, config.seed),
                "difference": paired_interval(a[ok], b[ok], config.n_boot, config.seed),
            }
    return out


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
    """The Markdown report of a ranker record (``ranker/report.md``)."""
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
