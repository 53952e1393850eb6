"""Candidates from several sources, and the features the two-stage ranker reads of them.

The first stage of the two-stage system (Covington et al., "Deep Neural Networks for YouTube
Recommendations", 2016: several candidate generators, one ranker) unions, for one listener,

* ``two_tower`` — the two-tower's top-N unseen artists (its cosine score);
* ``neighbours`` — item-to-item co-listening neighbours of the artists the listener has
  (ItemKNN, Sarwar et al. 2001: score(j) = sum over the listener's artists i of cos(i, j),
  shrunk, each artist keeping its top-M neighbours: :class:`NeighbourTable`);
* ``trending`` — the trending list of the listener's most specific known segment, then the
  global one (score 1 / rank).

Every candidate carries the sources that proposed it and each source's score and 1-based
rank (:class:`Candidates`). One implementation for every caller: training builds its examples
with it (``training.two_stage``), evaluation scores the test week with it, serving calls it
per request and precompute per batch (``serving.pipeline``). Ids are whatever integer space
the caller uses (vocab indices when serving, catalogue columns offline); this module does no
I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from data.features.ranker import (
    ACTIVITY_CODES,
    RANKER_FEATURES,
    SERVING_POSITION,
    RankerContext,
    candidate_features,
    check_names,
)

SOURCES: tuple[str, ...] = ("two_tower", "neighbours", "trending")
TWO_TOWER, NEIGHBOURS, TRENDING = range(len(SOURCES))
# Segments whose trending list is a meaningful candidate source (and cold-start answer), most
# specific first. Gender is deliberately absent: "trending among women" is no reason to show
# anyone anything. serving.recommender answers cold starts with the same order.
SEGMENT_PRIORITY = ("country", "age_group", "activity_level", "tenure_bucket")
UNKNOWN_VALUES = frozenset({"", "unknown", "<unk>"})

# The two-stage ranker's feature spec: the ranking stage's artist / user / taste features
# (``RANKER_FEATURES`` without the slate position, which a discovery label does not have),
# then one block per source. A bundle records the names; serving refuses others.
_BASE = tuple(n for n in RANKER_FEATURES if n != "position")
_BASE_COLS = np.array([RANKER_FEATURES.index(n) for n in _BASE])
TWO_STAGE_FEATURES: tuple[str, ...] = (
    *_BASE,  # retrieval_score / retrieval_log_rank: the two-tower's, for every candidate
    "knn_score",  # item-to-item score (sum of the listener's artists' similarities)
    "knn_share",  # knn_score / the listener's best knn_score (0 when none)
    "knn_log_rank",  # log1p(rank in the neighbours source), log1p(depth + 1) when absent
    "trending_log_rank",  # log1p(rank in the trending source), log1p(depth + 1) when absent
    "in_two_tower",
    "in_neighbours",
    "in_trending",
    "n_sources",
)

_FEATURE = {name: i for i, name in enumerate(TWO_STAGE_FEATURES)}
_HEAVY_ACTIVITY = ACTIVITY_CODES["high"]  # the user_activity feature of a heavy listener


@dataclass(frozen=True)
class CandidateConfig:
    """How deep each source is read (the union is at most their sum)."""

    two_tower: int = 200
    neighbours: int = 200
    trending: int = 50

    def __post_init__(self) -> None:
        for name in ("two_tower", "neighbours", "trending"):
            if getattr(self, name) < 0:
                raise ValueError(f"CandidateConfig.{name} must be >= 0; got {getattr(self, name)}")

    def depths(self) -> tuple[int, int, int]:
        return self.two_tower, self.neighbours, self.trending


@dataclass(frozen=True)
class RetrievalBlend:
    """The two-stage order: the ranker's log-odds minus ``weight`` × log1p(two-tower rank)
    (``retrieval_log_rank``: log1p(depth + 1) for a candidate the two-tower did not propose),
    with ``heavy_weight`` instead for the listeners of activity level high.

    Why (``benchmarks/bench_two_stage.py``, two development folds of the demo world, neither
    holding the test week): ordered by the ranker alone, the heavy listeners of one fold lost
    Recall@20 against the two-tower's own order (0.206 vs 0.232, 69 listeners) and the first
    slates' expected clicks under the world's click rule fell (−0.18 per 100); a long history
    makes the two-tower's own top strong, and the ranker, fitted mostly on mid-activity
    listeners, leans on the neighbour and trending sources. Both weights 0 is the ranker's
    order. The scores must be probabilities (``binary:logistic``)."""

    weight: float = 0.5
    heavy_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("weight", "heavy_weight"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"RetrievalBlend.{name} must be >= 0; got {getattr(self, name)}")

    @property
    def off(self) -> bool:
        return self.weight == 0.0 and self.heavy_weight == 0.0

    @classmethod
    def recorded(cls, fields: Mapping[str, Any] | None) -> RetrievalBlend:
        """The blend a record or bundle manifest names; none named (a two-stage system fitted
        before the blend existed): the ranker's own order, as it was measured."""
        if not fields:
            return cls(weight=0.0, heavy_weight=0.0)
        return cls(**{k: float(v) for k, v in fields.items()})


