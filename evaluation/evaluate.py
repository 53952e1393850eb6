"""Evaluate a run against the baselines on the temporal protocol; write metrics and report.

Every model ranks the full catalogue for the same eval users with the same exclusion of
``seen`` (``models.topk``) and is scored by the same ``evaluation.metrics``. The main table is
over *warm* users (present in train), which every model can serve; cold users are reported
separately for the models that can serve them (two-tower, trending, popular, random).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.atomic import write_json
from core.workspace import RunDir, Workspace
from data.schemas import USER_SEGMENT_FIELDS
from evaluation.metrics import DEFAULT_KS, catalogue_metrics, per_user_metrics
from evaluation.registry import TWO_TOWER, is_run_model, load_run_scorer, make_recommender
from evaluation.segments import collapse_rare, segment_metrics
from evaluation.temporal import (
    UNKNOWN_TARGET,
    TemporalData,
    index_lists,
    lists_to_csr,
    load_temporal,
)
from models.base import ScoringRecommender
from models.topk import blocked_top_k
from models.topk_torch import partition_torch
from models.trending import TrendingRecommender

log = logging.getLogger("tastemaker.training")

DEFAULT_MODELS = (TWO_TOWER, "random", "popular", "trending", "itemknn", "ease", "als")
COLD_CAPABLE = (TWO_TOWER, "random", "popular", "trending")
TRAIN_SAMPLE_TARGETS = 10  # held-in artists per user in the overfitting check
GAP_FLAG = 0.1  # flag when train recall@20 exceeds test by this much and by 2x or more

ScoreFn = Callable[[np.ndarray], np.ndarray]


def _baseline_scorer(model: ScoringRecommender, data: TemporalData) -> ScoreFn:
    """Scores for eval positions; cold users get a row past the fitted ones (random/popular
    ignore the row's content) and trending uses each eval user's own segment value."""
    if isinstance(model, TrendingRecommender):
        values = data.users[model.cfg.field].to_numpy(zero_copy_only=False)
        segs = np.array([model.segment_of(v) for v in values])
        return lambda pos: model.scores_for_segments(segs[pos])
    rows = np.where(data.warm, data.rows, data.train.shape[0] + np.arange(len(data.rows)))
    return lambda pos: model.score(rows[pos])


def _run_scorer(name: str, run_dir: Path, data: TemporalData) -> tuple[ScoreFn, np.ndarray]:
    scorer = load_run_scorer(name, run_dir)
    return (lambda pos: scorer.score_users(data.users.take(pos))), np.asarray(scorer.artist_ids)


def _popularity(data: TemporalData, artist_ids: np.ndarray) -> np.ndarray:
    counts = np.asarray(data.train.binary().sum(axis=0)).ravel()  # (A_train,)
    idx = pd.Index(data.train.artist_ids).get_indexer(artist_ids)
    return np.where(idx >= 0, counts[np.maximum(idx, 0)], 0.0)


def _rank_and_score(
    score_fn: ScoreFn,
    artist_ids: np.ndarray,
    positions: np.ndarray,
    seen: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    k: int,
    ks: Sequence[int],
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    exclude = lists_to_csr([seen[p] for p in positions], len(artist_ids))
    topk, _ = blocked_top_k(
        score_fn, positions, k, exclude, block_size=1024, partition=partition_torch
    )
    return topk, per_user_metrics(topk, [targets[p] for p in positions], ks)


def _summary(per_user: dict[str, np.ndarray], prefix: str) -> dict[str, float]:
    return {f"{prefix}/{m}": float(np.nanmean(v)) for m, v in per_user.items() if len(v)}


def _train_sample(data: TemporalData, n_users: int, seed: int) -> tuple[np.ndarray, list, list]:
    """Warm users with up to TRAIN_SAMPLE_TARGETS of their training artists as targets and
    the rest of ``seen`` excluded: how well the model ranks what it was trained on."""
    rng = np.random.default_rng(seed)
    warm = np.flatnonzero(data.warm)
    pos = np.sort(rng.choice(warm, size=min(n_users, len(warm)), replace=False))
    targets, seen = [], []
    fitted = data.train.binary()
    for p in pos:
        own = fitted.indices[fitted.indptr[data.rows[p]] : fitted.indptr[data.rows[p] + 1]]
        held = rng.choice(own, size=min(TRAIN_SAMPLE_TARGETS, max(len(own) - 1, 1)), replace=False)
        targets.append(np.sort(held))
        seen.append(np.setdiff1d(own, held))
    return pos, targets, seen


def evaluate_temporal(
    ws: Workspace,
    run_dir: str | Path,
    models: Sequence[str] = DEFAULT_MODELS,
    split: str = "test",
    k: int = 100,
    ks: Sequence[int] = DEFAULT_KS,
    n_boot: int = 500,
    train_sample_users: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate ``models`` on ``split``; merge into ``run_dir/metrics.json``, write the report."""
    from evaluation.report import write_report

    run_dir = Path(run_dir)
    data = load_temporal(ws, split)
    n = data.users.num_rows
    log.info("evaluating %s on %d %s users (%d cold)", list(models), n, split, (~data.warm).sum())
    seg_values = {f: data.users[f].to_numpy(zero_copy_only=False) for f in USER_SEGMENT_FIELDS}
    seg_values["country"] = collapse_rare(seg_values["country"])
    sample_pos, sample_targets, sample_seen = _train_sample(data, train_sample_users, seed)
    warm_pos, cold_pos = np.flatnonzero(data.warm), np.flatnonzero(~data.warm)
    result: dict[str, Any] = {
        "protocol": "temporal",
        "split": split,
        "n_users": n,
        "n_warm_users": len(warm_pos),
        "n_cold_users": len(cold_pos),
        "cold_artist_target_share": data.cold_artist_share,
        "models": {},
        "cold_start": {},
        "train_sample": {},
        "segments": {},
        "fit_seconds": {},
    }
    for name in models:
        start = time.perf_counter()
        if is_run_model(name):
            score_fn, artist_ids = _run_scorer(name, run_dir, data)
        else:
            model = make_recommender(name).fit(data.train)
            score_fn, artist_ids = _baseline_scorer(model, data), data.train.artist_ids
        result["fit_seconds"][name] = round(time.perf_counter() - start, 2)
        seen = index_lists(data.users["seen"], artist_ids)
        targets = index_lists(data.users["targets"], artist_ids)
        topk, per_user = _rank_and_score(score_fn, artist_ids, warm_pos, seen, targets, k, ks)
        summary = _summary(per_user, split)
        popularity = _popularity(data, artist_ids)
        cat = catalogue_metrics(topk, popularity, data.train.shape[0], ks)
        summary.update({f"{split}/{m}": v for m, v in cat.items()})
        result["models"][name] = summary
        result["segments"][name] = segment_metrics(
            per_user, {f: v[warm_pos] for f, v in seg_values.items()}, n_boot, seed
        )
        if name in COLD_CAPABLE and len(cold_pos):
            _, cold = _rank_and_score(score_fn, artist_ids, cold_pos, seen, targets, k, ks)
            result["cold_start"][name] = _summary(cold, split)
        # overfitting check: same metrics on held-in training artists (indices of train space)
        remap = pd.Index(artist_ids).get_indexer(data.train.artist_ids)
        s_targets = [np.where(remap[t] < 0, UNKNOWN_TARGET, remap[t]) for t in sample_targets]
        s_seen = [remap[s] for s in sample_seen]
        _, tr = _rank_and_score(
            lambda pos, f=score_fn: f(sample_pos[pos]),  # type: ignore[misc]
            artist_ids,
            np.arange(len(sample_pos)),
            s_seen,
            s_targets,
            k,
            ks,
        )
        result["train_sample"][name] = _summary(tr, "train")
        log.info("%s: %s/recall@20 = %.4f", name, split, summary.get(f"{split}/recall@20", 0.0))
    result["overfit_flags"] = overfit_flags(result, split)
    _merge_metrics(RunDir(run_dir).metrics, result, split, models[0] if models else None)
    write_report(run_dir, result)
    return result


def overfit_flags(result: dict[str, Any], split: str) -> dict[str, bool]:
    flags = {}
    for name, summary in result["models"].items():
        test = summary.get(f"{split}/recall@20", 0.0)
        train = result["train_sample"].get(name, {}).get("train/recall@20", 0.0)
        flags[name] = bool(train - test > GAP_FLAG and train >= 2 * test)
    return flags


def _merge_metrics(path: Path, result: dict[str, Any], split: str, primary: str | None) -> None:
    existing: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    existing["evaluation"] = result
    if primary is not None:
        existing.update(result["models"][primary])
    write_json(path, existing)
