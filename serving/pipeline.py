"""The one recommendation pipeline: online feature rows -> scored, explained picks.

    encode + user tower (one ONNX call for all rows) -> FAISS top-(depth + excluded + 2)
    (one search) -> per row: drop pad/unk and followed/seen -> [two-stage bundle: the union
    of that top-N, the co-listening neighbours of the row's artists and its segment's
    trending, ordered by the discovery ranker (``serving.two_stage``) | ranker bundle:
    re-rank the top ``ranker.candidates`` with it] -> keep k -> explain each pick by the
    closest of the EXPLAIN_HISTORY most recent history artists

:func:`score_rows` is the only implementation. The request path
(:func:`serving.recommender.recommend_from_row`) calls it with one row and turns the picks into
named, explained recommendations (with backfill); precompute (:mod:`serving.precompute`)
calls it with a batch of rows and encodes the picks as slates. Rows without a history get no
picks (None): the caller answers them from trending.

The per-row steps stay in plain Python on purpose: exclusions are matched by artist id (a set
lookup per candidate costs less than mapping ~120 excluded ids to vocab indices), and the
explanations reuse the encoded history row, so one row costs what the tuned real-time path cost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.constants import UNK_INDEX
from serving.model import ServingModel

EXPLAIN_HISTORY = 20  # explanations look at this many most recent history artists
# FAISS is asked for depth + |excluded| + PAD_UNK results: pad and unk may be indexed too.
PAD_UNK = 2
NO_REASON = -1  # ``because`` of a pick when no history artist is known to the bundle


@dataclass(frozen=True)
class Picks:
    """One row's model answer, best first."""

    ids: list[int]  # artist vocab indices
    scores: list[float]  # retrieval (or ranker) scores
    because: list[int]  # vocab index of the closest history artist, NO_REASON when none


def exclusions(row: Mapping[str, Any]) -> set[str]:
    """The artist ids a row must never be recommended: followed and seen."""
    return set(row.get("followed") or []) | set(row.get("seen") or [])


def depth_for(model: ServingModel, k: int) -> int:
    """How many retrieval candidates to keep before the cut to ``k``: the two-tower source of
    the two-stage system, or the ranker's pool."""
    if model.two_stage is not None:
        return max(k, model.two_stage.config.two_tower)
    return max(k, model.ranker.candidates) if model.ranker is not None else k


def fetch_depth(model: ServingModel, depths: Sequence[int], excluded: Sequence[set[str]]) -> int:
    """How many results one index search asks for, for rows keeping ``depths`` candidates
    after dropping ``excluded``. Excluded artists are matched by id, not mapped to vocab
    indices first; the largest exclusion bounds the indexed ones among them for every row of
    the batch. Asking an exact index for more results only appends to each row's list, so a
    row's answer does not depend on the batch it is in."""
    fetch = min(model.index.ntotal, max(depths) + max(map(len, excluded)) + PAD_UNK)
    return max(fetch, 1)


def two_stage(
    model: ServingModel,
    row: Mapping[str, Any],
    keep: list[tuple[int, float]],
    user_vec: np.ndarray,
) -> list[tuple[int, float]]:
    """The two-stage system's order: the union of the two-tower's ``keep`` (unexcluded, best
    first), the neighbours of the row's artists and its segment's trending, by the bundle's
    discovery ranker (its scores)."""
    assert model.two_stage is not None
    cands, scores = model.two_stage.rank(row, keep, user_vec, model.artist_vectors)
    order = np.argsort(-scores, kind="stable")
    return [(int(cands.ids[j]), float(scores[j])) for j in order]


def rerank(
    model: ServingModel, row: Mapping[str, Any], keep: list[tuple[int, float]]
) -> list[tuple[int, float]]:
    """Retrieval candidates (vocab index, score), best first, re-ordered by the bundle's ranker
    (with its scores); unchanged when the bundle has none."""
    if model.ranker is None or not keep:
        return keep
    idx = np.array([i for i, _ in keep], dtype=np.int64)  # (n,) vocab indices
    retrieval = np.array([s for _, s in keep], dtype=np.float32)  # (n,)
    order, scores = model.ranker.rerank(row, idx, retrieval)
    return [(keep[j][0], float(scores[j])) for j in order]