def blend_scores(prob: np.ndarray, x: np.ndarray, blend: RetrievalBlend) -> np.ndarray:
    """(n,) the scores the two-stage system orders by, higher first: ``prob`` (n,) the ranker's
    probabilities of the candidates whose features (in :data:`TWO_STAGE_FEATURES` order) are
    ``x`` (n, F), blended with their two-tower rank by ``blend``. Training's evaluation, the
    gate and serving all order with this."""
    if blend.off or not len(prob):
        return np.asarray(prob, np.float32)
    p = np.clip(np.asarray(prob, np.float64), 1e-7, 1.0 - 1e-7)
    heavy = x[:, _FEATURE["user_activity"]] >= _HEAVY_ACTIVITY
    weight = np.where(heavy, blend.heavy_weight, blend.weight)
    out = np.log(p / (1.0 - p)) - weight * x[:, _FEATURE["retrieval_log_rank"]]
    return out.astype(np.float32)


@dataclass(frozen=True)
class Candidates:
    """One listener's candidates in union order (two-tower's first, then the neighbours' new
    ones, then trending's), each with its sources and their scores / ranks."""

    ids: np.ndarray  # (n,) int64 artist ids (the caller's integer space)
    sources: np.ndarray  # (n, S) bool: which sources proposed each candidate
    scores: np.ndarray  # (n, S) float32 each source's score, NaN where it did not propose it
    ranks: np.ndarray  # (n, S) int64 1-based rank in each source, 0 where it did not

    def __len__(self) -> int:
        return len(self.ids)

    def tags(self, i: int) -> list[str]:
        """Names of the sources of candidate ``i``."""
        return [SOURCES[s] for s in np.flatnonzero(self.sources[i])]


def union_candidates(lists: Sequence[tuple[np.ndarray, np.ndarray]]) -> Candidates:
    """The union of per-source lists ``(ids best first, scores)``, one per :data:`SOURCES`, in
    that order. A list must not repeat an id; what to exclude is the caller's (done before)."""
    if len(lists) != len(SOURCES):
        raise ValueError(f"expected {len(SOURCES)} source lists ({SOURCES}); got {len(lists)}")
    all_ids = [np.asarray(ids, np.int64) for ids, _ in lists]
    for name, ids in zip(SOURCES, all_ids, strict=True):
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"candidate source {name!r} repeats an id")
    cat = np.concatenate(all_ids) if all_ids else np.zeros(0, np.int64)
    uniq, first = np.unique(cat, return_index=True)
    order = uniq[np.argsort(first, kind="stable")]  # union, in order of first appearance
    n, s = len(order), len(SOURCES)
    sources = np.zeros((n, s), bool)
    scores = np.full((n, s), np.nan, np.float32)
    ranks = np.zeros((n, s), np.int64)
    pos = {int(a): i for i, a in enumerate(order)}
    for j, (ids, (_, sc)) in enumerate(zip(all_ids, lists, strict=True)):
        if not len(ids):
            continue
        rows = np.fromiter((pos[int(a)] for a in ids), np.int64, len(ids))
        sources[rows, j] = True
        scores[rows, j] = np.asarray(sc, np.float32)
        ranks[rows, j] = np.arange(1, len(ids) + 1)
    return Candidates(order, sources, scores, ranks)


