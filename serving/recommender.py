"""The recommender core: account id -> ranked, filtered, explained artists.

user_id -> user_key (HMAC, data.pii) -> online features -> ONNX user vector -> FAISS top
(k + excluded) -> drop followed / seen / pad / unk -> backfill from trending (the user's
segment first, then global) -> explain. Users without an online row, or with no history yet,
get trending for their segment when known, else global trending.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from core.constants import UNK_INDEX
from data.pii import pseudonymise
from serving.features import OnlineStore
from serving.model import ServingModel
from serving.reload import ModelHolder

log = logging.getLogger("tastemaker.serving")

# Segments whose trending list is a meaningful cold-start answer, most specific first. Gender is
# deliberately absent: "trending among women" is not a reason we want to show anyone.
SEGMENT_PRIORITY = ("country", "age_group", "activity_level", "tenure_bucket")
EXPLAIN_HISTORY = 20  # explanations look at this many most recent history artists
UNKNOWN_VALUES = frozenset({"", "unknown", "<unk>"})


@dataclass(frozen=True)
class Recommendation:
    artist_id: str
    name: str
    score: float | None
    source: Literal["model", "trending", "backfill"]
    reason: str


@dataclass(frozen=True)
class RecommendationList:
    items: tuple[Recommendation, ...]
    source: Literal["model", "trending"]
    bundle_version: str


def trending_reason(segment: str | None) -> str:
    if segment is None:
        return "trending now"
    field, _, value = segment.partition("=")
    if field == "country":
        return f"trending in {value}"
    if field == "age_group":
        return f"trending with listeners aged {value}"
    return f"trending among {value} listeners"


def segment_keys(row: Mapping[str, Any]) -> list[str]:
    """The user's trending segments, most specific first: ``["country=DE", ...]``."""
    keys = []
    for f in SEGMENT_PRIORITY:
        value = row.get(f)
        if isinstance(value, str) and value not in UNKNOWN_VALUES:
            keys.append(f"{f}={value}")
    return keys


def trending_candidates(model: ServingModel, segments: Sequence[str]) -> Iterable[tuple[str, str]]:
    """(artist_id, reason) from the user's segments in order, then global; may repeat ids."""
    for seg in segments:
        reason = trending_reason(seg)
        for artist in model.trending_by_segment.get(seg, ()):
            yield artist, reason
    reason = trending_reason(None)
    for artist in model.trending_global:
        yield artist, reason


def fill_from_trending(
    model: ServingModel,
    chosen: list[Recommendation],
    k: int,
    segments: Sequence[str],
    exclude: set[str],
    source: Literal["trending", "backfill"],
) -> None:
    taken = exclude | {r.artist_id for r in chosen}
    for artist, reason in trending_candidates(model, segments):
        if len(chosen) >= k:
            return
        if artist in taken:
            continue
        taken.add(artist)
        chosen.append(Recommendation(artist, model.name(artist), None, source, reason))


def explain(model: ServingModel, history: Sequence[str], ids: np.ndarray) -> list[str]:
    """ "because you listen to X" with X the recent history artist closest to each pick."""
    kept, hist_vecs = model.vectors_of(list(history[:EXPLAIN_HISTORY]))  # (h, d)
    if not kept:
        return ["picked for your taste profile"] * len(ids)
    sims = model.artist_vectors[ids] @ hist_vecs.T  # (n, h)
    return [f"because you listen to {model.name(kept[j])}" for j in sims.argmax(axis=1)]


def recommend_from_row(model: ServingModel, row: Mapping[str, Any], k: int) -> RecommendationList:
    """Model recommendations for one online feature row (or trending when it has no history)."""
    history = list(row.get("history") or [])
    exclude = set(row.get("followed") or []) | set(row.get("seen") or [])
    segments = segment_keys(row)
    chosen: list[Recommendation] = []
    if not history:
        fill_from_trending(model, chosen, k, segments, exclude, "trending")
        return RecommendationList(tuple(chosen), "trending", model.version)

    user_vec = model.user_vectors([row])  # (1, d)
    enc = model.encoder
    excluded_idx = {i for i in map(enc.artist_index, exclude) if i > UNK_INDEX}
    fetch = min(model.index.ntotal, k + len(excluded_idx) + 2)  # +2: pad and unk may be indexed
    ids, scores = model.index.search(user_vec, max(fetch, 1))  # (1, fetch), (1, fetch)
    keep = [
        (int(i), float(s))
        for i, s in zip(ids[0], scores[0], strict=True)
        if i > UNK_INDEX and i not in excluded_idx
    ]
    keep = keep[:k]
    if keep:
        picked = np.array([i for i, _ in keep], dtype=np.int64)  # (n,)
        reasons = explain(model, history, picked)
        for (i, s), reason in zip(keep, reasons, strict=True):
            artist = enc.artist_id(i)
            chosen.append(Recommendation(artist, model.name(artist), s, "model", reason))
    if len(chosen) < k:
        fill_from_trending(model, chosen, k, segments, exclude, "backfill")
    return RecommendationList(tuple(chosen), "model", model.version)


class Recommender:
    """Serves recommendations for account ids from the holder's current bundle."""

    def __init__(self, holder: ModelHolder, store: OnlineStore, key: bytes) -> None:
        self.holder = holder
        self.store = store
        self._key = key

    def features(self, user_id: str) -> dict[str, Any] | None:
        user_key = pseudonymise(user_id, self._key)
        try:
            return self.store.get(user_key)
        except Exception:  # a broken feature store degrades to trending, it does not 500
            log.exception("online store lookup failed; serving trending instead")
            return None

    def recommend(self, user_id: str, k: int, country: str | None = None) -> RecommendationList:
        """Top-``k`` for an account id. ``country`` is a hint used only for unknown users."""
        if k < 1:
            raise ValueError(f"k must be >= 1; got {k}")
        model = self.holder.current  # one reference for the whole request: swaps can't tear it
        row = self.features(user_id)
        if row is not None:
            return recommend_from_row(model, row, k)
        chosen: list[Recommendation] = []
        segments = segment_keys({"country": country}) if country else []
        fill_from_trending(model, chosen, k, segments, set(), "trending")
        return RecommendationList(tuple(chosen), "trending", model.version)

    def store_reachable(self) -> bool:
        try:
            self.store.get("__healthz__")
        except Exception:
            log.warning("online store unreachable", exc_info=True)
            return False
        return True
