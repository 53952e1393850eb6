"""The recommender core: account id -> ranked, filtered, explained artists.

user_id -> user_key (HMAC, data.pii) -> online features -> the pipeline (``serving.pipeline``:
ONNX user vector -> FAISS top (k + excluded) -> drop followed / seen / pad / unk -> [when the
bundle carries a ranker: the top ``ranker.candidates`` re-ordered by it, ``serving.ranker``]
-> explain) -> names and reasons -> backfill from trending (the user's segment first, then
global). Users without an online row, or with no history yet,
get trending for their segment when known, else global trending. A user with a fresh slate
precomputed for the served bundle (``serving.slates``) is answered from it with one lookup.

With streaming on (``tastemaker stream-features``, :mod:`serving.live`), the listener's live
state is read first: a slate older than its last applied event (impressions aside) is not
used, and the real-time path scores the batch row with the streamed fields over it
(:func:`data.features.stream.live_row`), so a just-streamed or just-followed artist is
excluded at once. Real-time rows are scored in micro-batches (:mod:`serving.batcher`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from core.constants import UNK_INDEX
from data.features.candidates import segment_keys
from data.features.online_store import OnlineStore
from data.features.stream import live_row
from data.pii import pseudonymise
from serving.batcher import MicroBatcher
from serving.live import LiveRows
from serving.metrics import STORE_ERRORS
from serving.model import ServingModel
from serving.pipeline import Picks, exclusions, score_rows
from serving.reload import ModelHolder
from serving.slates import BundleSlates, Slate, SlateStore
from serving.store import GuardedStore

log = logging.getLogger("tastemaker.serving")


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
    source: Literal["precomputed", "model", "trending"]
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


def reason_for(model: ServingModel, because: int) -> str:
    """The explanation of a pick whose closest history artist has vocab index ``because``
    (``<= UNK_INDEX``: none known)."""
    if because > UNK_INDEX:
        return f"because you listen to {model.name(model.encoder.artist_id(because))}"
    return "picked for your taste profile"


def recommend_from_row(model: ServingModel, row: Mapping[str, Any], k: int) -> RecommendationList:
    """Model recommendations for one online feature row (or trending when it has no history):
    the pipeline (:func:`serving.pipeline.score_rows`) for one row, named, explained and
    backfilled from trending."""
    return answer_from_picks(model, row, k, score_rows(model, [row], k)[0])


def answer_from_picks(
    model: ServingModel, row: Mapping[str, Any], k: int, picks: Picks | None
) -> RecommendationList:
    """A row's pipeline picks (None: no history) named, explained and backfilled from trending."""
    segments = segment_keys(row)
    chosen: list[Recommendation] = []
    if picks is None:  # no history yet
        fill_from_trending(model, chosen, k, segments, exclusions(row), "trending")
        return RecommendationList(tuple(chosen), "trending", model.version)
    tokens, names = model.encoder.artist_tokens, model.names
    for i, s, b in zip(picks.ids, picks.scores, picks.because, strict=True):
        artist = tokens[i]
        chosen.append(
            Recommendation(artist, names.get(artist, artist), s, "model", reason_for(model, b))
        )
    if len(chosen) < k:
        fill_from_trending(model, chosen, k, segments, exclusions(row), "backfill")
    return RecommendationList(tuple(chosen), "model", model.version)


def from_slate(model: ServingModel, slate: Slate, k: int) -> RecommendationList:
    """A precomputed slate (scored for this bundle) as the first ``k`` recommendations."""
    enc = model.encoder
    chosen = []
    for i, s, b in zip(slate.ids[:k], slate.scores[:k], slate.because[:k], strict=True):
        artist = enc.artist_id(i)
        chosen.append(Recommendation(artist, model.name(artist), s, "model", reason_for(model, b)))
    if len(chosen) < k:
        fill_from_trending(model, chosen, k, [], set(), "backfill")
    return RecommendationList(tuple(chosen), "precomputed", model.version)


def trending_list(model: ServingModel, k: int, country: str | None) -> RecommendationList:
    chosen: list[Recommendation] = []
    segments = segment_keys({"country": country}) if country else []
    fill_from_trending(model, chosen, k, segments, set(), "trending")
    return RecommendationList(tuple(chosen), "trending", model.version)


