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
    artist_vecs: torch.Tensor,  # (B, d)
    artist_ids: torch.Tensor,  # (B,) vocab index of each row's positive
    log_q: torch.Tensor | None,  # (B,) log sampling probability of each row's artist
    temperature: torch.Tensor | float,
    weights: torch.Tensor | None = None,  # (B,) per-example weights
    extra_vecs: torch.Tensor | None = None,  # (M, d) uniformly sampled negatives
    extra_ids: torch.Tensor | None = None,  # (M,)
    extra_log_count: float = 0.0,  # log(M / A): the uniform columns' expected count
) -> torch.Tensor:
    """Mean (weighted) cross-entropy of each user against its own positive among the batch."""
    logits = user_vecs @ artist_vecs.T / temperature  # (B, B)
    if log_q is not None:
        shift = log_q + (math.log(len(artist_ids)) if extra_vecs is not None else 0.0)
        logits = logits - shift.to(logits.dtype).unsqueeze(0)  # (B, B), per column
    same = artist_ids.unsqueeze(0) == artist_ids.unsqueeze(1)  # (B, B)
    eye = torch.eye(len(artist_ids), dtype=torch.bool, device=logits.device)  # (B, B)
    logits = logits.masked_fill(same & ~eye, torch.finfo(logits.dtype).min)  # (B, B)
    if extra_vecs is not None and extra_ids is not None:
        extra = user_vecs @ extra_vecs.T / temperature  # (B, M)
        if log_q is not None:
            extra = extra - extra_log_count
        hit = extra_ids.unsqueeze(0) == artist_ids.unsqueeze(1)  # (B, M) positive drawn again
        extra = extra.masked_fill(hit, torch.finfo(extra.dtype).min)
        logits = torch.cat([logits, extra], dim=1)  # (B, B + M)
    target = torch.arange(len(artist_ids), device=logits.device)  # (B,)
    loss = F.cross_entropy(logits.float(), target, reduction="none")  # (B,)
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
        )


def multinomial_softmax_loss(
    user_vecs: torch.Tensor,  # (B, d)
    artist_vecs: torch.Tensor,  # (A, d), every artist of the catalogue
    targets: torch.Tensor,  # (B, A) bool: the artists each user must predict
    temperature: torch.Tensor | float,
    exclude: torch.Tensor | None = None,  # (B, A) bool: left out of the softmax (e.g. history)
    bias: torch.Tensor | None = None,  # (A,) per-artist logit bias
) -> torch.Tensor:
    """Full-catalogue multinomial likelihood (Liang et al. 2018, "Variational Autoencoders for
    Collaborative Filtering", Mult-DAE): one softmax over the whole catalogue per user, the
    loss the mean negative log-probability of that user's target artists. No sampling, so no
    logQ correction is needed; the catalogue must fit in one (B, A) matrix."""
    logits = user_vecs @ artist_vecs.T / temperature  # (B, A)
    if bias is not None:
        logits = logits + bias.to(logits.dtype).unsqueeze(0)  # (B, A)
    if exclude is not None:
        logits = logits.masked_fill(exclude & ~targets, torch.finfo(logits.dtype).min)
    log_p = torch.log_softmax(logits.float(), dim=1)  # (B, A)
    t = targets.float()  # (B, A)
    per_user = -(log_p * t).sum(1) / t.sum(1).clamp(min=1.0)  # (B,)
    return per_user[t.sum(1) > 0].mean()


def catalogue_softmax_loss(
    user_vecs: torch.Tensor,  # (B, d)
    catalogue_vecs: torch.Tensor,  # (A, d), row = vocab index
    artist_ids: torch.Tensor,  # (B,) vocab index of each row's positive
    temperature: torch.Tensor | float,
    weights: torch.Tensor | None = None,  # (B,)
    n_special: int = 2,  # leading vocab rows (<pad>, <unk>) that are never a class
) -> torch.Tensor:
    """Exact softmax over the whole catalogue (no sampling, so no logQ): affordable when the
    catalogue is small (thousands), an auxiliary term next to the in-batch loss."""
    logits = user_vecs @ catalogue_vecs.T / temperature  # (B, A)
    special = torch.arange(n_special, device=logits.device)  # (n_special,)
    logits = logits.index_fill(1, special, torch.finfo(logits.dtype).min)  # (B, A)
    loss = F.cross_entropy(logits.float(), artist_ids, reduction="none")  # (B,)
    if weights is None:
        return loss.mean()
    return (loss * weights).sum() / weights.sum().clamp(min=1e-12)