class NeighbourTable:
    """Each artist's top-M co-listening neighbours with their (shrunk cosine) similarity, as a
    ``(A, A)`` CSR in the caller's id space: row i holds i's neighbours."""

    def __init__(self, similarity: sp.csr_matrix) -> None:
        if similarity.shape[0] != similarity.shape[1]:
            raise ValueError(f"neighbour similarity must be square; got {similarity.shape}")
        self.similarity = similarity.tocsr().astype(np.float32)

    @property
    def n_artists(self) -> int:
        return int(self.similarity.shape[0])

    def scores(self, have: np.ndarray) -> np.ndarray:
        """(A,) sum of the similarities of the artists ``have`` (ids, unknown = negative,
        dropped) to every artist: the ItemKNN score restricted to kept neighbours."""
        have = np.unique(have[(have >= 0) & (have < self.n_artists)])
        if not len(have):
            return np.zeros(self.n_artists, np.float32)
        return np.asarray(self.similarity[have].sum(axis=0), np.float32).ravel()

    def scores_many(self, have: Sequence[np.ndarray]) -> np.ndarray:
        """(U, A) :meth:`scores` of many listeners with one sparse product."""
        n = self.n_artists
        rows, cols = [], []
        for u, h in enumerate(have):
            h = np.unique(h[(h >= 0) & (h < n)])
            rows.append(np.full(len(h), u))
            cols.append(h)
        r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        x = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(have), n))
        return np.asarray((x @ self.similarity).todense(), np.float32)

    def to_table(self, artist_ids: Sequence[str]) -> pa.Table:
        """The bundle's ``neighbours.parquet``: artist_id, neighbours (ids), similarity."""
        s = self.similarity
        if len(artist_ids) != self.n_artists:
            raise ValueError(f"{len(artist_ids)} artist ids for {self.n_artists} rows")
        ids = np.asarray(artist_ids, dtype=object)
        nb, sim = [], []
        for i in range(self.n_artists):
            lo, hi = s.indptr[i], s.indptr[i + 1]
            order = np.argsort(-s.data[lo:hi], kind="stable")
            nb.append(ids[s.indices[lo:hi][order]].tolist())
            sim.append(s.data[lo:hi][order].tolist())
        return pa.table(
            {
                "artist_id": pa.array(list(ids), pa.string()),
                "neighbours": pa.array(nb, pa.list_(pa.string())),
                "similarity": pa.array(sim, pa.list_(pa.float32())),
            }
        )

    @classmethod
    def from_table(cls, table: pa.Table, index_of: Mapping[str, int], n: int) -> NeighbourTable:
        """A ``neighbours.parquet`` table mapped into an id space of size ``n`` by
        ``index_of`` (artist id -> id); artists it does not know are dropped."""
        for col in ("artist_id", "neighbours", "similarity"):
            if col not in table.column_names:
                raise ValueError(f"neighbour table lacks {col!r}; found {table.column_names}")
        rows, cols, vals = [], [], []
        for a, nbs, sims in zip(
            table.column("artist_id").to_pylist(),
            table.column("neighbours").to_pylist(),
            table.column("similarity").to_pylist(),
            strict=True,
        ):
            i = index_of.get(a, -1)
            if i < 0 or not nbs:
                continue
            if len(nbs) != len(sims):
                raise ValueError(f"neighbour table row {a!r}: {len(nbs)} ids, {len(sims)} values")
            for b, v in zip(nbs, sims, strict=True):
                j = index_of.get(b, -1)
                if j >= 0:
                    rows.append(i)
                    cols.append(j)
                    vals.append(v)
        m = sp.csr_matrix((np.asarray(vals, np.float32), (rows, cols)), shape=(n, n))
        return cls(m)


def segment_keys(row: Mapping[str, Any]) -> list[str]:
    """The listener's trending segments, most specific first: ``["country=DE", ...]``."""
    keys = []
    for f in SEGMENT_PRIORITY:
        value = row.get(f)
        if isinstance(value, str) and value not in UNKNOWN_VALUES:
            keys.append(f"{f}={value}")
    return keys


