"""Lake features -> batches for the two-tower model.

Training examples (``examples.parquet``, split "train") carry an offset ``hist_end`` into the
user's oldest-first stream sequence (``sequences.parquet``); a batch's history is gathered
from that sequence at batch time with :func:`data.features.encoding.gather_history`, so no
per-example history is ever materialised and none can leak the future. Validation users come
from ``eval.parquet`` split "valid", encoded with :func:`data.features.encoding.encode_users`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytorch_lightning as pl
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from core.constants import N_SPECIAL, UNK_INDEX
from core.workspace import FeatureDir
from data.features.encoding import (
    UserInputs,
    encode_dense,
    encode_history_lists,
    encode_segments,
    encode_users,
    gather_history,
)
from data.features.example_parts import read_examples
from data.features.vocab import FeatureVocabs, Vocab, build_vocabs
from data.schemas import (
    ARTIST_FEATURES,
    EVAL_USERS,
    EXAMPLES,
    USER_DENSE_FIELDS,
    USER_SEGMENT_FIELDS,
    USER_SEQUENCES,
)
from training.pairs import MaskedPairs, rank_world

log = logging.getLogger("tastemaker.training")


@dataclass(frozen=True)
class EvalSet:
    """Users frozen at a cutoff: their inputs, what to exclude, and what they found next."""

    inputs: UserInputs
    seen: list[np.ndarray]  # per user, vocab indices to exclude
    targets: list[np.ndarray]  # per user, vocab indices to find (-1 = unknown to the vocab)
    # optional user-tower inputs by batch key, one row per user (interactions: friends, tags)
    extra: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class ExampleArrays:
    flat: np.ndarray  # (N,) int64 all sequences concatenated, oldest first
    seq_start: np.ndarray  # (E,) where each example's user sequence starts in ``flat``
    hist_end: np.ndarray  # (E,)
    artists: np.ndarray  # (E,) int64 positive artist
    segments: np.ndarray  # (E, S)
    dense: np.ndarray  # (E, D)
    weights: np.ndarray  # (E,)
    follows: np.ndarray | None = None  # (E, F) followed before each example, or None

    def batch(self, rows: np.ndarray, history_len: int) -> dict[str, torch.Tensor]:
        end = self.seq_start[rows] + self.hist_end[rows]  # (B,)
        history = gather_history(self.flat, end - 1, self.hist_end[rows], history_len, step=-1)
        out = {
            "history": torch.from_numpy(history),  # (B, L)
            "segments": torch.from_numpy(self.segments[rows]),  # (B, S)
            "dense": torch.from_numpy(self.dense[rows]),  # (B, D)
            "artist": torch.from_numpy(self.artists[rows]),  # (B,)
            "weight": torch.from_numpy(self.weights[rows]),  # (B,)
        }
        if self.follows is not None:
            out["follows"] = torch.from_numpy(self.follows[rows])  # (B, F)
        return out


def _read(
    path: Path, schema: pa.Schema, reader: Callable[[Path], pa.Table] = pq.read_table
) -> pa.Table:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; run `tastemaker features` first")
    table = reader(path)
    missing = [n for n in schema.names if n not in table.column_names]
    if missing:
        raise ValueError(f"{path} has no columns {missing}; found: {table.column_names}")
    return table


def artist_side_tables(
    artist_features: pa.Table, vocabs: FeatureVocabs, tags_per_artist: int
) -> tuple[np.ndarray, np.ndarray]:
    """(A, T) tag indices and (A,) popularity per artist vocab index (0 for unknowns)."""
    n = len(vocabs.artists)
    tag_table = np.zeros((n, tags_per_artist), dtype=np.int64)
    popularity = np.zeros(n, dtype=np.float32)
    rows = vocabs.artists.encode_arrow(artist_features.column("artist_id"))
    tags = artist_features.column("tags").to_pylist()
    pops = artist_features.column("popularity").to_numpy(zero_copy_only=False)
    for r, t, p in zip(rows, tags, pops, strict=True):
        if r == UNK_INDEX:
            continue
        enc = [i for i in vocabs.tags.encode(t or []) if i != UNK_INDEX][:tags_per_artist]
        tag_table[r, : len(enc)] = enc
        popularity[r] = 0.0 if np.isnan(p) else p
    return tag_table, popularity


POSITIVES = ("first", "all")


def first_positive_mask(examples: pa.Table) -> np.ndarray:
    """(E,) True where the row is its (user_key, artist_id) pair's earliest positive.

    Evaluation asks for *new* artists (targets leave out everything engaged with before the
    cutoff), while most positives are repeat streams of artists already in the history; the
    first engagement is the example that looks like a target. Ties in ``event_ts`` keep file
    order. Pass every split so a pair seen in an earlier window never counts as new later.
    """
    for col in ("user_key", "artist_id", "event_ts"):
        if col not in examples.column_names:
            raise ValueError(f"examples have no {col!r} column; found: {examples.column_names}")
    frame = pd.DataFrame(
        {
            "user_key": examples.column("user_key").to_numpy(zero_copy_only=False),
            "artist_id": examples.column("artist_id").to_numpy(zero_copy_only=False),
            "ts": examples.column("event_ts").cast(pa.int64()).to_numpy(zero_copy_only=False),
        }
    )
    order = np.argsort(frame["ts"].to_numpy(), kind="stable")  # (E,)
    repeat = frame.iloc[order].duplicated(["user_key", "artist_id"], keep="first").to_numpy()
    first = np.empty(len(frame), dtype=bool)
    first[order] = ~repeat
    return first


def select_positives(examples: pa.Table, positives: str, repeat_weight: float) -> pa.Table:
    """``positives="first"``: keep each pair's first engagement only; ``"all"``: keep every
    positive, repeats' ``weight`` multiplied by ``repeat_weight`` (1.0 = unchanged)."""
    if positives not in POSITIVES:
        raise ValueError(f"positives must be one of {POSITIVES}, got {positives!r}")
    if positives == "all" and repeat_weight == 1.0:
        return examples
    first = first_positive_mask(examples)
    if positives == "first":
        return examples.filter(pa.array(first))
    if repeat_weight < 0:
        raise ValueError(f"repeat_weight must be >= 0, got {repeat_weight}")
    w = examples.column("weight").to_numpy(zero_copy_only=False).astype(np.float32)  # (E,)
    w = np.where(first, w, w * np.float32(repeat_weight))
    col = examples.column_names.index("weight")
    return examples.set_column(col, "weight", pa.array(w, pa.float32()))


