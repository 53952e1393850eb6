"""ALS for implicit feedback through the ``implicit`` library (CPU model).

Confidence c_ui = 1 + alpha * r_ui on binary r (Hu, Koren & Volinsky, 2008, "Collaborative
Filtering for Implicit Feedback Datasets"). implicit >= 0.5 takes the user x item CSR in
``fit``. Scores are the factor dot products; exclusion and top-k are ours (models.topk), so
ALS ranks exactly like every other model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from models.base import Interactions, ModelFitError, ScoringRecommender


@dataclass(frozen=True)
class ALSConfig:
    factors: int = 32
    regularization: float = 0.1
    alpha: float = 10.0
    iterations: int = 30
    binary: bool = True  # confidence from presence, not play counts
    num_threads: int = 2  # implicit's own OpenMP threads; BLAS is pinned to 1 during fit
    seed: int = 0


class ALSRecommender(ScoringRecommender):
    name: ClassVar[str] = "als"

    def __init__(self, config: ALSConfig = ALSConfig()) -> None:
        super().__init__()
        self.cfg = config
        self.user_factors = np.zeros((0, config.factors), np.float32)  # (U, f)
        self.artist_factors = np.zeros((0, config.factors), np.float32)  # (A, f)

    def _fit(self, interactions: Interactions) -> None:
        x = interactions.binary() if self.cfg.binary else interactions.matrix.astype(np.float32)
        # implicit warns (and slows down) when BLAS threads compete with its own threads
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.cfg.factors,
                regularization=self.cfg.regularization,
                alpha=self.cfg.alpha,
                iterations=self.cfg.iterations,
                num_threads=self.cfg.num_threads,
                random_state=self.cfg.seed,
            )
            model.fit(x.tocsr(), show_progress=False)
        self.user_factors = np.asarray(model.user_factors, np.float32)
        self.artist_factors = np.asarray(model.item_factors, np.float32)
        if not np.isfinite(self.user_factors).all():
            raise ModelFitError("als: factors are not finite after fitting")

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        return self.user_factors[user_rows] @ self.artist_factors.T  # (U, f) @ (f, A)

    def config(self) -> dict[str, Any]:
        return {k: getattr(self.cfg, k) for k in self.cfg.__dataclass_fields__}

    def state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "artist_factors": self.artist_factors}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.user_factors = np.asarray(state["user_factors"], np.float32)
        self.artist_factors = np.asarray(state["artist_factors"], np.float32)
