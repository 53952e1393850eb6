"""Feature -> tensor encoding for the user tower, shared by training, inference and export.

Two encoders of one rule (docs/CONTRACTS.md, "User tower inputs"): :func:`encode_users` for
Arrow tables (training, evaluation, export) and :class:`FeatureEncoder` for the dict rows of
the online store (serving, one request at a time). Neither imports torch; a parity test holds
them together:

- ``history`` (B, L) int64: the user's artists **most recent first**, the first ``L`` of them,
  each mapped through ``vocab.artists`` (unknown -> 1), right-padded with 0.
- ``segments`` (B, S) int64: one value per field in ``segment_fields`` order, mapped through
  that field's vocabulary (unknown or null -> 1).
- ``dense`` (B, D) float32: the ``dense_fields`` values as stored (null/NaN -> 0.0).
- ``follows`` (B, F) int64, only for a model with ``follows_len`` F > 0: the ``followed``
  artists (most recent follow first), laid out as ``history``.

Training examples point into a user's oldest-first stream sequence; :func:`gather_history`
walks that sequence backwards from ``hist_end - 1`` so the layout is identical to a
most-recent-first ``history`` list read forwards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.constants import PAD, PAD_INDEX, UNK, UNK_INDEX
from data.features.vocab import FeatureVocabs, Vocab
from data.schemas import USER_DENSE_FIELDS


@dataclass(frozen=True)
class UserInputs:
    history: np.ndarray  # (B, L) int64
    segments: np.ndarray  # (B, S) int64
    dense: np.ndarray  # (B, D) float32
    follows: np.ndarray | None = None  # (B, F) int64, only with ``follows_len`` > 0

    def __len__(self) -> int:
        return len(self.history)


def gather_history(
    flat: np.ndarray,  # (N,) int64 vocab indices of all users' lists, concatenated
    anchor: np.ndarray,  # (B,) position in ``flat`` of each row's most recent item
    length: np.ndarray,  # (B,) number of items available for each row
    history_len: int,
    step: int,  # +1 if lists are most-recent-first, -1 if oldest-first
) -> np.ndarray:
    """(B, L) most-recent-first, left-aligned, 0-padded history matrix."""
    j = np.arange(history_len)  # (L,)
    valid = j[None, :] < np.minimum(length, history_len)[:, None]  # (B, L)
    pos = anchor[:, None] + step * j[None, :]  # (B, L)
    pos = np.where(valid, pos, 0)
    out = flat[pos] if len(flat) else np.zeros(pos.shape, dtype=np.int64)  # (B, L)
    return np.where(valid, out, PAD_INDEX).astype(np.int64)


def encode_history_lists(
    lists: pa.ChunkedArray | pa.Array, vocab: Vocab, history_len: int
) -> np.ndarray:
    """Encode a list<string> column of most-recent-first artist ids to (B, L)."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    lists = pc.fill_null(lists, pa.scalar([], lists.type))
    offsets = lists.offsets.to_numpy().astype(np.int64)  # (B + 1,)
    flat = vocab.encode_arrow(lists.values.slice(offsets[0], offsets[-1] - offsets[0]))
    return gather_history(flat, offsets[:-1] - offsets[0], np.diff(offsets), history_len, step=1)


def encode_segments(table: pa.Table, vocabs: FeatureVocabs) -> np.ndarray:
    cols = []
    for f, vocab in vocabs.segments.items():
        if f not in table.column_names:
            raise ValueError(f"user table has no segment column {f!r}; found: {table.column_names}")
        cols.append(vocab.encode_arrow(table.column(f)))
    if not cols:
        return np.zeros((table.num_rows, 0), dtype=np.int64)
    return np.stack(cols, axis=1)  # (B, S)


def encode_dense(table: pa.Table, dense_fields: Sequence[str] = USER_DENSE_FIELDS) -> np.ndarray:
    cols = []
    for f in dense_fields:
        if f not in table.column_names:
            raise ValueError(f"user table has no dense column {f!r}; found: {table.column_names}")
        col = table.column(f).to_numpy(zero_copy_only=False).astype(np.float32)
        cols.append(np.nan_to_num(col, nan=0.0, posinf=0.0, neginf=0.0))
    if not cols:
        return np.zeros((table.num_rows, 0), dtype=np.float32)
    return np.stack(cols, axis=1)  # (B, D)


def encode_users(
    table: pa.Table,
    vocabs: FeatureVocabs,
    history_len: int,
    dense_fields: Sequence[str] = USER_DENSE_FIELDS,
    follows_len: int = 0,
) -> UserInputs:
    """Encode a USER_FEATURES / EVAL_USERS table (``history`` most recent first; with
    ``follows_len`` > 0 also ``followed``)."""
    if "history" not in table.column_names:
        raise ValueError(f"user table has no 'history' column; found: {table.column_names}")
    follows = None
    if follows_len > 0:
        if "followed" not in table.column_names:
            raise ValueError(f"user table has no 'followed' column; found: {table.column_names}")
        follows = encode_history_lists(table.column("followed"), vocabs.artists, follows_len)
    return UserInputs(
        history=encode_history_lists(table.column("history"), vocabs.artists, history_len),
        segments=encode_segments(table, vocabs),
        dense=encode_dense(table, dense_fields),
        follows=follows,
    )


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
    follows_len: int = 0  # > 0: also a ``follows`` input (the model's ``follows_len``)
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
            follows_len=int(model.get("follows_len", 0)),
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
        """ONNX feed for ``rows``: history (B, L) int64, segments (B, S), dense (B, D); and
        follows (B, F) int64 when ``follows_len`` > 0."""
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
        feed: dict[str, np.ndarray] = {"history": history, "segments": segments, "dense": dense}
        if self.follows_len > 0:
            follows = np.zeros((b, self.follows_len), dtype=np.int64)  # (B, F)
            for i, row in enumerate(rows):
                recent = (row.get("followed") or [])[: self.follows_len]
                follows[i, : len(recent)] = [get_artist(a, UNK_INDEX) for a in recent]
            feed["follows"] = follows
        return feed
