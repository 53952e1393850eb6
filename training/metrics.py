"""Ranking metrics over the full catalogue, computed once for training and evaluation.

Recall@K = |top-K ∩ targets| / |targets| per user (the HetRec 2K published convention),
NDCG@K with binary gains, both averaged over users that have at least one target.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_KS = (10, 20, 50, 100)


def hits_matrix(topk: np.ndarray, targets: Sequence[np.ndarray]) -> np.ndarray:
    """Boolean ``(U, K)``: is the artist at each rank one of the user's targets."""
    hits = np.zeros(topk.shape, dtype=bool)
    for u, t in enumerate(targets):
        if len(t):
            hits[u] = np.isin(topk[u], t)
    return hits


def ranking_metrics(
    topk: np.ndarray, targets: Sequence[np.ndarray], ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Mean Recall@K and NDCG@K for ``topk`` (U, Kmax) artist indices, best first."""
    n_targets = np.array([len(t) for t in targets])
    keep = n_targets > 0
    if not keep.any():
        raise ValueError("no user has a target; nothing to evaluate")
    hits = hits_matrix(topk, targets)[keep]  # (U', Kmax)
    n_targets = n_targets[keep]
    discounts = 1.0 / np.log2(np.arange(2, topk.shape[1] + 2))  # (Kmax,)
    out: dict[str, float] = {}
    for k in ks:
        if k > topk.shape[1]:
            continue
        h = hits[:, :k]
        out[f"recall@{k}"] = float((h.sum(1) / n_targets).mean())
        dcg = (h * discounts[:k]).sum(1)
        idcg = np.cumsum(discounts[:k])[np.minimum(n_targets, k) - 1]
        out[f"ndcg@{k}"] = float((dcg / idcg).mean())
    return out
