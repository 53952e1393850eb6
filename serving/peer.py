"""A benchmark peer served through its precomputed slates (issue 22: any model family serves).

When the daily gate finds a peer (ItemKNN, EASE, ALS) ahead of the day's two-tower and
two-stage system, that peer's bundle (``jobs.peer``) carries every listener's top-k as slates
(``index.PEER_SLATES_FILE``, the codec of :mod:`serving.slates`) beside the day's two-tower
files, whose catalogue, trending lists and artist vectors (for the explanations) it reuses.
The pipeline (:func:`serving.pipeline.score_rows`) then answers a row with its listener's
slate, minus what the row now excludes; a listener without one gets trending for their
segment, as a listener without history does. Precompute copies the same lists into the slate
store, so the request path answers them with one lookup.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq

from data.schemas import PEER_SLATES
from index import PEER_SLATES_FILE, Bundle
from serving.slates import Slate


@dataclass(frozen=True)
class ServingPeer:
    model: str  # the peer's model name (evaluation.registry), e.g. "itemknn"
    params: Mapping[str, Any]  # its config fields (tuned values), as the gate scored it
    slates: Mapping[str, bytes] = field(repr=False)  # user_key -> slate blob

    @classmethod
    def from_bundle(cls, bundle: Bundle, n_vocab: int) -> ServingPeer:
        """The bundle's peer slates, each checked: scored for this bundle, ids in its vocab."""
        section = bundle.manifest["peer"]
        table = pq.read_table(bundle.file(PEER_SLATES_FILE), use_threads=False)
        if table.schema.names != PEER_SLATES.names:
            raise ValueError(
                f"{PEER_SLATES_FILE} has columns {table.schema.names}; expected {PEER_SLATES.names}"
            )
        keys = table.column("user_key").to_pylist()
        blobs = table.column("slate").to_pylist()
        for key, blob in zip(keys, blobs, strict=True):
            slate = Slate.from_blob(blob)
            if slate.version != bundle.version:
                raise ValueError(
                    f"{PEER_SLATES_FILE}: the slate of {key} was scored for bundle "
                    f"{slate.version}, not {bundle.version}"
                )
            if slate.ids and (min(slate.ids) < 0 or max(slate.ids) >= n_vocab):
                raise ValueError(
                    f"{PEER_SLATES_FILE}: the slate of {key} names artists outside the "
                    f"vocabulary (size {n_vocab})"
                )
        slates = dict(zip(keys, blobs, strict=True))
        return cls(str(section["model"]), dict(section.get("params") or {}), slates)

    def top(
        self, user_key: str | None, exclude: set[str], tokens: tuple[str, ...], k: int
    ) -> tuple[list[int], list[float]] | None:
        """The listener's first ``k`` slate entries (vocab indices, scores) whose artist is not
        in ``exclude``; None when the peer has no slate for them."""
        blob = self.slates.get(user_key) if user_key else None
        if blob is None:
            return None
        slate = Slate.from_blob(blob)
        ids, scores = [], []
        for i, s in zip(slate.ids, slate.scores, strict=True):
            if tokens[i] not in exclude:
                ids.append(i)
                scores.append(s)
                if len(ids) == k:
                    break
        return ids, scores
