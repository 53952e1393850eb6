"""The per-user random holdout rule, shared by the importer's train/test files and the
evaluation protocol (``evaluation.protocols.random_holdout``) so both split the same way."""

from __future__ import annotations

import numpy as np


def holdout_mask(groups: np.ndarray, test_frac: float, seed: int) -> np.ndarray:
    """(N,) True for held-out rows: ``round(test_frac * n_g)`` random rows of each group ``g``.

    ``groups`` are non-negative int codes (one per row, e.g. the user). Every group keeps at
    least one row, so a single-row group is never held out. Same input and seed, same mask.
    """
    if not 0.0 < test_frac < 1.0:
        raise ValueError(f"test_frac must be in (0, 1); got {test_frac}")
    groups = np.asarray(groups, dtype=np.int64)
    counts = np.bincount(groups) if len(groups) else np.zeros(0, np.int64)  # (G,)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(groups)), groups))  # shuffled within each group
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # (G,)
    rank = np.empty(len(groups), dtype=np.int64)
    rank[order] = np.arange(len(groups)) - starts[groups[order]]
    n_test = np.minimum(np.floor(test_frac * counts + 0.5).astype(np.int64), counts - 1)
    return rank < n_test[groups]
