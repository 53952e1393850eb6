"""Exclusion of seen artists and top-k: the one implementation, shared by every recommender
and by evaluation.

A partial selection of the k best columns of a block of scores with ``-inf`` at excluded
entries, then a sort of only the k survivors with ties broken by column index. The selection
is a parameter: :func:`partition_numpy` (the default, so the baselines never import torch) or
``models.topk_torch.partition_torch`` (``torch.topk``: ~15x faster than ``np.argpartition`` on
a (1024, 20000) block here, used by evaluation and the two-tower). Rows are processed in
blocks so memory stays at ``block_size * n_artists`` floats however many users are ranked.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

# (scores (U, A), k <= A) -> (U, k) candidate column indices and their scores, any order
Partition = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def partition_numpy(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    cand = np.argpartition(scores, -k, axis=1)[:, -k:]  # (U, k)
    return cand, np.take_along_axis(scores, cand, axis=1)


def top_k(
    scores: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
    partition: Partition = partition_numpy,
) -> tuple[np.ndarray, np.ndarray]:
    """Best-first ``(U, k)`` column indices and scores of ``scores`` ``(U, A)``.

    ``exclude`` (``(U, A)`` CSR) marks entries never returned; ``scores`` is modified in
    place there. Slots without a candidate (k > A, or everything excluded) hold index -1
    and score -inf.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    n_users, n_artists = scores.shape
    if exclude is not None and exclude.nnz:
        if exclude.shape != scores.shape:
            raise ValueError(f"exclude is {exclude.shape} but scores are {scores.shape}")
        rows = np.repeat(np.arange(n_users), np.diff(exclude.indptr))
        scores[rows, exclude.indices] = -np.inf
    kk = min(k, n_artists)
    cand, cand_scores = partition(scores, kk)  # (U, kk) each
    # ties broken by column index so results do not depend on the partition's internals
    order = np.lexsort((cand, -cand_scores), axis=1)
    idx = np.take_along_axis(cand, order, axis=1).astype(np.int64)
    top = np.take_along_axis(cand_scores, order, axis=1).astype(np.float32)
    idx[np.isneginf(top)] = -1
    if kk < k:
        idx = np.pad(idx, ((0, 0), (0, k - kk)), constant_values=-1)
        top = np.pad(top, ((0, 0), (0, k - kk)), constant_values=-np.inf)
    return idx, top


def blocked_top_k(
    score_fn: Callable[[np.ndarray], np.ndarray],
    rows: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None,
    block_size: int = 1024,
    partition: Partition = partition_numpy,
) -> tuple[np.ndarray, np.ndarray]:
    """``top_k`` over ``score_fn(rows[block])`` block by block; ``exclude`` rows align with ``rows``."""
    idx = np.full((len(rows), k), -1, dtype=np.int64)
    top = np.full((len(rows), k), -np.inf, dtype=np.float32)
    for start in range(0, len(rows), block_size):
        stop = min(start + block_size, len(rows))
        scores = np.asarray(score_fn(rows[start:stop]), dtype=np.float32)  # (B, A)
        if not (scores.flags.writeable and scores.flags.owndata):
            scores = scores.copy()  # top_k writes -inf into it; never into a model's array
        block_exclude = None if exclude is None else exclude[start:stop]
        idx[start:stop], top[start:stop] = top_k(scores, k, block_exclude, partition)
    return idx, top
