"""EASE: a closed-form linear item-item autoencoder with a zero diagonal.

B = I - P diag(1 / diag(P)), P = (X^T X + lambda I)^-1 (Steck, 2019, "Embarrassingly Shallow
Autoencoders for Sparse Data"). Artists nobody interacted with get a zero column in X^T X,
so their rows and columns of B are exactly zero: the inverse is taken only over artists with
at least one interaction, which keeps memory at (A_active)^2 floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.linalg

from models.base import Interactions, ModelFitError, ScoringRecommender


@dataclass(frozen=True)
class EASEConfig:
    l2: float = 100.0  # lambda; 100 is the HetRec-2K tuned value


class EASERecommender(ScoringRecommender):
    name: ClassVar[str] = "ease"

    def __init__(self, config: EASEConfig = EASEConfig()) -> None:
        super().__init__()
        self.cfg = config
        self.active = np.zeros(0, np.int64)  # (A',) artist columns with any interaction
        self.weights = np.zeros((0, 0), np.float32)  # (A', A') B restricted to active
        self.n_artists = 0

    def _fit(self, interactions: Interactions) -> None:
        x = interactions.binary()  # (U, A)
        self.n_artists = x.shape[1]
        self.active = np.flatnonzero(np.diff(x.tocsc().indptr) > 0)
        xa = x[:, self.active]  # (U, A')
        # float32 halves memory; counts are exact and lambda keeps the system well conditioned
        gram = np.asarray((xa.T @ xa).todense(), dtype=np.float32)  # (A', A')
        gram[np.diag_indices_from(gram)] += self.cfg.l2
        try:
            p = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)  # (A', A')
        except np.linalg.LinAlgError as exc:
            raise ModelFitError(f"ease: X^T X + {self.cfg.l2} I is singular") from exc
        p /= -np.diag(p).copy()  # (A', A') in place: column j divided by -P_jj
        p[np.diag_indices_from(p)] = 0.0
        self.weights = np.asarray(p, dtype=np.float32)

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        assert self.seen is not None
        xa = self.seen[user_rows][:, self.active]  # (U, A')
        out = np.zeros((len(user_rows), self.n_artists), np.float32)  # (U, A)
        out[:, self.active] = np.asarray(xa @ self.weights)
        return out

    def config(self) -> dict[str, Any]:
        return {"l2": self.cfg.l2}

    def state(self) -> dict[str, np.ndarray]:
        return {
            "active": self.active,
            "weights": self.weights,
            "n_artists": np.array(self.n_artists),
        }

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.active = np.asarray(state["active"], np.int64)
        self.weights = np.asarray(state["weights"], np.float32)
        self.n_artists = int(state["n_artists"])
