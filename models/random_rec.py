"""Random scores: the floor every model must clear."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from models.base import Interactions, ScoringRecommender


@dataclass(frozen=True)
class RandomConfig:
    seed: int = 0


class RandomRecommender(ScoringRecommender):
    """Uniform random scores; the floor every model must clear.

    A user's scores depend only on (seed, user row), so a user gets the same list however the
    rows are batched.
    """

    name: ClassVar[str] = "random"

    def __init__(self, config: RandomConfig = RandomConfig()) -> None:
        super().__init__()
        self.cfg = config
        self.n_artists = 0

    def _fit(self, interactions: Interactions) -> None:
        self.n_artists = interactions.shape[1]

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(user_rows), self.n_artists), np.float32)  # (U, A)
        for i, row in enumerate(np.asarray(user_rows)):
            out[i] = np.random.default_rng([self.cfg.seed, int(row)]).random(self.n_artists)
        return out

    def config(self) -> dict[str, Any]:
        return {"seed": self.cfg.seed}

    def state(self) -> dict[str, np.ndarray]:
        return {"n_artists": np.array(self.n_artists)}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.n_artists = int(state["n_artists"])