def explain(model: ServingModel, history_idx: np.ndarray, picked: np.ndarray) -> list[int]:
    """For each pick, the vocab index of the recent history artist closest to it (NO_REASON
    when none is known). ``history_idx`` (h,): vocab indices, most recent first; pad and
    unknown ones are skipped."""
    kept = history_idx[history_idx > UNK_INDEX]  # (h',)
    if not len(kept):
        return [NO_REASON] * len(picked)
    sims = model.artist_vectors[picked] @ model.artist_vectors[kept].T  # (n, h')
    return kept[sims.argmax(axis=1)].tolist()  # type: ignore[no-any-return]


def peer_picks(model: ServingModel, row: Mapping[str, Any], k: int) -> Picks | None:
    """The bundle's peer slate of the row's listener minus what the row excludes, explained;
    None (trending, as without history) when the peer has no slate for them."""
    assert model.peer is not None
    enc = model.encoder
    found = model.peer.top(row.get("user_key"), exclusions(row), enc.artist_tokens, k)
    if found is None:
        return None
    ids, scores = found
    history = row.get("history") or []
    history_idx = np.array([enc.artist_index(a) for a in history[:EXPLAIN_HISTORY]], np.int64)
    return Picks(ids, scores, explain(model, history_idx, np.array(ids, dtype=np.int64)))


def _recent_history(model: ServingModel, row: Mapping[str, Any], encoded: np.ndarray) -> np.ndarray:
    """Vocab indices of the row's EXPLAIN_HISTORY most recent history artists: the encoder's
    ``history`` row when the tower sees that many, else looked up."""
    enc = model.encoder
    if enc.history_len >= EXPLAIN_HISTORY:
        return encoded[:EXPLAIN_HISTORY]  # (h,)
    history = row.get("history") or []
    return np.array([enc.artist_index(a) for a in history[:EXPLAIN_HISTORY]])


def score_rows(
    model: ServingModel, rows: Sequence[Mapping[str, Any]], k: int | Sequence[int]
) -> list[Picks | None]:
    """Exclude -> search -> re-rank -> explain for every row; None for rows without history.

    ``k``: one list length for every row, or one per row (the micro-batcher of
    :mod:`serving.batcher` mixes requests with different ``k`` in one call)."""
    ks = [k] * len(rows) if isinstance(k, int) else list(k)
    if len(ks) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(ks)} list lengths")
    out: list[Picks | None] = [None] * len(rows)
    live = [j for j, r in enumerate(rows) if r.get("history")]
    if not live:
        return out
    if model.peer is not None:  # a peer's precomputed lists (serving.peer): no user tower
        for j in live:
            out[j] = peer_picks(model, rows[j], ks[j])
        return out
    users = [rows[j] for j in live]
    enc = model.encoder
    feed = enc.encode(users)  # what model.user_vectors runs; its history rows are reused below
    vecs = model.session.run(None, feed)[0]  # (B, d)
    excluded = [exclusions(r) for r in users]
    depths = [depth_for(model, ks[j]) for j in live]
    fetch = fetch_depth(model, depths, excluded)
    ids, scores = model.index.search(vecs, fetch)  # (B, fetch), (B, fetch)
    tokens = enc.artist_tokens
    for b, (j, row, exclude) in enumerate(zip(live, users, excluded, strict=True)):
        depth = depths[b]
        keep = []  # the first ``depth`` unexcluded candidates (the rest is never looked at)
        for i, s in zip(ids[b].tolist(), scores[b].tolist(), strict=True):
            if i > UNK_INDEX and tokens[i] not in exclude:
                keep.append((i, s))
                if len(keep) == depth:
                    break
        if model.two_stage is not None:
            keep = two_stage(model, row, keep, vecs[b])[: ks[j]]
        else:
            keep = rerank(model, row, keep)[: ks[j]]
        if not keep:
            out[j] = Picks([], [], [])
            continue
        picked = [i for i, _ in keep]
        history_idx = _recent_history(model, row, feed["history"][b])
        because = explain(model, history_idx, np.array(picked, dtype=np.int64))
        out[j] = Picks(picked, [s for _, s in keep], because)
    return out
