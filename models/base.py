"""The one recommender contract every model answers: ``fit`` then ``recommend``.

Modelled on implicit's ``RecommenderBase``: the two-tower model, EASE, ALS, ItemKNN,
most-popular, trending-by-segment and random all take the same :class:`Interactions`
and answer ``recommend(user_rows, k) -> (artist_rows, scores)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class Interactions:
    """A user x artist matrix (CSR, float32 weights) with the caller's ids for rows/columns.

    ``timestamps`` (optional, same sparsity as ``matrix``, epoch seconds) lets sequence-aware
    models order a user's history; ``user_meta`` optionally maps a segment field to one
    string value per row (e.g. ``{"country": array([...])}``).
    """

    matrix: sp.csr_matrix  # (U, A)
    user_ids: np.ndarray  # (U,) caller's user ids
    artist_ids: np.ndarray  # (A,) caller's artist ids
    timestamps: sp.csr_matrix | None = None
    user_meta: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        n_users, n_artists = self.matrix.shape
        if len(self.user_ids) != n_users or len(self.artist_ids) != n_artists:
            raise ValueError(
                f"matrix is {n_users}x{n_artists} but got {len(self.user_ids)} user ids and "
                f"{len(self.artist_ids)} artist ids"
            )

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape  # type: ignore[return-value]


class ModelFitError(RuntimeError):
    """A model could not be fitted on the given data (e.g. empty matrix, diverged loss)."""


@runtime_checkable
class Recommender(Protocol):
    name: str

    def fit(self, interactions: Interactions) -> Recommender: ...

    def recommend(
        self, user_rows: np.ndarray, k: int, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` artist column indices ``(U, k)`` and scores ``(U, k)``, best first.

        ``user_rows`` index rows of the fitted matrix. With ``exclude_seen`` the artists a
        user has in the training matrix are never returned. Fewer than ``k`` candidates are
        padded with index ``-1`` and score ``-inf``.
        """
        ...
