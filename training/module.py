"""The LightningModule: receives the towers and the loss, owns the optimisation and validation.

It is shared by the lake training job (``training.train``) and the bring-your-own-data
recommender (``training.two_tower_recommender``); only the data modules differ. Validation
ranks the full catalogue for every validation user, leaves out what they have seen, and scores
the top-K with :func:`evaluation.metrics.ranking_metrics` (the one metric implementation).
"""

from __future__ import annotations

import math

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from core.constants import N_SPECIAL, PAD_INDEX, UNK_INDEX
from evaluation.metrics import ranking_metrics
from models.losses import InBatchSoftmax, catalogue_softmax_loss
from models.topk_torch import top_k_vectors
from models.two_tower import ArtistTower, UserTower
from training.datamodule import EvalSet

MONITOR = "val/recall@20"


class TwoTowerModule(pl.LightningModule):
    log_q: torch.Tensor  # (A,) buffer

    def __init__(
        self,
        user_tower: UserTower,
        artist_tower: ArtistTower,
        loss: InBatchSoftmax,
        log_q: np.ndarray | None,  # (A,) log sampling probability per vocab index
        eval_set: EvalSet | None = None,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        eval_k: int = 100,
        uniform_negatives: int = 0,  # M catalogue artists per batch as extra negatives
        catalogue_weight: float = 0.0,  # weight of an exact full-catalogue softmax term
    ) -> None:
        super().__init__()
        self.user_tower = user_tower
        self.artist_tower = artist_tower
        self.loss = loss
        self.use_log_q = log_q is not None
        q = torch.zeros(artist_tower.config.n_artists) if log_q is None else torch.from_numpy(log_q)
        self.register_buffer("log_q", q.float(), persistent=False)
        self.eval_set = eval_set
        self.lr = lr
        self.weight_decay = weight_decay
        self.eval_k = eval_k
        self.uniform_negatives = uniform_negatives
        self.catalogue_weight = catalogue_weight
        self._val_vecs: list[torch.Tensor] = []
        self.val_history: list[dict[str, float]] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        users = self.user_tower(batch["history"], batch["segments"], batch["dense"])  # (B, d)
        artists = self.artist_tower(batch["artist"])  # (B, d)
        log_q = self.log_q[batch["artist"]] if self.use_log_q else None  # (B,)
        extra_ids = extra = None
        n_real = self.artist_tower.config.n_artists - N_SPECIAL  # never <pad>/<unk>
        if self.uniform_negatives:
            extra_ids = torch.randint(
                N_SPECIAL, n_real + N_SPECIAL, (self.uniform_negatives,), device=users.device
            )
            extra = self.artist_tower(extra_ids)  # (M, d)
        loss = self.loss(
            users,
            artists,
            batch["artist"],
            log_q,
            batch.get("weight"),
            extra,
            extra_ids,
            math.log(max(self.uniform_negatives, 1) / max(n_real, 1)),
        )
        if self.catalogue_weight:
            catalogue = self.artist_tower.all_vectors()  # (A, d)
            loss = loss + self.catalogue_weight * catalogue_softmax_loss(
                users, catalogue, batch["artist"], self.loss.temperature, batch.get("weight")
            )
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step {self.global_step}")
        self.log("train/loss", loss, prog_bar=True, batch_size=len(users))
        self.log("train/temperature", self.loss.temperature, batch_size=len(users))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        vecs = self.user_tower(batch["history"], batch["segments"], batch["dense"])  # (B, d)
        self._val_vecs.append(vecs.float())

    def on_validation_epoch_end(self) -> None:
        if self.eval_set is None or not self._val_vecs:
            return
        users = torch.cat(self._val_vecs)  # (U, d)
        self._val_vecs.clear()
        artists = self.artist_tower.all_vectors()  # (A, d)
        k = min(self.eval_k, artists.shape[0] - N_SPECIAL)
        topk = top_k_vectors(users, artists, self.eval_set.seen, k, never=(PAD_INDEX, UNK_INDEX))
        metrics = {f"val/{m}": v for m, v in ranking_metrics(topk, self.eval_set.targets).items()}
        self.val_history.append({"epoch": self.current_epoch, **metrics})
        self.log_dict(metrics, prog_bar=False)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params: list[nn.Parameter] = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)


def make_trainer(
    max_epochs: int,
    accelerator: str = "auto",
    callbacks: list[pl.Callback] | None = None,
    default_root_dir: str | None = None,
    logger: bool | pl.loggers.Logger = False,
    validate: bool = True,
) -> pl.Trainer:
    """One Trainer recipe for every two-tower job: bf16 on CUDA, fp32 elsewhere; the progress
    bar only on an interactive terminal so batch logs stay readable."""
    import sys

    use_cuda = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=1,
        precision="bf16-mixed" if use_cuda else "32-true",
        callbacks=callbacks or [],
        default_root_dir=default_root_dir,
        logger=logger,
        enable_checkpointing=any(
            isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks or []
        ),
        enable_progress_bar=sys.stderr.isatty(),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if validate else 0,
        deterministic=False,
        log_every_n_steps=10,
    )
