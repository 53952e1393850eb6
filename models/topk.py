"""Exclusion of seen artists and top-k, shared by every scoring model and by evaluation.

One implementation: a partial top-k (``torch.topk``, multi-threaded and ~4x faster than
``np.argpartition`` on a (1024, 20000) block here) on a block of scores with ``-inf`` at
excluded entries, then a tie-stable sort of only the k survivors. Rows are processed in blocks so memory stays at
``block_size * n_artists`` floats however many users are ranked.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch


def top_k(
    scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None
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
    values, indices = torch.topk(torch.from_numpy(scores), kk, dim=1)  # (U, kk) each
    cand, cand_scores = indices.numpy(), values.numpy()
    # ties broken by column index so results do not depend on argpartition internals
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
        idx[start:stop], top[start:stop] = top_k(scores, k, block_exclude)
    return idx, top
