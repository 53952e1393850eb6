"""ItemKNN: item-item cosine similarity over binary interactions, all neighbours kept.

score(u, j) = sum over i in items(u) of cos(i, j), with cos(i, i) = 0 (Sarwar et al., 2001,
"Item-based collaborative filtering recommendation algorithms").
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
        self.similarity = co

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        assert self.seen is not None
        return np.asarray((self.seen[user_rows] @ self.similarity).todense())  # (U, A)

    def config(self) -> dict[str, Any]:
        return {"shrink": self.cfg.shrink}

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