class Recommender:
    """Serves recommendations for account ids from the holder's current bundle."""

    def __init__(
        self,
        holder: ModelHolder,
        store: GuardedStore[dict[str, Any]] | OnlineStore,
        key: bytes,
        slates: SlateStore | BundleSlates | None = None,
        slate_max_age_s: float = 36 * 3600.0,
        batcher: MicroBatcher | None = None,
        live: LiveRows | None = None,
    ) -> None:
        self.batcher = batcher  # None: each real-time request is scored alone
        self.live = live  # None: no streaming, the batch rows as they are
        self.holder = holder
        self.store = store if isinstance(store, GuardedStore) else GuardedStore(store, 50.0, 1.0)
        self.slates = slates
        self.slate_max_age_ms = slate_max_age_s * 1000.0
        self._key = key

    def user_key(self, user_id: str) -> str:
        return pseudonymise(user_id, self._key)

    def features(self, user_id: str) -> dict[str, Any] | None:
        """The user's online row; None when unknown *or* when the store failed (counted)."""
        return self.store.get(self.user_key(user_id))[0]

    def slate(self, user_key: str, version: str) -> Slate | None:
        """A fresh slate precomputed for ``version``, else None (then: real time)."""
        if self.slates is None:
            return None
        try:
            slate = self.slates.lookup(user_key, version)
        except Exception as exc:
            STORE_ERRORS.labels(kind="slates").inc()
            log.warning("slate lookup failed (%s); computing in real time", type(exc).__name__)
            return None
        if slate is None or slate.version != version:
            return None
        if time.time() * 1000 - slate.computed_ms > self.slate_max_age_ms:
            return None
        return slate

    def recommend(self, user_id: str, k: int, country: str | None = None) -> RecommendationList:
        """Top-``k`` for an account id. ``country`` is a hint used only for unknown users."""
        model, done, row = self._lookup(user_id, k, country)
        if done is not None:
            return done
        return recommend_from_row(model, row, k)

    async def recommend_async(
        self, user_id: str, k: int, country: str | None = None
    ) -> RecommendationList:
        """:meth:`recommend`, with the real-time path scored in a micro-batch (when the service
        has a batcher) together with the other requests waiting now: the same answer."""
        model, done, row = self._lookup(user_id, k, country)
        if done is not None:
            return done
        if self.batcher is None:
            return recommend_from_row(model, row, k)
        return answer_from_picks(model, row, k, await self.batcher.score(model, row, k))

    def _lookup(
        self, user_id: str, k: int, country: str | None
    ) -> tuple[ServingModel, RecommendationList | None, dict[str, Any]]:
        """(bundle, the answer when it needs no model call, else the online row to score)."""
        if k < 1:
            raise ValueError(f"k must be >= 1; got {k}")
        model = self.holder.current  # one reference for the whole request: swaps can't tear it
        user_key = self.user_key(user_id)
        state = self.live.get(user_key) if self.live is not None else None
        slate = self.slate(user_key, model.version)
        # a slate is used only while it is newer than the listener's last applied event (that
        # is not an impression: serving a slate logs impressions, which would retire it at once)
        if slate is not None and (state is None or slate.computed_ms > state.get("ax", 0)):
            return model, from_slate(model, slate, k), {}
        row = self.store.get(user_key)[0]
        if state is not None:  # the batch row with the streamed fields over it
            row = live_row(row, state, int(time.time() * 1000))
        if row is not None:
            return model, None, row
        return model, trending_list(model, k, country), {}

    def recommend_history(
        self, history: Sequence[str], k: int, country: str | None = None
    ) -> RecommendationList:
        """Top-``k`` for a listener known only by a history (most recent first)."""
        model = self.holder.current
        return recommend_from_row(model, history_row(history, country), k)

    async def recommend_history_async(
        self, history: Sequence[str], k: int, country: str | None = None
    ) -> RecommendationList:
        """:meth:`recommend_history` through the micro-batcher (when there is one)."""
        model = self.holder.current
        row = history_row(history, country)
        if self.batcher is None:
            return recommend_from_row(model, row, k)
        return answer_from_picks(model, row, k, await self.batcher.score(model, row, k))


def history_row(history: Sequence[str], country: str | None) -> dict[str, Any]:
    """The online row of a listener known only by a history (most recent first)."""
    row: dict[str, Any] = {"history": list(history), "seen": list(history)}
    if country:
        row["country"] = country
    return row
