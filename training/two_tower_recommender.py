"""The two-tower model behind the ``models.base.Recommender`` contract (bring-your-own-data).

A user is the bag of artists they have in the training matrix (most recent first when the
interactions carry timestamps). Training turns every (user, artist) pair into an example whose
positive is that artist and whose history is the user's *other* artists — the positive is
always removed from its own history, or the model would learn to copy its input. Item dropout
in the user tower makes it a denoising model of the bag, in the spirit of Mult-DAE
(Liang et al. 2018); the loss is the shared in-batch softmax with logQ (``models.losses``) and
the optimisation the shared ``training.module.TwoTowerModule``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytorch_lightning as pl
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader

from core.constants import N_SPECIAL
from data.features.encoding import order_bag
from data.features.vocab import Vocab
from models.base import Interactions, ModelFitError
from models.losses import InBatchSoftmax
from models.topk import top_k
from models.topk_torch import partition_torch
from models.two_tower import TwoTower, TwoTowerConfig
from training.datamodule import log_sampling_probability
from training.module import TwoTowerModule, make_trainer
from training.two_tower_multinomial import MultinomialModule, UserBatches

log = logging.getLogger("tastemaker.training")


@dataclass(frozen=True)
class TwoTowerRecConfig:
    """Defaults = the best HetRec-2K setting (80/20 seed 0): multinomial objective, id-embedding
    artist tower, per-artist bias, 100 cosine epochs -> Recall@20 0.273 / NDCG@20 0.277 (the
    pair objective with in-batch softmax + logQ: 0.265 / 0.262). Chosen on a validation slice
    of the training split (``benchmarks.bench_two_tower_hetrec --val``)."""

    model: TwoTowerConfig = TwoTowerConfig(
        n_artists=N_SPECIAL,
        history_len=50,
        pooling="mean",
        item_dropout=0.5,
        dim=64,
        embed_dim=64,
        artist_mlp=False,
    )
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-2
    weight_decay: float = 0.0
    temperature: float = 0.1  # pairs on HetRec 80/20: 0.05 -> 0.256, 0.1 -> 0.265, 0.2 -> 0.254
    learn_temperature: bool = False  # pairs only
    log_q: bool = True  # pairs only
    uniform_negatives: int = 0  # pairs: extra catalogue negatives per batch (mixed negatives)
    weighting: str = "binary"  # pairs: "binary" | "log": example weight 1 or log1p(weight)
    accelerator: str = "cpu"
    seed: int = 0
    # "pairs": one example per (user, artist), in-batch softmax + logQ (``models.losses``);
    # "multinomial": one example per user, full-catalogue softmax (``two_tower_multinomial``)
    objective: str = "multinomial"
    target_fraction: tuple[float, float] = (0.2, 0.5)  # multinomial: share of a bag predicted
    exclude_history: bool = True  # multinomial: a user's history is not in their softmax
    item_bias: bool = True  # multinomial: learned per-artist logit bias
    schedule: str = "cosine"  # multinomial: "constant" | "cosine" (5 % warm-up)


class _PairBatches:
    """Builds batches of (user history without the positive, positive artist) pairs."""

    def __init__(
        self,
        matrix: sp.csr_matrix,
        order: sp.csr_matrix | None,
        history_len: int,
        segments: np.ndarray,
        weighting: str,
        seed: int,
    ) -> None:
        self.indptr = matrix.indptr.astype(np.int64)
        self.items = matrix.indices.astype(np.int64) + N_SPECIAL  # (N,) vocab indices
        lengths = np.diff(self.indptr)
        self.user = np.repeat(np.arange(matrix.shape[0]), lengths)  # (N,) example -> user
        self.pos_in_user = np.arange(len(self.items)) - self.indptr[self.user]  # (N,)
        # timestamps: larger = more recent = earlier in the history; without them, a bag
        self.recency = None if order is None else order.data.astype(np.float64)
        self.max_len = int(lengths.max()) if len(lengths) else 0
        self.history_len = history_len
        self.segments = segments
        w = matrix.data.astype(np.float32)
        self.weights = np.log1p(w) if weighting == "log" else np.ones_like(w)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.items)

    def histories(
        self, users: np.ndarray, drop: np.ndarray | None, rng: np.random.Generator
    ) -> np.ndarray:
        """(B, L) history per user row, leaving out position ``drop`` of each user's list.

        Without timestamps the order is random (``rng``); it only matters to attention pooling
        and to which items survive when a user has more than ``L``."""
        j = np.arange(self.max_len)  # (M,)
        length = np.diff(self.indptr)[users]  # (B,)
        valid = j[None, :] < length[:, None]  # (B, M)
        if drop is not None:
            valid &= j[None, :] != drop[:, None]
        pos = np.where(valid, self.indptr[users][:, None] + j[None, :], 0)  # (B, M)
        return order_bag(self.items, pos, valid, self.recency, self.history_len, rng)

    def batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        users = self.user[rows]
        return {
            "history": torch.from_numpy(self.histories(users, self.pos_in_user[rows], self.rng)),
            "segments": torch.from_numpy(self.segments[users]),
            "dense": torch.zeros((len(rows), 0)),
            "artist": torch.from_numpy(self.items[rows]),
            "weight": torch.from_numpy(self.weights[rows]),
        }


class TwoTowerRecommender:
    name = "two-tower"

    def __init__(
        self,
        config: TwoTowerRecConfig | None = None,
        artist_tags: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.config = config or TwoTowerRecConfig()
        self.artist_tags = artist_tags
        self.model: TwoTower | None = None

    def _artist_tables(
        self, inter: Interactions, tags_per_artist: int
    ) -> tuple[Vocab, np.ndarray, np.ndarray]:
        n = len(inter.artist_ids) + N_SPECIAL
        tags_of = self.artist_tags or {}
        tag_vocab = Vocab.build(
            (t for a in inter.artist_ids for t in tags_of.get(str(a), ())), min_count=2
        )
        tag_table = np.zeros((n, tags_per_artist), dtype=np.int64)
        for c, a in enumerate(inter.artist_ids):
            enc = [i for i in tag_vocab.encode(list(tags_of.get(str(a), ()))) if i > 1]
            tag_table[c + N_SPECIAL, : min(len(enc), tags_per_artist)] = enc[:tags_per_artist]
        counts = np.zeros(n, dtype=np.float32)
        counts[N_SPECIAL:] = np.diff(inter.matrix.tocsc().indptr)
        popularity = np.log1p(counts) / max(np.log1p(counts).max(), 1e-6)
        return tag_vocab, tag_table, popularity.astype(np.float32)

    def fit(
        self, interactions: Interactions, callbacks: list[pl.Callback] | None = None
    ) -> TwoTowerRecommender:
        cfg = self.config
        if cfg.objective not in ("pairs", "multinomial"):
            raise ValueError(f"objective must be 'pairs' or 'multinomial', got {cfg.objective!r}")
        matrix = interactions.matrix.tocsr().astype(np.float32)
        matrix.sort_indices()
        if matrix.nnz == 0:
            raise ModelFitError("interaction matrix is empty; nothing to train on")
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        meta = interactions.user_meta or {}
        self.segment_vocabs = {f: Vocab.build(map(str, v)) for f, v in sorted(meta.items())}
        segments = (
            np.stack(
                [
                    self.segment_vocabs[f].encode(list(map(str, meta[f])))
                    for f in self.segment_vocabs
                ],
                1,
            )
            if meta
            else np.zeros((matrix.shape[0], 0), dtype=np.int64)
        )
        tag_vocab, tag_table, popularity = self._artist_tables(
            interactions, cfg.model.tags_per_artist
        )
        mcfg = replace(
            cfg.model,
            n_artists=len(interactions.artist_ids) + N_SPECIAL,
            n_tags=len(tag_vocab),
            segment_cardinalities=tuple(len(v) for v in self.segment_vocabs.values()),
            n_dense=0,
        )
        order = None
        if interactions.timestamps is not None:
            order = interactions.timestamps.tocsr()
            order.sort_indices()
        model = TwoTower(mcfg, torch.from_numpy(tag_table), torch.from_numpy(popularity))
        self.model, self._matrix, self._segments = model, matrix, segments
        module: pl.LightningModule
        if cfg.objective == "multinomial":
            pairs: _PairBatches | UserBatches = UserBatches(
                matrix, order, mcfg.history_len, segments, cfg.target_fraction, cfg.seed
            )
            module = MultinomialModule(
                model.user_tower,
                model.artist_tower,
                cfg.temperature,
                cfg.lr,
                cfg.weight_decay,
                cfg.schedule,
                cfg.exclude_history,
                cfg.item_bias,
            )
        else:
            pairs = _PairBatches(matrix, order, mcfg.history_len, segments, cfg.weighting, cfg.seed)
            module = TwoTowerModule(
                model.user_tower,
                model.artist_tower,
                InBatchSoftmax(cfg.temperature, learnable=cfg.learn_temperature),
                log_sampling_probability(pairs.items, mcfg.n_artists) if cfg.log_q else None,
                lr=cfg.lr,
                weight_decay=cfg.weight_decay,
                uniform_negatives=cfg.uniform_negatives,
            )
        self._pairs, self._module = pairs, module
        indices: Any = range(len(pairs))  # a range is a map-style dataset of its indices
        loader: DataLoader = DataLoader(
            indices,
            batch_size=cfg.batch_size,
            shuffle=True,
            drop_last=len(pairs) > cfg.batch_size,
            generator=torch.Generator().manual_seed(cfg.seed),
            collate_fn=lambda rows: pairs.batch(np.asarray(rows)),
        )
        trainer = make_trainer(
            cfg.epochs, accelerator=cfg.accelerator, callbacks=callbacks, validate=False
        )
        trainer.fit(module, train_dataloaders=loader)
        self.model = model.cpu().eval()
        return self

    @torch.no_grad()
    def user_vectors(self, user_rows: np.ndarray) -> torch.Tensor:
        if self.model is None:
            raise ModelFitError("TwoTowerRecommender.recommend called before fit")
        rows = np.asarray(user_rows, dtype=np.int64).reshape(-1)
        n_users = self._matrix.shape[0]
        bad = rows[(rows < 0) | (rows >= n_users)]
        if len(bad):
            raise ValueError(
                f"{self.name}: user rows {bad[:5].tolist()} are out of range for a model "
                f"fitted on {n_users} users (unknown users have no row)"
            )
        rng = np.random.default_rng(self.config.seed)  # same answer for the same user every call
        hist = torch.from_numpy(self._pairs.histories(rows, None, rng))  # (U, L)
        seg = torch.from_numpy(self._segments[rows])  # (U, S)
        return self.model.user_tower(hist, seg, torch.zeros((len(rows), 0)))  # (U, d)

    @torch.no_grad()
    def recommend(
        self, user_rows: np.ndarray, k: int, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        users = self.user_vectors(user_rows)  # (U, d)
        if self.model is None:
            raise ModelFitError("TwoTowerRecommender.recommend called before fit")
        artists = self.model.artist_tower.all_vectors()[N_SPECIAL:]  # (A, d)
        if isinstance(self._module, MultinomialModule):
            scores = self._module.scores(users, artists).numpy()  # (U, A)
        else:
            scores = (users @ artists.T).numpy()  # (U, A)
        exclude = self._matrix[np.asarray(user_rows).reshape(-1)] if exclude_seen else None
        return top_k(scores, k, exclude, partition_torch)