def log_sampling_probability(artists: np.ndarray, n_artists: int) -> np.ndarray:
    """(A,) log of each artist's share of training examples (unseen artists get the floor)."""
    counts = np.bincount(artists, minlength=n_artists).astype(np.float64)
    q = np.maximum(counts, 1.0) / max(counts.sum(), 1.0)
    return np.log(q).astype(np.float32)


def encode_targets(lists: list[list[str] | None], vocab: Vocab) -> list[np.ndarray]:
    out = []
    for values in lists:
        idx = vocab.encode(values or [])
        out.append(np.where(idx == UNK_INDEX, -1, idx))
    return out


class LakeDataModule(pl.LightningDataModule):
    def __init__(
        self,
        features_dir: Path,
        history_len: int,
        batch_size: int,
        tags_per_artist: int = 8,
        max_train_examples: int | None = None,
        seed: int = 0,
        positives: str = "all",
        repeat_weight: float = 1.0,
        segment_fields: Sequence[str] = USER_SEGMENT_FIELDS,
        train_splits: Sequence[str] = ("train",),
        masked: bool = True,
        history_keep: float = 0.5,
        swap_halves: bool = True,
        follows_len: int = 0,
    ) -> None:
        super().__init__()
        self.features_dir = Path(features_dir)
        self.history_len = history_len
        self.batch_size = batch_size
        self.tags_per_artist = tags_per_artist
        self.max_train_examples = max_train_examples
        self.seed = seed
        self.positives = positives
        self.repeat_weight = repeat_weight
        self.segment_fields = tuple(segment_fields)
        self.train_splits = tuple(train_splits)
        self.masked = masked
        self.history_keep = history_keep
        self.swap_halves = swap_halves
        self.follows_len = follows_len
        self._ready = False

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        d = FeatureDir(self.features_dir)
        examples = _read(d.examples, EXAMPLES, read_examples)
        examples = select_positives(examples, self.positives, self.repeat_weight)
        examples = examples.filter(pc.is_in(examples.column("split"), pa.array(self.train_splits)))
        if examples.num_rows == 0:
            raise ValueError(f"{d.examples} has no rows with split in {self.train_splits}")
        if self.max_train_examples and examples.num_rows > self.max_train_examples:
            keep = np.random.default_rng(self.seed).choice(
                examples.num_rows, self.max_train_examples, replace=False
            )
            examples = examples.take(np.sort(keep))
        sequences = _read(d.sequences, USER_SEQUENCES)
        self.artist_features = _read(
            d.artist_features,
            pa.schema([ARTIST_FEATURES.field(n) for n in ("artist_id", "tags", "popularity")]),
        )
        self.vocabs = build_vocabs(self.artist_features, examples, self.segment_fields)
        self.tag_table, self.popularity = artist_side_tables(
            self.artist_features, self.vocabs, self.tags_per_artist
        )
        self.train = self._examples(examples, sequences)
        self.log_q = log_sampling_probability(self.train.artists, len(self.vocabs.artists))
        if self.masked:
            self.pairs = self._masked_pairs(examples)
            items = self.pairs.items.numpy()
            self.log_q = log_sampling_probability(items, len(self.vocabs.artists))
        eval_users = _read(d.eval_users, EVAL_USERS)
        valid = eval_users.filter(pc.equal(eval_users.column("split"), "valid"))
        self.eval_set = EvalSet(
            inputs=encode_users(valid, self.vocabs, self.history_len, follows_len=self.follows_len),
            seen=encode_targets(valid.column("seen").to_pylist(), self.vocabs.artists),
            targets=encode_targets(valid.column("targets").to_pylist(), self.vocabs.artists),
        )
        log.info(
            "train examples %d, artists %d, tags %d, valid users %d",
            len(self.train.artists),
            len(self.vocabs.artists),
            len(self.vocabs.tags),
            valid.num_rows,
        )
        self._ready = True

    def _examples(self, examples: pa.Table, sequences: pa.Table) -> ExampleArrays:
        lists = sequences.column("artists").combine_chunks()
        offsets = lists.offsets.to_numpy().astype(np.int64)
        flat = self.vocabs.artists.encode_arrow(
            lists.values.slice(offsets[0], offsets[-1] - offsets[0])
        )
        seq_row = pc.index_in(examples.column("user_key"), value_set=sequences.column("user_key"))
        if seq_row.null_count:
            raise ValueError(
                f"{seq_row.null_count} training examples have a user_key absent from sequences.parquet"
            )
        seq_row = seq_row.to_numpy(zero_copy_only=False).astype(np.int64)
        hist_end = examples.column("hist_end").to_numpy(zero_copy_only=False).astype(np.int64)
        seq_len = np.diff(offsets)[seq_row]
        if (hist_end > seq_len).any() or (hist_end < 0).any():
            raise ValueError("examples.parquet has hist_end outside its user's sequence length")
        weights = examples.column("weight").to_numpy(zero_copy_only=False).astype(np.float32)
        return ExampleArrays(
            flat=flat,
            seq_start=offsets[:-1][seq_row] - offsets[0],
            hist_end=hist_end,
            artists=self.vocabs.artists.encode_arrow(examples.column("artist_id")),
            segments=encode_segments(examples, self.vocabs),
            dense=encode_dense(examples, USER_DENSE_FIELDS),
            weights=np.nan_to_num(weights, nan=1.0),
            follows=self._follows(examples),
        )

    def _follows(self, examples: pa.Table) -> np.ndarray | None:
        """(E, F) each example's followed artists (strictly before it), or None when off."""
        if self.follows_len <= 0:
            return None
        if "followed" not in examples.column_names:
            raise ValueError(
                "examples.parquet has no 'followed' column; rebuild it with `tastemaker features`"
            )
        meta = FeatureDir(self.features_dir).meta
        kept = (
            json.loads(meta.read_text()).get("config", {}).get("followed_len")
            if meta.exists()
            else None
        )
        if kept is not None and self.follows_len > kept:
            raise ValueError(
                f"follows_len={self.follows_len} reads more follows than the examples keep "
                f"(FeatureConfig.followed_len={kept}); rebuild the features with a larger one"
            )
        col = examples.column("followed")
        return encode_history_lists(col, self.vocabs.artists, self.follows_len)

    def _masked_pairs(self, examples: pa.Table) -> MaskedPairs:
        """Every user's bag of artists in the training window (most recent first), split in
        halves each epoch as for an interactions file; segments and dense features are the
        user's state at their last training event."""
        frame = pd.DataFrame(
            {
                "user": pd.factorize(examples.column("user_key").to_numpy(zero_copy_only=False))[0],
                "artist": self.train.artists,
                "ts": examples.column("event_ts").cast(pa.int64()).to_numpy(zero_copy_only=False),
                "row": np.arange(examples.num_rows),
            }
        )
        last = frame.sort_values(["user", "ts"]).groupby("user")["row"].last().to_numpy()
        pairs = frame.groupby(["user", "artist"], sort=True)["ts"].max().reset_index()
        pairs = pairs[pairs["artist"] != UNK_INDEX]
        n_users = int(frame["user"].max()) + 1
        matrix = sp.csr_matrix(
            (np.ones(len(pairs), np.float32), (pairs["user"], pairs["artist"] - N_SPECIAL)),
            shape=(n_users, len(self.vocabs.artists) - N_SPECIAL),
        )
        matrix.sort_indices()
        # csr of (user, artist) sorted keeps the groupby order, so recency aligns with entries
        return MaskedPairs(
            matrix,
            self.train.segments[last],
            self.history_len,
            self.batch_size,
            self.history_keep,
            self.swap_halves,
            self.seed,
            recency=pairs["ts"].to_numpy().astype(np.float64),
            dense=self.train.dense[last],
            follows=None if self.train.follows is None else self.train.follows[last],
        )

    def train_dataloader(self) -> DataLoader:
        if self.masked:
            return DataLoader(self.pairs, batch_size=None)
        return _row_loader(
            len(self.train.artists),
            self.batch_size,
            self.seed,
            lambda rows: self.train.batch(rows, self.history_len),
        )

    def val_dataloader(self) -> DataLoader:
        return user_loader(self.eval_set.inputs, batch_size=4096)


