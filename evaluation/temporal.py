"""The temporal protocol on the lake's feature tables.

Train = ``features/examples.parquet`` rows of the splits before the evaluated one
(``train`` for ``valid``; ``train`` + ``valid`` for ``test``, so every model sees the same
past as the eval users' frozen state), summed per (user_key, artist_id) into an
:class:`Interactions` with each user's latest segment values as ``user_meta``. Eval users =
``features/eval.parquet`` rows of the split (``EVAL_USERS``): ``seen`` is excluded and
``targets`` are the positives of the window. Users absent from train are *cold users*; target
artists absent from train are *cold artists*; both are reported separately.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from core.workspace import Workspace
from data.features.example_parts import read_examples
from data.schemas import EVAL_USERS, EXAMPLES, SPLITS, USER_SEGMENT_FIELDS
from models.base import Interactions

UNKNOWN_TARGET = -2  # a target the model cannot rank: counts in |targets|, never a hit


@dataclass(frozen=True)
class TemporalData:
    split: str
    train: Interactions
    users: pa.Table  # EVAL_USERS rows of the split
    rows: np.ndarray  # (N,) train row of each eval user, -1 = cold user
    cold_artist_share: float  # share of target (user, artist) pairs on artists unseen in train

    @property
    def warm(self) -> np.ndarray:
        return self.rows >= 0


def _read(path: Path, columns: Sequence[str]) -> pa.Table:
    if not path.exists():  # a file, or a folder of day files (examples.parquet)
        raise FileNotFoundError(f"{path} not found; run `tastemaker features` first")
    return pq.read_table(path, columns=list(columns))


def examples_interactions(ws: Workspace, splits: Sequence[str]) -> Interactions:
    """The examples of ``splits`` summed per (user_key, artist_id), each user's latest segment
    values as ``user_meta``: what every model of the temporal protocol is fitted on (all three
    splits: what a peer served through slates is fitted on, ``jobs.peer``)."""
    ex_cols = ["split", "user_key", "artist_id", "weight", *USER_SEGMENT_FIELDS]
    missing = [c for c in ex_cols if c not in EXAMPLES.names]
    if missing:  # guards the schema module against a rename
        raise ValueError(f"EXAMPLES schema lacks {missing}")
    if not ws.feature_dir.examples.exists():
        raise FileNotFoundError(
            f"{ws.feature_dir.examples} not found; run `tastemaker features` first"
        )
    ex = read_examples(ws.feature_dir.examples, ex_cols)  # the build's order, either layout
    ex = ex.filter(pc.is_in(ex["split"], pa.array(list(splits))))
    if ex.num_rows == 0:
        raise ValueError(f"examples.parquet has no rows with split in {tuple(splits)}")
    return Interactions.from_pairs(
        ex["user_key"].to_numpy(zero_copy_only=False),
        ex["artist_id"].to_numpy(zero_copy_only=False),
        ex["weight"].to_numpy(zero_copy_only=False),
        user_meta={f: ex[f].to_numpy(zero_copy_only=False) for f in USER_SEGMENT_FIELDS},
    )


def load_temporal(ws: Workspace, split: str = "test") -> TemporalData:
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    train = examples_interactions(ws, SPLITS[: SPLITS.index(split)])
    users = _read(ws.feature_dir.eval_users, EVAL_USERS.names)
    users = users.filter(pc.equal(users["split"], split))
    users = users.filter(pc.greater(pc.list_value_length(users["targets"]), 0))
    if users.num_rows == 0:
        raise ValueError(f"eval.parquet has no {split!r} users with targets")
    rows = pd.Index(train.user_ids).get_indexer(users["user_key"].to_numpy(zero_copy_only=False))
    targets = pc.list_flatten(users["targets"]).to_numpy(zero_copy_only=False)
    known = pd.Index(train.artist_ids).get_indexer(targets) >= 0
    return TemporalData(split, train, users, rows, float(1.0 - known.mean()))


def index_lists(column: pa.ChunkedArray | pa.Array, artist_ids: np.ndarray) -> list[np.ndarray]:
    """Map a list<string> column to artist indices per row; unknown ids -> UNKNOWN_TARGET."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False)
    idx = pd.Index(artist_ids).get_indexer(flat) if len(flat) else np.zeros(0, np.int64)
    idx = np.where(idx < 0, UNKNOWN_TARGET, idx).astype(np.int64)
    lengths = pc.list_value_length(column).fill_null(0).to_numpy()
    return np.split(idx, np.cumsum(lengths)[:-1]) if len(lengths) else []


def lists_to_csr(lists: Sequence[np.ndarray], n_artists: int) -> sp.csr_matrix:
    """Per-row artist indices (unknown ones dropped) as a binary (N, A) CSR for exclusion."""
    lengths = np.array([len(x) for x in lists], dtype=np.int64)
    cols = np.concatenate(lists) if len(lists) else np.zeros(0, np.int64)
    rows = np.repeat(np.arange(len(lists)), lengths)
    keep = cols >= 0
    m = sp.csr_matrix(
        (np.ones(keep.sum(), np.float32), (rows[keep], cols[keep])), shape=(len(lists), n_artists)
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    return m
