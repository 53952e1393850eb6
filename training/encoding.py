"""Feature -> tensor encoding for the user tower, shared by training, inference and export.

Serving ports this exactly (docs/CONTRACTS.md, "User tower inputs"):

- ``history`` (B, L) int64: the user's artists **most recent first**, the first ``L`` of them,
  each mapped through ``vocab.artists`` (unknown -> 1), right-padded with 0.
- ``segments`` (B, S) int64: one value per field in ``segment_fields`` order, mapped through
  that field's vocabulary (unknown or null -> 1).
- ``dense`` (B, D) float32: the ``dense_fields`` values as stored (null/NaN -> 0.0).

Training examples point into a user's oldest-first stream sequence; :func:`gather_history`
walks that sequence backwards from ``hist_end - 1`` so the layout is identical to a
most-recent-first ``history`` list read forwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data.schemas import USER_DENSE_FIELDS
from training.vocab import PAD_INDEX, FeatureVocabs, Vocab


@dataclass(frozen=True)
class UserInputs:
    history: np.ndarray  # (B, L) int64
    segments: np.ndarray  # (B, S) int64
    dense: np.ndarray  # (B, D) float32

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


def order_bag(
    items: np.ndarray,  # (N,) vocab indices of all users' items, concatenated
    pos: np.ndarray,  # (B, M) positions in ``items`` of each row's candidates
    keep: np.ndarray,  # (B, M) which candidates belong in the history
    recency: np.ndarray | None,  # (N,) larger = more recent; None = an unordered bag
    history_len: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """(B, L) kept items most recent first (random order for a bag), 0-padded.

    The bring-your-own-data batches (pairs and multinomial) build histories with this, so
    their item order matches the most-recent-first layout of :func:`gather_history`."""
    key = rng.random(pos.shape) if recency is None else -recency[pos]  # (B, M)
    key = np.where(keep, key, np.inf)
    order = np.argsort(key, axis=1, kind="stable")[:, :history_len]  # (B, L)
    hist = np.take_along_axis(np.where(keep, items[pos], PAD_INDEX), order, axis=1)  # (B, L)
    if hist.shape[1] < history_len:
        hist = np.pad(hist, ((0, 0), (0, history_len - hist.shape[1])))
    return hist.astype(np.int64)


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
) -> UserInputs:
    """Encode a USER_FEATURES / EVAL_USERS table (``history`` most recent first)."""
    if "history" not in table.column_names:
        raise ValueError(f"user table has no 'history' column; found: {table.column_names}")
    return UserInputs(
        history=encode_history_lists(table.column("history"), vocabs.artists, history_len),
        segments=encode_segments(table, vocabs),
        dense=encode_dense(table, dense_fields),
    )
