"""ItemKNN: item-item cosine similarity over binary interactions.

score(u, j) = sum over i in items(u) of cos(i, j), with cos(i, i) = 0 (Sarwar et al., 2001,
"Item-based collaborative filtering recommendation algorithms"). ``shrink`` is added to the
cosine's denominator; ``neighbours`` keeps each artist's most similar artists only (all by
default), as implicit's ``ItemItemRecommender(K=...)`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from models.base import Interactions, ScoringRecommender


@dataclass(frozen=True)
class ItemKNNConfig:
    shrink: float = 0.0  # added to the cosine denominator; 0 = plain cosine
    neighbours: int | None = None  # most similar artists kept per artist; None = all

    def __post_init__(self) -> None:
        if self.shrink < 0:
            raise ValueError(f"ItemKNNConfig.shrink must be >= 0; got {self.shrink}")
        if self.neighbours is not None and self.neighbours < 1:
            raise ValueError(f"ItemKNNConfig.neighbours must be >= 1; got {self.neighbours}")


class ItemKNNRecommender(ScoringRecommender):
    name: ClassVar[str] = "itemknn"

    def __init__(self, config: ItemKNNConfig = ItemKNNConfig()) -> None:
        super().__init__()
        self.cfg = config
        self.similarity = sp.csr_matrix((0, 0), dtype=np.float32)  # (A, A)

    def _fit(self, interactions: Interactions) -> None:
        x = interactions.binary()  # (U, A)
        norms = np.sqrt(np.asarray(x.sum(axis=0), np.float32).ravel())  # (A,)
        co = (x.T @ x).tocsr().astype(np.float32)  # (A, A) co-occurrence counts
        co.setdiag(0)
        co.eliminate_zeros()
        rows = np.repeat(np.arange(co.shape[0]), np.diff(co.indptr))
        co.data /= norms[rows] * norms[co.indices] + self.cfg.shrink
        if self.cfg.neighbours is not None:
            co = keep_top_per_row(co, self.cfg.neighbours)
        self.similarity = co

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        assert self.seen is not None
        return np.asarray((self.seen[user_rows] @ self.similarity).todense())  # (U, A)

    def config(self) -> dict[str, Any]:
        return {"shrink": self.cfg.shrink, "neighbours": self.cfg.neighbours}

    def state(self) -> dict[str, np.ndarray]:
        s = self.similarity
        return {
            "data": s.data,
            "indices": s.indices,
            "indptr": s.indptr,
            "shape": np.array(s.shape),
        }

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        shape = tuple(int(v) for v in state["shape"])
        self.similarity = sp.csr_matrix(
            (state["data"], state["indices"], state["indptr"]), shape=shape
        )


def keep_top_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """``m`` with only the ``k`` largest stored values of every row (ties: the lower column)."""
    m = m.tocsr()
    lengths = np.diff(m.indptr)  # (R,)
    if not (lengths > k).any():
        return m
    rows = np.repeat(np.arange(m.shape[0]), lengths)  # (nnz,)
    # within each row, order by value descending, then column ascending
    order = np.lexsort((m.indices, -m.data, rows))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order)) - m.indptr[rows[order]]
    keep = rank < k
    out = sp.csr_matrix(
        (m.data[keep], m.indices[keep], np.concatenate([[0], np.cumsum(np.minimum(lengths, k))])),
        shape=m.shape,
    )
    return out
