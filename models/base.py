"""The one recommender contract every model answers: ``fit`` then ``recommend``.

Modelled on implicit's ``RecommenderBase``: the two-tower model, EASE, ALS, ItemKNN,
most-popular, trending-by-segment and random all take the same :class:`Interactions`
and answer ``recommend(user_rows, k) -> (artist_rows, scores)``.

Non-neural models derive from :class:`ScoringRecommender`: they only implement ``_fit`` and
``score``; exclusion of seen artists and top-k happen once, in :mod:`models.topk`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from models.topk import blocked_top_k


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
        for field, values in (self.user_meta or {}).items():
            if len(values) != n_users:
                raise ValueError(
                    f"user_meta[{field!r}] has {len(values)} values for {n_users} users"
                )

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape  # type: ignore[return-value]

    @classmethod
    def from_pairs(
        cls,
        users: np.ndarray,
        artists: np.ndarray,
        weights: np.ndarray | None = None,
        user_meta: dict[str, np.ndarray] | None = None,
    ) -> Interactions:
        """Build from parallel arrays of (user id, artist id[, weight]); duplicates sum.

        Ids are sorted (``np.unique``), so the same pairs always give the same matrix.
        ``user_meta`` values are per pair; the last value seen for a user wins.
        """
        users, artists = np.asarray(users), np.asarray(artists)
        if len(users) != len(artists):
            raise ValueError(f"{len(users)} user ids but {len(artists)} artist ids")
        if len(users) == 0:
            raise ValueError("no interactions: the table is empty")
        user_ids, rows = np.unique(users, return_inverse=True)
        artist_ids, cols = np.unique(artists, return_inverse=True)
        w = np.ones(len(rows), np.float32) if weights is None else np.asarray(weights, np.float32)
        matrix = sp.csr_matrix((w, (rows, cols)), shape=(len(user_ids), len(artist_ids)))
        matrix.sum_duplicates()
        meta = None
        if user_meta:
            meta = {}
            for field, values in user_meta.items():
                per_user = np.empty(len(user_ids), dtype=object)
                per_user[rows] = np.asarray(values, dtype=object)  # later rows overwrite
                meta[field] = per_user
        return cls(matrix.astype(np.float32), user_ids, artist_ids, user_meta=meta)

    def binary(self) -> sp.csr_matrix:
        """The matrix with every stored positive weight set to 1 (float32)."""
        m = self.matrix.copy().astype(np.float32)
        m.eliminate_zeros()
        m.data[:] = 1.0
        return m


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


class ScoringRecommender:
    """Base for models that can score every artist for a user: ``score`` + shared top-k.

    Subclasses implement ``_fit(interactions)`` and ``score(user_rows) -> (U, A)``, and
    ``state()`` / ``_load_state(state)`` so a fitted model round-trips through plain numpy
    arrays (persisted by ``training.byod`` as ``model.npz``).
    """

    name: ClassVar[str] = "base"
    block_size: int = 1024  # users scored at once: bounds memory at block_size * A floats

    def __init__(self) -> None:
        self.seen: sp.csr_matrix | None = None

    def fit(self, interactions: Interactions) -> ScoringRecommender:
        if interactions.matrix.nnz == 0:
            raise ModelFitError(f"{self.name}: the interaction matrix has no entries")
        self.seen = interactions.binary()
        self._fit(interactions)
        return self

    def _fit(self, interactions: Interactions) -> None:
        raise NotImplementedError

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        """Scores ``(U, A)`` float32 for every artist; higher is better. Return a fresh array
        or a read-only view: top-k writes -inf into writable arrays it owns."""
        raise NotImplementedError

    @property
    def n_users(self) -> int:
        if self.seen is None:
            raise ModelFitError(f"{self.name}: call fit() before recommend()")
        return int(self.seen.shape[0])

    def check_rows(self, user_rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(user_rows, dtype=np.int64).reshape(-1)
        bad = rows[(rows < 0) | (rows >= self.n_users)]
        if len(bad):
            raise ValueError(
                f"{self.name}: user rows {bad[:5].tolist()} are out of range for a model "
                f"fitted on {self.n_users} users (unknown users have no row)"
            )
        return rows

    def recommend(
        self, user_rows: np.ndarray, k: int, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        rows = self.check_rows(user_rows)
        assert self.seen is not None  # check_rows raised otherwise
        exclude = self.seen[rows] if exclude_seen else None
        return blocked_top_k(self.score, rows, k, exclude, self.block_size)

    # --- persistence as plain arrays (no I/O here; training.byod writes them) ---------------
    def config(self) -> dict[str, Any]:
        return {}

    def state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def load_state(self, state: dict[str, np.ndarray], seen: sp.csr_matrix) -> ScoringRecommender:
        self.seen = seen.tocsr()
        self._load_state(state)
        return self