def trending_source(
    row: Mapping[str, Any],
    lists: Mapping[str, np.ndarray],
    excluded: np.ndarray,
    depth: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, 1 / rank): the first ``depth`` unexcluded artists of the listener's most specific
    segment list, then the next ones, then ``lists["global"]``. ``lists``: segment key -> ids
    best first (negative ids = unknown, skipped)."""
    out: list[int] = []
    taken = set(excluded.tolist())
    for key in [*segment_keys(row), "global"]:
        for a in lists.get(key, ()):
            if len(out) >= depth:
                break
            a = int(a)
            if a >= 0 and a not in taken:
                taken.add(a)
                out.append(a)
    ids = np.asarray(out, np.int64)
    return ids, 1.0 / np.arange(1, len(ids) + 1, dtype=np.float32)


def top_unexcluded(
    scores: np.ndarray, excluded: np.ndarray, depth: int, positive_only: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) of the ``depth`` best of ``scores`` (A,) outside ``excluded`` (ties: the
    lower id); ``positive_only`` drops scores <= 0 (a neighbour source with nothing to say)."""
    s = scores.astype(np.float32, copy=True)
    s[excluded[(excluded >= 0) & (excluded < len(s))]] = -np.inf
    if positive_only:
        s[s <= 0] = -np.inf
    depth = min(depth, int(np.isfinite(s).sum()))
    if depth <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    part = np.argpartition(-s, depth - 1)[:depth]
    order = part[np.lexsort((part, -s[part]))]
    return order.astype(np.int64), s[order]


def gather(
    two_tower: tuple[np.ndarray, np.ndarray],
    knn_scores: np.ndarray,
    row: Mapping[str, Any],
    trending: Mapping[str, np.ndarray],
    excluded: np.ndarray,
    config: CandidateConfig,
) -> Candidates:
    """The union for one listener: the two-tower's list (already unexcluded, best first), the
    neighbours' best ``config.neighbours`` by ``knn_scores`` (A,) and the trending source."""
    knn = top_unexcluded(knn_scores, excluded, config.neighbours, positive_only=True)
    trend = trending_source(row, trending, excluded, config.trending)
    tt_ids, tt_scores = two_tower
    return union_candidates(
        [(tt_ids[: config.two_tower], tt_scores[: config.two_tower]), knn, trend]
    )


def two_stage_features(
    ctx: RankerContext,
    row: Mapping[str, Any],
    ctx_rows: np.ndarray,
    cands: Candidates,
    two_tower_scores: np.ndarray,
    knn_scores: np.ndarray,
    config: CandidateConfig,
    profile: np.ndarray | None = None,
) -> np.ndarray:
    """``(n, len(TWO_STAGE_FEATURES))`` float32 of one listener's candidates.

    ``ctx_rows``: each candidate's row in ``ctx`` (-1 unknown); ``two_tower_scores`` and
    ``knn_scores`` (n,): each candidate's two-tower cosine and item-to-item score, whichever
    source proposed it (its rank is the source's, capped at the source's depth + 1)."""
    n = len(cands)
    tt_rank = np.where(cands.sources[:, TWO_TOWER], cands.ranks[:, TWO_TOWER], config.two_tower + 1)
    base = candidate_features(
        ctx, row, ctx_rows, two_tower_scores, tt_rank, SERVING_POSITION, profile
    )[:, _BASE_COLS]
    knn_rank = np.where(
        cands.sources[:, NEIGHBOURS], cands.ranks[:, NEIGHBOURS], config.neighbours + 1
    )
    trend_rank = np.where(cands.sources[:, TRENDING], cands.ranks[:, TRENDING], config.trending + 1)
    best = float(np.max(knn_scores, initial=0.0))
    extra = np.empty((n, 8), np.float32)
    extra[:, 0] = knn_scores
    extra[:, 1] = knn_scores / best if best > 0 else 0.0
    extra[:, 2] = np.log1p(knn_rank)
    extra[:, 3] = np.log1p(trend_rank)
    extra[:, 4:7] = cands.sources
    extra[:, 7] = cands.sources.sum(axis=1)
    return np.hstack([base, extra])


def check_two_stage_spec(names: Sequence[str], where: str) -> None:
    """Refuse a two-stage ranker trained on other features than :data:`TWO_STAGE_FEATURES`."""
    check_names(
        names,
        TWO_STAGE_FEATURES,
        where,
        "two-stage ranker",
        "TWO_STAGE_FEATURES",
        "tastemaker train two-stage",
    )