def _row_loader(n: int, batch_size: int, seed: int, make_batch: Any) -> DataLoader:
    """Shuffled batches of row indices. Under data parallelism (``use_distributed_sampler`` is
    off) every rank draws the same permutation of the epoch and keeps its own ``n // world``
    rows of it, so the ranks' batches are disjoint, equally many and equally sized."""
    indices: Any = range(n)  # a range is a map-style dataset of its indices
    rank, world = rank_world()
    if world > 1:
        per_rank = n // world
        # Lightning calls the sampler's set_epoch: a fresh permutation every epoch
        sampler: DistributedSampler[int] = DistributedSampler(
            indices, world, rank, shuffle=True, seed=seed, drop_last=True
        )
        return DataLoader(
            indices,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=per_rank > batch_size,
            collate_fn=lambda rows: make_batch(np.asarray(rows)),
        )
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        indices,
        batch_size=batch_size,
        shuffle=True,
        drop_last=n > batch_size,
        generator=generator,
        collate_fn=lambda rows: make_batch(np.asarray(rows)),
    )


def user_loader(
    inputs: UserInputs, batch_size: int, extra: dict[str, np.ndarray] | None = None
) -> DataLoader:
    """Batches of encoded users in row order (for validation and scoring); ``extra``: more
    per-user arrays, each added to the batch under its key."""

    def collate(rows: list[int]) -> dict[str, torch.Tensor]:
        r = np.asarray(rows)
        out = {
            "history": torch.from_numpy(inputs.history[r]),
            "segments": torch.from_numpy(inputs.segments[r]),
            "dense": torch.from_numpy(inputs.dense[r]),
        }
        if inputs.follows is not None:
            out["follows"] = torch.from_numpy(inputs.follows[r])
        for key, values in (extra or {}).items():
            out[key] = torch.from_numpy(values[r])
        return out

    indices: Any = range(len(inputs))  # a range is a map-style dataset of its indices
    return DataLoader(indices, batch_size=batch_size, shuffle=False, collate_fn=collate)
