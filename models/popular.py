"""Most-popular: every user gets the artists with the most distinct listeners."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from models.base import Interactions, ScoringRecommender


@dataclass(frozen=True)
class PopularConfig:
    binary: bool = True  # count distinct users (True) or sum weights such as play counts


class PopularRecommender(ScoringRecommender):
    """Every user gets the artists with the most listeners in the training matrix."""

    name: ClassVar[str] = "popular"

    def __init__(self, config: PopularConfig = PopularConfig()) -> None:
        super().__init__()
        self.cfg = config
        self.popularity = np.zeros(0, np.float32)

    def _fit(self, interactions: Interactions) -> None:
        m = interactions.binary() if self.cfg.binary else interactions.matrix
        self.popularity = np.asarray(m.sum(axis=0), dtype=np.float32).ravel()  # (A,)

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.popularity, (len(user_rows), len(self.popularity)))

    def config(self) -> dict[str, Any]:
        return {"binary": self.cfg.binary}

    def state(self) -> dict[str, np.ndarray]:
        return {"popularity": self.popularity}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.popularity = np.asarray(state["popularity"], np.float32)
