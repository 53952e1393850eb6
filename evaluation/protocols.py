"""Evaluation protocols, each seeded and reproducible.

* :func:`random_holdout` — per user, a random ``test_fraction`` of their artists is held out
  (the published Last.fm-2K protocol, default 80/20). The catalogue keeps every artist, so
  ranking is over the full catalogue.
* :func:`temporal_split` lives in :mod:`evaluation.temporal` (it reads the feature tables).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from data.splits import holdout_mask
from models.base import Interactions


@dataclass(frozen=True)
class Holdout:
    train: Interactions
    test: list[np.ndarray]  # per training row: held-out artist column indices


def random_holdout(
    interactions: Interactions, test_fraction: float = 0.2, seed: int = 0
) -> Holdout:
    """Hold out ``round(test_fraction * n_u)`` random artists of every user ``u``.

    Users keep at least one training artist; a user with a single artist has no test set.
    The same ``seed`` gives the same split.
    """
    m = interactions.matrix.tocsr().copy()
    m.sum_duplicates()
    n_users = m.shape[0]
    rows = np.repeat(np.arange(n_users), np.diff(m.indptr))  # (nnz,)
    is_test = holdout_mask(rows, test_fraction, seed)
    train = sp.csr_matrix((m.data[~is_test], (rows[~is_test], m.indices[~is_test])), shape=m.shape)
    test_cols = m.indices[is_test]
    test_rows = rows[is_test]
    bounds = np.searchsorted(test_rows, np.arange(n_users + 1))
    test = [np.sort(test_cols[bounds[u] : bounds[u + 1]]) for u in range(n_users)]
    return Holdout(
        Interactions(
            train.astype(np.float32),
            interactions.user_ids,
            interactions.artist_ids,
            user_meta=interactions.user_meta,
        ),
        test,
    )
