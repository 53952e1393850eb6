"""Interactions (a user x artist matrix) -> training batches for the two-tower, by masking.

Each epoch every user's artists are split at random: a share ``keep`` is the history the user
tower reads, the rest are positives the model must find (with ``swap`` the two halves also
trade places, so every artist is a positive every epoch). The model thus learns to predict
artists it was not shown, which is what evaluation asks; feeding the whole bag and predicting
one of its members teaches it to recognise its input instead (HetRec test Recall@20 0.265 with
leave-one-out histories, 0.283 with halves: ``../shared/notes/two-tower-hetrec.md``). The idea
is the denoising objective of Mult-DAE (Liang et al. 2018) applied to pair batches.

Everything is built from pre-materialised arrays with vectorised numpy once per epoch: a
training step indexes tensors, never loops over rows. Under data parallelism every rank draws
the same epoch (same seed) and takes every ``world``-th batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import IterableDataset

from core.constants import N_SPECIAL, PAD_INDEX

if TYPE_CHECKING:
    from training.user_side import UserSide


def rank_world() -> tuple[int, int]:
    """(this process's rank, number of processes): (0, 1) outside data parallelism."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def bag_histories(
    indptr: np.ndarray,  # (U + 1,)
    items: np.ndarray,  # (N,) vocab indices, users' rows concatenated
    keep: np.ndarray,  # (N,) which entries go into their user's history
    key: np.ndarray,  # (N,) order within a user: smaller first (e.g. -timestamp, or random)
    history_len: int,
) -> np.ndarray:
    """(U, L) every user's kept items ordered by ``key``, left-aligned, 0-padded."""
    n_users = len(indptr) - 1
    user = np.repeat(np.arange(n_users), np.diff(indptr))  # (N,)
    order = np.lexsort((key, ~keep, user))  # by user, kept first, then key
    kept_before = np.cumsum(keep[order]) - keep[order]  # (N,) kept entries before, globally
    first_kept = np.zeros(n_users + 1, dtype=np.int64)
    first_kept[1:] = np.cumsum(np.bincount(user[keep], minlength=n_users))
    slot = kept_before - first_kept[user[order]]  # (N,) position within the user's history
    ok = keep[order] & (slot < history_len)
    out = np.full((n_users, history_len), PAD_INDEX, dtype=np.int64)  # (U, L)
    out[user[order][ok], slot[ok]] = items[order][ok]
    return out


