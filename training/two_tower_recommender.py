"""The two-tower behind the ``models.base.Recommender`` contract, fitted on an interactions
matrix (bring-your-own-data) with the same config, module and run-dir format as the lake job.

A user is the bag of artists they have in the training matrix; training batches come from
:class:`training.pairs.MaskedPairs` (half of each bag as history, the rest as positives, fresh
each epoch); the loss and optimisation are :class:`training.module.TwoTowerModule`'s. Artist
tags (``artist_tags``, e.g. from ``--artist-meta``) feed the artist tower. Optional user-tower
inputs (``TwoTowerConfig.friends_len`` / ``user_tags_len``, from ``friends`` / ``user_tags``
tables): the friends' training artists and the user's own tags on their training artists,
built by :mod:`training.user_side` from the training matrix only.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytorch_lightning as pl
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader

from core.constants import N_SPECIAL, PAD, UNK
from data.features.encoding import UserInputs
from data.features.vocab import FeatureVocabs, Vocab
from models.base import Interactions, ModelFitError
from models.topk import top_k
from models.topk_torch import partition_torch
from models.two_tower import TwoTower
from training.datamodule import EvalSet, log_sampling_probability, user_loader
from training.module import TwoTowerModule, make_trainer, release_process_group
from training.pairs import MaskedPairs, bag_histories
from training.train_config import TrainConfig
from training.user_side import (
    UserSide,
    build_user_side,
    tag_vocab,
    training_tag_assignments,
)

log = logging.getLogger("tastemaker.training")


def artist_tag_table(
    artist_vocab: Vocab,
    tag_vocab: Vocab,
    tags_of: Mapping[str, Sequence[str]],
    tags_per_artist: int,
) -> np.ndarray:
    """(A, T) tag indices per artist vocab index (0 = pad; unknown tags dropped)."""
    table = np.zeros((len(artist_vocab), tags_per_artist), dtype=np.int64)
    for i, a in enumerate(artist_vocab.tokens[N_SPECIAL:], start=N_SPECIAL):
        enc = [t for t in tag_vocab.encode(list(tags_of.get(a, ()))) if t >= N_SPECIAL]
        table[i, : min(len(enc), tags_per_artist)] = enc[:tags_per_artist]
    return table


def _bag_order(matrix: sp.csr_matrix, timestamps: sp.csr_matrix | None) -> np.ndarray:
    """(N,) sort key per stored entry: most recent first with timestamps, else most played."""
    if timestamps is not None:
        return -timestamps.tocsr().data.astype(np.float64)
    return -matrix.data.astype(np.float64)


class TwoTowerRecommender:
    name = "two-tower"

    def __init__(
        self,
        config: TrainConfig | None = None,
        artist_tags: Mapping[str, Sequence[str]] | None = None,
        friends: pa.Table | None = None,  # FRIENDS rows; read with model.friends_len > 0
        user_tags: pa.Table | None = None,  # USER_TAGS rows; read with model.user_tags_len > 0
    ) -> None:
        self.config = config or TrainConfig()
        self.artist_tags = artist_tags
        self.friends = friends
        self.user_tags = user_tags
        self._side_inputs: dict[str, np.ndarray] = {}  # per user row, for recommending
        self.model: TwoTower | None = None
        self.vocabs: FeatureVocabs | None = None
        self.val_history: list[dict[str, float]] = []
        self.fit_seconds = 0.0
        self.fit_cpu_seconds = 0.0

    def _vocabs(self, inter: Interactions) -> FeatureVocabs:
        tags_of = self.artist_tags or {}
        if self.config.model.user_tags_len > 0:  # the user's own tags share the tag space
            flat = [t for ts in tags_of.values() for t in ts]
            tags = tag_vocab(flat, self._assignments(_sorted(inter.matrix), inter))
        else:
            tags = Vocab.build((t for ts in tags_of.values() for t in ts), min_count=2)
        artists = Vocab((PAD, UNK, *map(str, inter.artist_ids)))
        return FeatureVocabs(artists=artists, tags=tags, segments={})

    def _assignments(self, matrix: sp.csr_matrix, inter: Interactions) -> pd.DataFrame:
        """The user tags on ``matrix``'s entries only (the leak filter)."""
        if self.user_tags is None:
            raise ValueError(
                f"user_tags_len={self.config.model.user_tags_len} needs a user tags table "
                "(tastemaker train --user-tags FILE)"
            )
        return training_tag_assignments(matrix, inter.user_ids, inter.artist_ids, self.user_tags)

    def user_side(self, matrix: sp.csr_matrix, inter: Interactions) -> UserSide | None:
        """Friends' artists / own tags of ``matrix``'s users, from ``matrix`` alone (None when
        both inputs are off)."""
        mcfg = self.config.model
        if mcfg.friends_len <= 0 and mcfg.user_tags_len <= 0:
            return None
        if mcfg.friends_len > 0 and self.friends is None:
            raise ValueError(
                f"friends_len={mcfg.friends_len} needs a friends table "
                "(tastemaker train --friends FILE)"
            )
        if self.vocabs is None:
            raise ModelFitError("user_side needs the vocabularies: build the model first")
        matrix = _sorted(matrix)
        assignments = self._assignments(matrix, inter) if mcfg.user_tags_len > 0 else None
        return build_user_side(
            matrix,
            inter.user_ids,
            self.friends,
            mcfg.friends_len,
            assignments,
            self.vocabs.tags,
            mcfg.user_tags_len,
        )

    def build(self, inter: Interactions) -> TwoTower:
        """The untrained model for ``inter``'s catalogue (vocab sizes filled in)."""
        if self.config.model.follows_len > 0:
            raise ValueError(
                "follows_len > 0 needs the lake (followed artists); an interactions "
                "file has none: set follows_len=0"
            )
        if self.config.model.members > 1 and (
            self.config.model.friends_len > 0 or self.config.model.user_tags_len > 0
        ):
            raise ValueError("members > 1 cannot read friends / user tags")
        self.vocabs = vocabs = self._vocabs(inter)
        mcfg = dataclasses.replace(
            self.config.model,
            n_artists=len(vocabs.artists),
            n_tags=len(vocabs.tags),
            segment_cardinalities=(),
            n_dense=0,
        )
        tag_table = artist_tag_table(
            vocabs.artists, vocabs.tags, self.artist_tags or {}, mcfg.tags_per_artist
        )
        counts = np.zeros(len(vocabs.artists), dtype=np.float32)
        counts[N_SPECIAL:] = np.diff(inter.matrix.tocsc().indptr)
        popularity = np.log1p(counts) / max(float(np.log1p(counts).max()), 1e-6)
        return TwoTower(mcfg, torch.from_numpy(tag_table), torch.from_numpy(popularity))

    def _histories(self, matrix: sp.csr_matrix, order: np.ndarray) -> np.ndarray:
        keep = np.ones(matrix.nnz, dtype=bool)
        hist_len = self.config.model.history_len
        items = matrix.indices.astype(np.int64) + N_SPECIAL
        return bag_histories(matrix.indptr.astype(np.int64), items, keep, order, hist_len)

    def fit(
        self, interactions: Interactions, callbacks: list[pl.Callback] | None = None
    ) -> TwoTowerRecommender:
        import time

        cfg = self.config
        matrix = interactions.matrix.tocsr().astype(np.float32)
        matrix.sort_indices()
        if matrix.nnz == 0:
            raise ModelFitError("interaction matrix is empty; nothing to train on")
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        model = self.build(interactions)
        order = _bag_order(matrix, interactions.timestamps)
        train, eval_set = matrix, None
        if cfg.val_fraction > 0:
            train, eval_set = self._validation_split(interactions, cfg.val_fraction)
            order = _bag_order(train, None)
        side = self.user_side(train, interactions)  # from the training part only
        pairs = MaskedPairs(
            train,
            np.zeros((train.shape[0], 0), dtype=np.int64),
            cfg.model.history_len,
            cfg.batch_size,
            cfg.history_keep,
            cfg.swap_halves,
            cfg.seed,
            recency=None if interactions.timestamps is None or cfg.val_fraction else -order,
            side=side,
        )
        log_q = log_sampling_probability(
            train.indices.astype(np.int64) + N_SPECIAL, model.config.n_artists
        )
        module = TwoTowerModule(model, cfg, log_q, eval_set)
        loader = DataLoader(pairs, batch_size=None)
        val_loader = (
            None if eval_set is None else user_loader(eval_set.inputs, 4096, eval_set.extra)
        )
        trainer = make_trainer(cfg, cfg.epochs, callbacks, validate=eval_set is not None)
        started, cpu_started = time.perf_counter(), time.process_time()
        trainer.fit(module, train_dataloaders=loader, val_dataloaders=val_loader)
        release_process_group()
        self.fit_seconds = time.perf_counter() - started
        self.fit_cpu_seconds = time.process_time() - cpu_started  # all threads of the process
        self.val_history = module.val_history
        self.model = model.cpu().eval()
        trained = np.zeros(model.config.n_artists, dtype=bool)
        trained[train.indices + N_SPECIAL] = True
        self.model.zero_untrained_ids(trained)
        self._matrix = matrix
        self._history = self._histories(matrix, _bag_order(matrix, interactions.timestamps))
        self._side_inputs = _side_inputs(self.user_side(matrix, interactions))
        return self

    def _validation_split(
        self, inter: Interactions, fraction: float
    ) -> tuple[sp.csr_matrix, EvalSet]:
        """Hold out ``fraction`` of every user's training artists (seed + 1): settings are
        chosen on these, never on a test split."""
        from evaluation.protocols import random_holdout

        split = random_holdout(inter, fraction, self.config.seed + 1)
        train = split.train.matrix.tocsr()
        train.eliminate_zeros()
        train.sort_indices()
        hist = self._histories(train, _bag_order(train, None))
        users = np.flatnonzero([len(t) for t in split.test])
        inputs = UserInputs(
            hist[users], np.zeros((len(users), 0), np.int64), np.zeros((len(users), 0), np.float32)
        )
        seen = [train.indices[train.indptr[u] : train.indptr[u + 1]] + N_SPECIAL for u in users]
        targets = [split.test[u] + N_SPECIAL for u in users]
        side = _side_inputs(self.user_side(train, inter))  # validation targets never read
        extra = {k: v[users] for k, v in side.items()} or None
        return train, EvalSet(inputs, seen, targets, extra)

    @torch.no_grad()
    def user_vectors(self, user_rows: np.ndarray) -> torch.Tensor:
        if self.model is None:
            raise ModelFitError("TwoTowerRecommender.recommend called before fit")
        rows = np.asarray(user_rows, dtype=np.int64).reshape(-1)
        n_users = self._history.shape[0]
        bad = rows[(rows < 0) | (rows >= n_users)]
        if len(bad):
            raise ValueError(
                f"{self.name}: user rows {bad[:5].tolist()} are out of range for a model "
                f"fitted on {n_users} users (unknown users have no row)"
            )
        hist = torch.from_numpy(self._history[rows])  # (U, L)
        empty = torch.zeros((len(rows), 0), dtype=torch.long)
        side = {k: torch.from_numpy(v[rows]) for k, v in self._side_inputs.items()}
        return self.model.user_tower(hist, empty, torch.zeros((len(rows), 0)), **side)  # (U, d)

    @torch.no_grad()
    def recommend(
        self, user_rows: np.ndarray, k: int, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        users = self.user_vectors(user_rows)  # (U, d)
        assert self.model is not None  # user_vectors raised otherwise
        artists = self.model.artist_tower.all_vectors()[N_SPECIAL:]  # (A, d)
        scores = (users @ artists.T).numpy()  # (U, A)
        exclude = self._matrix[np.asarray(user_rows).reshape(-1)] if exclude_seen else None
        return top_k(scores, k, exclude, partition_torch)

    # --- the run dir: config.json + vocab.json + checkpoint.ckpt (no pickle) ---

    def save(self, run_dir: Path, extra: dict | None = None) -> None:
        from training.inference import save_run

        if self.model is None or self.vocabs is None:
            raise ModelFitError("TwoTowerRecommender.save called before fit")
        save_run(Path(run_dir), self.model, self.vocabs, self.config, "interactions", extra)
        if self._side_inputs:  # the users' friends / tags inputs, rows as interactions.npz
            from core.atomic import write_bytes
            from evaluation.runs import npz_bytes

            write_bytes(Path(run_dir) / SIDE_FILE, npz_bytes(self._side_inputs))

    @classmethod
    def load(cls, run_dir: Path, interactions: Interactions) -> TwoTowerRecommender:
        """The fitted recommender of an interactions run; ``interactions`` its training matrix."""
        from training.inference import load_run

        run = load_run(run_dir)
        rec = cls(run.train_config)
        rec.model, rec.vocabs = run.model, run.vocabs
        matrix = interactions.matrix.tocsr().astype(np.float32)
        matrix.sort_indices()
        rec._matrix = matrix
        rec._history = rec._histories(matrix, _bag_order(matrix, interactions.timestamps))
        cfg = run.config
        if cfg.friends_len > 0 or cfg.user_tags_len > 0:
            path = Path(run_dir) / SIDE_FILE
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found: the run reads friends / user tags")
            with np.load(path, allow_pickle=False) as z:
                rec._side_inputs = {k: z[k] for k in z.files}
            for k, v in rec._side_inputs.items():
                if len(v) != matrix.shape[0]:
                    raise ValueError(f"{path}: {k} has {len(v)} rows for {matrix.shape[0]} users")
        return rec


SIDE_FILE = "user_side.npz"


def _sorted(matrix: sp.spmatrix) -> sp.csr_matrix:
    m = matrix.tocsr().astype(np.float32)
    m.sort_indices()
    return m


def _side_inputs(side: UserSide | None) -> dict[str, np.ndarray]:
    """Every user's side inputs (all their training artists fed: tags on all of them)."""
    if side is None:
        return {}
    rows = np.arange(side.n_users)
    return side.rows(rows, side.tag_bags() if side.tag_entry is not None else None)
