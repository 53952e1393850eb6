"""The multinomial (whole-user) objective for the bring-your-own-data two-tower.

Liang et al. (2018), "Variational Autoencoders for Collaborative Filtering" (Mult-DAE): a
training row is one *user*, not one (user, artist) pair. Every time a user is drawn, a random
20-50 % of their artists become the targets and the rest the history the user tower reads; the
loss is the log-likelihood of the targets under one softmax over the whole catalogue (the
artist tower embeds every artist each step, which is cheap for catalogues of tens of thousands).
Compared with the pair objective this sees each user's bag as a set (many positives per
softmax), needs no sampled negatives and no logQ correction, and an epoch costs one pass over
users instead of one over pairs.
"""

from __future__ import annotations

import math

import numpy as np
import pytorch_lightning as pl
import scipy.sparse as sp
import torch
from torch import nn

from core.constants import N_SPECIAL
from data.features.encoding import order_bag
from models.losses import multinomial_softmax_loss
from models.two_tower import ArtistTower, UserTower


class UserBatches:
    """Batches of whole users: history (B, L), targets and history masks (B, A) over vocab."""

    def __init__(
        self,
        matrix: sp.csr_matrix,
        order: sp.csr_matrix | None,
        history_len: int,
        segments: np.ndarray,
        target_fraction: tuple[float, float],
        seed: int,
    ) -> None:
        lo, hi = target_fraction
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(f"target_fraction must satisfy 0 < lo <= hi < 1, got {lo, hi}")
        self.indptr = matrix.indptr.astype(np.int64)
        self.items = matrix.indices.astype(np.int64) + N_SPECIAL  # (N,) vocab indices
        self.lengths = np.diff(self.indptr)  # (U,)
        self.n_vocab = matrix.shape[1] + N_SPECIAL
        self.recency = None if order is None else order.data.astype(np.float64)
        self.max_len = max(int(self.lengths.max()) if len(self.lengths) else 0, 1)
        self.history_len = history_len
        self.segments = segments
        self.fraction = (lo, hi)
        self.rng = np.random.default_rng(seed)
        self.users = np.flatnonzero(self.lengths > 0)  # rows that can be trained on

    def __len__(self) -> int:
        return len(self.users)

    def _positions(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        j = np.arange(self.max_len)  # (M,)
        valid = j[None, :] < self.lengths[users][:, None]  # (B, M)
        pos = np.where(valid, self.indptr[users][:, None] + j[None, :], 0)  # (B, M)
        return pos, valid

    def _ordered(self, pos: np.ndarray, keep: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(B, L) vocab indices of the kept items: most recent first, or a random bag order."""
        return order_bag(self.items, pos, keep, self.recency, self.history_len, rng)

    def histories(
        self, users: np.ndarray, drop: np.ndarray | None, rng: np.random.Generator
    ) -> np.ndarray:
        """(B, L) the users' full training bags (``drop`` must be None: kept for the pair API)."""
        pos, valid = self._positions(users)
        return self._ordered(pos, valid, rng)

    def batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        users = self.users[rows]  # (B,)
        pos, valid = self._positions(users)  # (B, M)
        n = self.lengths[users]  # (B,)
        lo, hi = self.fraction
        frac = self.rng.uniform(lo, hi, len(users))  # (B,)
        # at least one target; at least one history item when the user has two or more
        n_target = np.clip(np.rint(frac * n), 1, np.maximum(n - 1, 1))  # (B,)
        key = np.where(valid, self.rng.random(pos.shape), np.inf)  # (B, M)
        rank = np.argsort(np.argsort(key, axis=1), axis=1)  # (B, M)
        target = valid & (rank < n_target[:, None])  # (B, M)
        keep = valid & ~target  # (B, M)
        b = np.broadcast_to(np.arange(len(users))[:, None], pos.shape)
        targets = np.zeros((len(users), self.n_vocab), dtype=bool)  # (B, A)
        targets[b[target], self.items[pos[target]]] = True
        seen = np.zeros((len(users), self.n_vocab), dtype=bool)  # (B, A)
        seen[b[keep], self.items[pos[keep]]] = True
        return {
            "history": torch.from_numpy(self._ordered(pos, keep, self.rng)),
            "segments": torch.from_numpy(self.segments[users]),
            "dense": torch.zeros((len(users), 0)),
            "targets": torch.from_numpy(targets),
            "seen": torch.from_numpy(seen),
        }


def cosine_with_warmup(step: int, total: int, warmup: float = 0.05) -> float:
    """LR multiplier: linear warm-up over the first ``warmup`` share, then cosine to zero."""
    n_warm = max(1, int(warmup * total))
    if step < n_warm:
        return (step + 1) / n_warm
    progress = min(1.0, (step - n_warm) / max(1, total - n_warm))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class MultinomialModule(pl.LightningModule):
    """Trains both towers with :func:`models.losses.multinomial_softmax_loss`.

    ``item_bias`` adds a learned per-artist logit (the output bias of Mult-DAE); retrieval
    then scores ``u . v / temperature + bias``, which :meth:`scores` does for the caller.
    """

    def __init__(
        self,
        user_tower: UserTower,
        artist_tower: ArtistTower,
        temperature: float,
        lr: float,
        weight_decay: float,
        schedule: str = "constant",
        exclude_history: bool = True,
        item_bias: bool = False,
    ) -> None:
        super().__init__()
        if schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
        self.user_tower = user_tower
        self.artist_tower = artist_tower
        self.temperature = temperature
        self.lr = lr
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.exclude_history = exclude_history
        n = artist_tower.config.n_artists
        self.bias = nn.Parameter(torch.zeros(n)) if item_bias else None

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        users = self.user_tower(batch["history"], batch["segments"], batch["dense"])  # (B, d)
        artists = self.artist_tower.all_vectors()  # (A, d)
        exclude = batch["seen"] if self.exclude_history else torch.zeros_like(batch["seen"])
        exclude = exclude.clone()
        exclude[:, :N_SPECIAL] = True  # <pad>, <unk> are never an answer
        loss = multinomial_softmax_loss(
            users, artists, batch["targets"], self.temperature, exclude, self.bias
        )
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step {self.global_step}")
        self.log("train/loss", loss, prog_bar=True, batch_size=len(users))
        return loss

    @torch.no_grad()
    def scores(self, user_vecs: torch.Tensor, artist_vecs: torch.Tensor) -> torch.Tensor:
        logits = user_vecs @ artist_vecs.T / self.temperature  # (U, A)
        if self.bias is not None:
            logits = logits + self.bias[-artist_vecs.shape[0] :].unsqueeze(0)  # (U, A)
        return logits

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        decay = [p for n, p in self.named_parameters() if p.requires_grad and n != "bias"]
        groups = [{"params": decay, "weight_decay": self.weight_decay}]
        if self.bias is not None:
            groups.append({"params": [self.bias], "weight_decay": 0.0})
        opt = torch.optim.AdamW(groups, lr=self.lr)
        if self.schedule == "constant":
            return opt
        total = int(self.trainer.estimated_stepping_batches)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