def history_follows(follows: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """(B, F) followed artists with those outside the row's (B, L) history half zeroed: every
    follow is an artist streamed before it, so a follow in the held-out half would hand the
    model its positive. What is left marks which fed artists the user follows."""
    inside = (follows.unsqueeze(2) == history.unsqueeze(1)).any(2)  # (B, F)
    return torch.where(inside, follows, torch.zeros_like(follows))


class MaskedPairs(IterableDataset):
    """Yields dict batches ``history (B, L)``, ``segments (B, S)``, ``dense (B, 0)``,
    ``artist (B,)``; one pass is one epoch with a fresh split of every user's bag."""

    def __init__(
        self,
        matrix: sp.csr_matrix,  # (U, A) training interactions, columns = artist vocab - 2
        segments: np.ndarray,  # (U, S) int64
        history_len: int,
        batch_size: int,
        keep: float,
        swap: bool,
        seed: int,
        recency: np.ndarray | None = None,  # (N,) per stored entry, larger = more recent
        dense: np.ndarray | None = None,  # (U, D) float32 per user
        follows: np.ndarray | None = None,  # (U, F) int64 per user, most recent follow first
        side: UserSide | None = None,  # friends' artists / own tags, built on ``matrix``
    ) -> None:
        m = matrix.tocsr()
        self.indptr = m.indptr.astype(np.int64)
        self.items = torch.from_numpy(m.indices.astype(np.int64) + N_SPECIAL)  # (N,)
        self.user = np.repeat(np.arange(m.shape[0]), np.diff(self.indptr))  # (N,)
        self.lengths = np.diff(self.indptr)  # (U,)
        self.segments = torch.from_numpy(np.ascontiguousarray(segments, dtype=np.int64))
        n_users = m.shape[0]
        self.dense = torch.from_numpy(
            np.zeros((n_users, 0), np.float32) if dense is None else dense.astype(np.float32)
        )
        self.follows = None if follows is None else torch.from_numpy(follows.astype(np.int64))
        self.side = side
        self.friends = self.friend_weights = None
        if side is not None and side.friends is not None and side.friend_weights is not None:
            self.friends = torch.from_numpy(side.friends)  # (U, F)
            self.friend_weights = torch.from_numpy(side.friend_weights)  # (U, F)
        self.with_tags = side is not None and side.tag_entry is not None
        self.history_len = history_len
        self.batch_size = batch_size
        self.keep = keep
        self.swap = swap
        self.recency = recency
        self.seed = seed
        self.epoch = 0

    def split(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(N,) bool: entry is in the first half (history when not swapped); (N,) random key.
        Users with one artist keep it as a positive with an empty history."""
        key = rng.random(len(self.user))  # (N,)
        order = np.lexsort((key, self.user))
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order)) - self.indptr[self.user[order]]  # (N,)
        n_keep = np.floor(self.keep * self.lengths + rng.random(len(self.lengths)))  # (U,)
        n_keep = np.minimum(n_keep, self.lengths - 1)  # at least one positive per user
        return rank < n_keep[self.user], key

    def _views(
        self, rng: np.random.Generator
    ) -> list[tuple[torch.Tensor, np.ndarray, torch.Tensor | None]]:
        """[(history (U, L), positive entries, own tags (U, T) or None)] for this epoch: one
        view, or two if swapped; a view's tags are those on its history half only (its other
        half are the positives)."""
        first, key = self.split(rng)
        order = key if self.recency is None else -self.recency
        items = self.items.numpy()
        halves = [(first, ~first)]
        if self.swap and self.keep < 1.0:
            halves.append((~first & (self.lengths[self.user] > 1), first))
        out = []
        for fed, positive in halves:
            hist = torch.from_numpy(bag_histories(self.indptr, items, fed, order, self.history_len))
            tags = None
            if self.with_tags and self.side is not None:
                tags = torch.from_numpy(self.side.tag_bags(fed))  # (U, T)
            out.append((hist, np.flatnonzero(positive), tags))
        return out

    def n_pairs(self) -> int:
        return (
            len(self.user)
            if self.swap and self.keep < 1.0
            else int(len(self.user) * (1 - self.keep))
        )

    def __len__(self) -> int:
        _, world = rank_world()
        return max(1, self.n_pairs() // self.batch_size // world)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rank, world = rank_world()
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        views = self._views(rng)
        hist = torch.cat([h for h, _, _ in views])  # (V U, L)
        tags = torch.cat([t for _, _, t in views if t is not None]) if self.with_tags else None
        n_users = len(self.lengths)
        row = np.concatenate([v * n_users + self.user[p] for v, (_, p, _) in enumerate(views)])
        entry = np.concatenate([p for _, p, _ in views])  # (P,)
        perm = torch.from_numpy(rng.permutation(len(entry)))  # (P,)
        row_t, entry_t = torch.from_numpy(row)[perm], torch.from_numpy(entry)[perm]
        user_t = torch.from_numpy(self.user)[entry_t]  # (P,)
        n_batches = max(1, len(entry) // self.batch_size // world) * world
        size = min(self.batch_size, len(entry) // world) if len(entry) >= world else len(entry)
        for b in range(rank, n_batches, world):
            s = slice(b * size, (b + 1) * size)
            batch = {
                "history": hist[row_t[s]],  # (B, L)
                "segments": self.segments[user_t[s]],  # (B, S)
                "dense": self.dense[user_t[s]],  # (B, D)
                "artist": self.items[entry_t[s]],  # (B,)
            }
            if self.follows is not None:
                batch["follows"] = history_follows(self.follows[user_t[s]], batch["history"])
            if self.friends is not None and self.friend_weights is not None:
                batch["friends"] = self.friends[user_t[s]]  # (B, F)
                batch["friend_weights"] = self.friend_weights[user_t[s]]  # (B, F)
            if tags is not None:
                batch["user_tags"] = tags[row_t[s]]  # (B, T) the fed half's tags
            yield batch
