"""Online feature rows -> user-tower inputs, exactly as training encodes them.

Mirrors docs/CONTRACTS.md "User tower inputs" (``training/encoding.py`` on the training side;
a parity test in ``tests/serving`` holds the two together):

- ``history`` (B, L) int64: artists most recent first, the first ``L``, unknown -> 1,
  right-padded with 0;
- ``segments`` (B, S) int64: one value per ``segment_fields`` entry, unknown or null -> 1;
- ``dense`` (B, D) float32: values as stored, null / NaN / inf -> 0.0.

Serving never imports ``training`` (it would drag torch along), hence the port.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

PAD_INDEX, UNK_INDEX = 0, 1
PAD, UNK = "<pad>", "<unk>"


class OnlineStore(Protocol):
    """What serving needs from ``data.online_store`` (docs/CONTRACTS.md "Online store")."""

    def get(self, user_key: str) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


def _lookup(tokens: Sequence[str], name: str) -> dict[str, int]:
    if tuple(tokens[:2]) != (PAD, UNK):
        raise ValueError(
            f"vocab.json {name} must start with {PAD!r}, {UNK!r}; got {list(tokens[:2])}"
        )
    return {t: i for i, t in enumerate(tokens)}


@dataclass(frozen=True)
class FeatureEncoder:
    """Encodes USER_FEATURES rows (dicts) to the ONNX user tower's three inputs."""

    artist_tokens: tuple[str, ...]
    segment_vocabs: Mapping[str, tuple[str, ...]]  # field -> tokens, in the model's order
    dense_fields: tuple[str, ...]
    history_len: int
    _artists: dict[str, int] = field(init=False, repr=False, compare=False)
    _segments: dict[str, dict[str, int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.history_len < 1:
            raise ValueError(f"history_len must be >= 1; got {self.history_len}")
        object.__setattr__(self, "_artists", _lookup(self.artist_tokens, "artists"))
        object.__setattr__(
            self,
            "_segments",
            {f: _lookup(v, f"segments.{f}") for f, v in self.segment_vocabs.items()},
        )

    @classmethod
    def from_bundle(cls, vocab: Mapping[str, Any], model: Mapping[str, Any]) -> FeatureEncoder:
        """Build from ``vocab.json`` and the manifest's ``model`` section."""
        for key in ("history_len", "segment_fields", "dense_fields"):
            if key not in model:
                raise ValueError(
                    f"bundle manifest 'model' has no {key!r}; found: {', '.join(model)}"
                )
        if "artists" not in vocab or "segments" not in vocab:
            raise ValueError(
                f"vocab.json needs 'artists' and 'segments'; found: {', '.join(vocab)}"
            )
        fields = tuple(model["segment_fields"])
        missing = [f for f in fields if f not in vocab["segments"]]
        if missing:
            raise ValueError(f"vocab.json has no segment vocabularies for {missing}")
        return cls(
            artist_tokens=tuple(vocab["artists"]),
            segment_vocabs={f: tuple(vocab["segments"][f]) for f in fields},
            dense_fields=tuple(model["dense_fields"]),
            history_len=int(model["history_len"]),
        )

    @property
    def segment_fields(self) -> tuple[str, ...]:
        return tuple(self.segment_vocabs)

    def artist_index(self, artist_id: str) -> int:
        return self._artists.get(artist_id, UNK_INDEX)

    def artist_id(self, index: int) -> str:
        return self.artist_tokens[index]

    def is_known(self, artist_id: str) -> bool:
        return self._artists.get(artist_id, UNK_INDEX) > UNK_INDEX

    def encode(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """ONNX feed for ``rows``: history (B, L) int64, segments (B, S), dense (B, D)."""
        b, lh = len(rows), self.history_len
        history = np.zeros((b, lh), dtype=np.int64)  # (B, L)
        segments = np.full((b, len(self._segments)), UNK_INDEX, dtype=np.int64)  # (B, S)
        dense = np.zeros((b, len(self.dense_fields)), dtype=np.float32)  # (B, D)
        get_artist = self._artists.get
        for i, row in enumerate(rows):
            recent = (row.get("history") or [])[:lh]
            history[i, : len(recent)] = [get_artist(a, UNK_INDEX) for a in recent]
            for j, (f, lookup) in enumerate(self._segments.items()):
                value = row.get(f)
                if value is not None:
                    segments[i, j] = lookup.get(value, UNK_INDEX)
            for j, f in enumerate(self.dense_fields):
                value = row.get(f)
                if value is not None and math.isfinite(value):
                    dense[i, j] = value
        return {"history": history, "segments": segments, "dense": dense}
