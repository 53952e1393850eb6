"""Trending-by-segment: the cold-start fallback.

Popularity within the user's segment (e.g. their country), with recent interactions counting
more when timestamps are known (exponential decay, ``half_life_days``). Users whose segment is
unknown or too small to trust fall back to the global ranking; the global score is always
added with a small weight so that ties inside a segment break by global trend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from models.base import Interactions, ScoringRecommender

UNKNOWN = "unknown"


@dataclass(frozen=True)
class TrendingConfig:
    field: str = "country"  # user_meta field that defines the segment
    min_users: int = 20  # segments with fewer users use the global ranking
    half_life_days: float = 14.0  # decay of an interaction's weight with age
    global_weight: float = 0.01  # share of the global score mixed into a segment's score


class TrendingRecommender(ScoringRecommender):
    name: ClassVar[str] = "trending"

    def __init__(self, config: TrendingConfig = TrendingConfig()) -> None:
        super().__init__()
        self.cfg = config
        self.segment_values = np.zeros(0, dtype=object)  # (S,)
        self.segment_scores = np.zeros((0, 0), np.float32)  # (S, A)
        self.global_scores = np.zeros(0, np.float32)  # (A,)
        self.user_segment = np.zeros(0, np.int64)  # (U,) index into segments, -1 = global

    def _recency_weighted(self, interactions: Interactions) -> sp.csr_matrix:
        weights = interactions.binary()
        ts = interactions.timestamps
        if ts is None or ts.nnz != weights.nnz:
            return weights
        ts = ts.tocsr()
        age_days = (ts.data.max() - ts.data) / 86400.0
        weights.data = np.exp2(-age_days / self.cfg.half_life_days).astype(np.float32)
        return weights

    def _fit(self, interactions: Interactions) -> None:
        weights = self._recency_weighted(interactions)
        global_scores = np.asarray(weights.sum(axis=0), np.float32).ravel()  # (A,)
        self.global_scores = global_scores / max(float(global_scores.max()), 1e-12)
        n_users = interactions.shape[0]
        self.user_segment = np.full(n_users, -1, np.int64)
        meta = (interactions.user_meta or {}).get(self.cfg.field)
        if meta is None:
            self.segment_values = np.zeros(0, dtype=object)
            self.segment_scores = np.zeros((0, len(global_scores)), np.float32)
            return
        values = np.asarray([UNKNOWN if v is None else str(v) for v in meta], dtype=object)
        uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        keep = (counts >= self.cfg.min_users) & (uniq != UNKNOWN)
        seg_of_value = np.where(keep, np.cumsum(keep) - 1, -1)
        self.user_segment = seg_of_value[inverse]
        self.segment_values = uniq[keep]
        # (S, U) indicator @ (U, A) weights = per-segment popularity
        members = self.user_segment >= 0
        indicator = sp.csr_matrix(
            (
                np.ones(members.sum(), np.float32),
                (self.user_segment[members], np.flatnonzero(members)),
            ),
            shape=(len(self.segment_values), n_users),
        )
        seg = np.asarray((indicator @ weights).todense(), np.float32)  # (S, A)
        seg /= np.maximum(seg.max(axis=1, keepdims=True), 1e-12)
        self.segment_scores = seg

    def segment_of(self, value: str | None) -> int:
        """Index of the segment for a (new) user's field value; -1 means global."""
        hit = np.flatnonzero(self.segment_values == (value or UNKNOWN))
        return int(hit[0]) if len(hit) else -1

    def scores_for_segments(self, segments: np.ndarray) -> np.ndarray:
        """Scores ``(U, A)`` for users given by segment index (-1 = global only)."""
        segments = np.asarray(segments, np.int64)
        out = np.broadcast_to(self.global_scores, (len(segments), len(self.global_scores)))
        out = out * np.float32(self.cfg.global_weight)
        has = segments >= 0
        out[~has] = self.global_scores
        out[has] += self.segment_scores[segments[has]]
        return out.astype(np.float32, copy=False)

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        return self.scores_for_segments(self.user_segment[np.asarray(user_rows)])

    def config(self) -> dict[str, Any]:
        return {
            "field": self.cfg.field,
            "min_users": self.cfg.min_users,
            "half_life_days": self.cfg.half_life_days,
            "global_weight": self.cfg.global_weight,
        }

    def state(self) -> dict[str, np.ndarray]:
        return {
            "segment_values": self.segment_values.astype(str),
            "segment_scores": self.segment_scores,
            "global_scores": self.global_scores,
            "user_segment": self.user_segment,
        }

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.segment_values = np.asarray(state["segment_values"]).astype(object)
        self.segment_scores = np.asarray(state["segment_scores"], np.float32)
        self.global_scores = np.asarray(state["global_scores"], np.float32)
        self.user_segment = np.asarray(state["user_segment"], np.int64)
