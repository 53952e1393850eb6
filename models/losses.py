"""In-batch sampled softmax with logQ correction.

Yi et al. (2019), "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
Recommendations": every other positive in the batch is a negative for a user; because popular
artists appear in batches more often they are over-penalised, so each logit ``s(u, a)`` is
corrected to ``s(u, a) - log q(a)`` where ``q(a)`` is the probability that ``a`` is sampled
into a batch (its share of training examples). Logits are cosine similarities divided by a
temperature (fixed or learned).

A batch may hold the same artist for two users; that copy is the *same* class, not a negative,
so off-diagonal columns with the row's positive artist are masked out.

Optionally ``M`` extra negatives drawn uniformly from the catalogue are appended to every row
(mixed negative sampling, Yang et al. 2020, "Mixed Negative Sampling for Learning Two-tower
Neural Networks in Recommendations"); each column is then corrected by the log of its expected
count in the candidate set: ``log(B q(a))`` for in-batch columns, ``log(M / A)`` for uniform ones.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def in_batch_softmax_loss(
    user_vecs: torch.Tensor,  # (B, d)
    artist_vecs: torch.Tensor,  # (C, d) every positive of the (global) batch
    artist_ids: torch.Tensor,  # (C,) vocab index of each column's artist
    log_q: torch.Tensor | None,  # (C,) log sampling probability of each column's artist
    temperature: torch.Tensor | float,
    weights: torch.Tensor | None = None,  # (B,) per-example weights
    extra_vecs: torch.Tensor | None = None,  # (M, d) uniformly sampled negatives
    extra_ids: torch.Tensor | None = None,  # (M,)
    extra_log_count: float = 0.0,  # log(M / A): the uniform columns' expected count
    targets: torch.Tensor | None = None,  # (B,) column of each row's positive; default arange
) -> torch.Tensor:
    """Mean (weighted) cross-entropy of each user against its own positive among the batch.

    With data parallelism the columns are the positives of *every* rank (gathered, ``C = W B``)
    while the rows are this rank's users; ``targets`` then says where a row's own column is."""
    if targets is None:
        targets = torch.arange(len(user_vecs), device=user_vecs.device)  # (B,)
    logits = user_vecs @ artist_vecs.T / temperature  # (B, C)
    if log_q is not None:
        # expected count of a column's artist among C draws is C q(a); with only in-batch
        # columns the constant log C cancels in the softmax, with uniform ones it does not
        shift = log_q + (math.log(len(artist_ids)) if extra_vecs is not None else 0.0)
        logits = logits - shift.to(logits.dtype).unsqueeze(0)  # (B, C), per column
    own = artist_ids[targets]  # (B,)
    same = artist_ids.unsqueeze(0) == own.unsqueeze(1)  # (B, C) accidental hits + the positive
    is_target = torch.zeros_like(same)
    is_target[torch.arange(len(targets), device=same.device), targets] = True  # (B, C)
    logits = logits.masked_fill(same & ~is_target, torch.finfo(logits.dtype).min)  # (B, C)
    if extra_vecs is not None and extra_ids is not None:
        extra = user_vecs @ extra_vecs.T / temperature  # (B, M)
        if log_q is not None:
            extra = extra - extra_log_count
        hit = extra_ids.unsqueeze(0) == own.unsqueeze(1)  # (B, M) positive drawn again
        extra = extra.masked_fill(hit, torch.finfo(extra.dtype).min)
        logits = torch.cat([logits, extra], dim=1)  # (B, C + M)
    loss = F.cross_entropy(logits.float(), targets, reduction="none")  # (B,)
    if weights is None:
        return loss.mean()
    return (loss * weights).sum() / weights.sum().clamp(min=1e-12)


class InBatchSoftmax(nn.Module):
    """The loss with its temperature as a module (learnable as ``log`` so it stays positive)."""

    def __init__(
        self, temperature: float = 0.05, learnable: bool = False, min_temperature: float = 0.01
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.min_temperature = min_temperature
        log_t = torch.tensor(math.log(temperature))
        if learnable:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp().clamp(min=self.min_temperature)

    def forward(
        self,
        user_vecs: torch.Tensor,
        artist_vecs: torch.Tensor,
        artist_ids: torch.Tensor,
        log_q: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
        extra_vecs: torch.Tensor | None = None,
        extra_ids: torch.Tensor | None = None,
        extra_log_count: float = 0.0,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return in_batch_softmax_loss(
            user_vecs,
            artist_vecs,
            artist_ids,
            log_q,
            self.temperature,
            weights,
            extra_vecs,
            extra_ids,
            extra_log_count,
            targets,
        )
