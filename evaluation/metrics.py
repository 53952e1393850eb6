"""Ranking metrics over the full catalogue, computed once for training and evaluation.

Recall@K = |top-K ∩ targets| / |targets| per user (the HetRec 2K published convention),
NDCG@K with binary gains, HitRate@K (any hit in the top K) and MRR (reciprocal rank of the
first hit within the list), all averaged over users that have at least one target. Beyond
accuracy: catalogue coverage, novelty (mean self-information -log2 p(artist)) and average
recommended popularity (ARP, the popularity-bias measure of Abdollahpouri et al., 2019).

Everything is vectorised over users: hits are found with one ``searchsorted`` of
(user, artist) keys, never a per-user Python loop. A target index that cannot be
recommended (e.g. an artist unknown to the model) should be passed as -2: it counts in
|targets| but never matches; -1 in ``topk`` is padding and never matches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_KS = (10, 20, 50, 100)


def hits_matrix(topk: np.ndarray, targets: Sequence[np.ndarray]) -> np.ndarray:
    """Boolean ``(U, K)``: is the artist at each rank one of the user's targets."""
    n_users = topk.shape[0]
    if len(targets) != n_users:
        raise ValueError(f"topk has {n_users} users but targets has {len(targets)}")
    lengths = np.fromiter((len(t) for t in targets), dtype=np.int64, count=n_users)
    if lengths.sum() == 0:
        return np.zeros(topk.shape, dtype=bool)
    flat = np.concatenate([np.asarray(t, dtype=np.int64) for t in targets])  # (T,)
    width = int(max(topk.max(initial=0), flat.max())) + 3  # +2 shift keeps -2/-1 non-negative
    owner = np.repeat(np.arange(n_users, dtype=np.int64), lengths)  # (T,)
    target_keys = np.sort(owner * width + flat + 2)  # (T,)
    query = np.arange(n_users, dtype=np.int64)[:, None] * width + topk.astype(np.int64) + 2
    pos = np.minimum(np.searchsorted(target_keys, query), len(target_keys) - 1)  # (U, K)
    return (target_keys[pos] == query) & (topk >= 0)


def discounts(k: int) -> np.ndarray:
    """``(k,)`` the DCG discount of ranks 1..k: ``1 / log2(rank + 1)``."""
    return 1.0 / np.log2(np.arange(2, k + 2))


def ideal_dcg(n_relevant: np.ndarray, k: int) -> np.ndarray:
    """IDCG@k of lists with ``n_relevant`` binary-relevant items each (0 where none)."""
    ideal = np.concatenate([[0.0], np.cumsum(discounts(k))])  # ideal[n] = IDCG with n hits
    return ideal[np.minimum(np.asarray(n_relevant, np.int64), k)]


def per_user_metrics(
    topk: np.ndarray, targets: Sequence[np.ndarray], ks: Sequence[int] = DEFAULT_KS
) -> dict[str, np.ndarray]:
    """Each metric per user ``(U,)``; NaN for users without a target."""
    n_targets = np.fromiter((len(t) for t in targets), dtype=np.int64, count=len(targets))
    hits = hits_matrix(topk, targets)  # (U, Kmax)
    has = n_targets > 0
    denom = np.where(has, n_targets, 1)
    disc = discounts(topk.shape[1])  # (Kmax,)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        if k > topk.shape[1]:
            continue
        h = hits[:, :k]
        n_hits = h.sum(axis=1)
        out[f"recall@{k}"] = n_hits / denom
        out[f"ndcg@{k}"] = (h * disc[:k]).sum(axis=1) / ideal_dcg(denom, k)
        out[f"hitrate@{k}"] = (n_hits > 0).astype(np.float64)
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.inf)
    out["mrr"] = 1.0 / first
    for name in out:
        out[name] = np.where(has, out[name], np.nan)
    return out


def ranking_metrics(
    topk: np.ndarray, targets: Sequence[np.ndarray], ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Mean Recall@K, NDCG@K, HitRate@K and MRR for ``topk`` (U, Kmax), best first."""
    if not any(len(t) for t in targets):
        raise ValueError("no user has a target; nothing to evaluate")
    return {k: float(np.nanmean(v)) for k, v in per_user_metrics(topk, targets, ks).items()}


def catalogue_metrics(
    topk: np.ndarray, popularity: np.ndarray, n_users: int, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Coverage@K, novelty@K and ARP@K of what is recommended.

    ``popularity`` ``(A,)`` is the number of training users per artist and ``n_users`` the
    number of training users, so p(artist) = popularity / n_users.
    """
    n_artists = len(popularity)
    p = np.clip(np.asarray(popularity, np.float64) / max(n_users, 1), 1.0 / max(n_users, 1), 1.0)
    info = -np.log2(p)  # (A,) self-information
    out: dict[str, float] = {}
    for k in ks:
        if k > topk.shape[1]:
            continue
        items = topk[:, :k]
        valid = items >= 0
        picked = items[valid]
        out[f"coverage@{k}"] = float(len(np.unique(picked)) / max(n_artists, 1))
        out[f"novelty@{k}"] = float(info[picked].mean()) if len(picked) else float("nan")
        out[f"arp@{k}"] = float(p[picked].mean()) if len(picked) else float("nan")
    return out
