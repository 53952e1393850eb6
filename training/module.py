"""The one LightningModule: receives the two-tower and the training config, owns the
optimisation, the loss and validation.

It trains on either source (the lake's examples or masked pairs from an interactions file);
only the batches differ. Under data parallelism the artist vectors of every rank's positives
are gathered with their gradient, so each user is scored against the *global* batch
(``W x B`` columns): the negatives, and the logQ correction, are those of one big batch.
Validation ranks the full catalogue for every validation user, leaves out what they have
seen, and scores the top-K with :func:`evaluation.metrics.ranking_metrics` (the one metric
implementation).
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.types import OptimizerLRScheduler
from torch import nn

from core.constants import N_SPECIAL, PAD_INDEX, UNK_INDEX
from evaluation.metrics import ranking_metrics
from models.losses import InBatchSoftmax
from models.topk_torch import top_k_vectors
from models.two_tower import ArtistTower, TwoTower, UserTower
from training.datamodule import EvalSet
from training.train_config import TrainConfig

MONITOR = "val/recall@20"
log = logging.getLogger("tastemaker.training")


class TwoTowerModule(pl.LightningModule):
    log_q: torch.Tensor  # (A,) buffer

    def __init__(
        self,
        model: TwoTower,
        config: TrainConfig,
        log_q: np.ndarray | None,  # (A,) log sampling probability per vocab index
        eval_set: EvalSet | None = None,
        eval_k: int = 100,
    ) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.loss = InBatchSoftmax(config.temperature, learnable=config.learn_temperature)
        self.use_log_q = config.log_q and log_q is not None
        n = model.config.n_artists
        q = torch.zeros(n) if log_q is None else torch.from_numpy(log_q)
        self.register_buffer("log_q", q.float(), persistent=False)
        self.eval_set = eval_set
        self.eval_k = eval_k
        self.n_candidates = 0  # columns the last step's softmax saw (W x B under DDP)
        self._val_vecs: list[torch.Tensor] = []
        self.val_history: list[dict[str, float]] = []

    @property
    def user_tower(self) -> UserTower:
        return self.model.user_tower

    @property
    def artist_tower(self) -> ArtistTower:
        return self.model.artist_tower

    def _users(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, d) the user tower on a batch (its optional inputs when the batch has them)."""
        return self.user_tower(
            batch["history"],
            batch["segments"],
            batch["dense"],
            batch.get("follows"),
            batch.get("friends"),
            batch.get("friend_weights"),
            batch.get("user_tags"),
        )

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) -> (W B, ...) across ranks, gradient flowing back to this rank's part."""
        if self.trainer is None or self.trainer.world_size == 1:
            return x
        out = self.all_gather(x, sync_grads=True)  # (W, B, ...)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"all_gather returned {type(out).__name__}, expected a tensor")
        return out.reshape(-1, *x.shape[1:])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        users = self._users(batch)  # (B, d)
        artists = self.artist_tower(batch["artist"])  # (B, d)
        ids = batch["artist"]  # (B,)
        rank = self.trainer.global_rank if self.trainer is not None else 0
        all_artists, all_ids = self._gather(artists), self._gather(ids)  # (C, d), (C,)
        targets = rank * len(ids) + torch.arange(len(ids), device=ids.device)  # (B,)
        log_q = self.log_q[all_ids] if self.use_log_q else None  # (C,)
        extra_ids = extra = None
        n_real = self.model.config.n_artists - N_SPECIAL  # never <pad>/<unk>
        m = self.config.uniform_negatives
        if m:
            extra_ids = torch.randint(N_SPECIAL, n_real + N_SPECIAL, (m,), device=users.device)
            extra = self.artist_tower(extra_ids)  # (M, d)
        self.n_candidates = len(all_ids)
        k = self.model.config.members
        # an ensemble's members each learn from their own softmax over the same batch; a
        # member's block times sqrt(k) is its unit vector (``models.two_tower.normalize_members``)
        losses = [
            self.loss(
                *(_block(x, i, k) for x in (users, all_artists)),
                all_ids,
                log_q,
                batch.get("weight"),
                None if extra is None else _block(extra, i, k),
                extra_ids,
                math.log(max(m, 1) / max(n_real, 1)),
                targets,
            )
            for i in range(k)
        ]
        loss = losses[0] if k == 1 else torch.stack(losses).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step {self.global_step}")
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(users))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        vecs = self._users(batch)  # (B, d)
        self._val_vecs.append(vecs.float())

    def on_validation_epoch_end(self) -> None:
        if self.eval_set is None or not self._val_vecs:
            return
        users = torch.cat(self._val_vecs)  # (U, d)
        self._val_vecs.clear()
        artists = self.artist_tower.all_vectors().float()  # (A, d)
        k = min(self.eval_k, artists.shape[0] - N_SPECIAL)
        topk = top_k_vectors(users, artists, self.eval_set.seen, k, never=(PAD_INDEX, UNK_INDEX))
        metrics = {f"val/{m}": v for m, v in ranking_metrics(topk, self.eval_set.targets).items()}
        self.val_history.append({"epoch": self.current_epoch, **metrics})
        self.log_dict(metrics, prog_bar=False, sync_dist=False)

    def configure_optimizers(self) -> OptimizerLRScheduler:
        params: list[nn.Parameter] = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.config.lr, weight_decay=self.config.weight_decay)
        if self.config.lr_schedule == "constant":
            return opt
        steps = max(int(self.trainer.estimated_stepping_batches), 1)
        if self.config.lr_schedule == "cosine":
            sched: torch.optim.lr_scheduler.LRScheduler = (
                torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
            )
        else:  # "onecycle": warm up over the first 10 % of steps, then cosine down
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=self.config.lr, total_steps=steps, pct_start=0.1
            )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _block(x: torch.Tensor, i: int, members: int) -> torch.Tensor:
    """Member ``i``'s unit vectors out of (N, d) ensemble vectors: (N, d / members)."""
    if members == 1:
        return x
    width = x.shape[1] // members
    return x[:, i * width : (i + 1) * width] * math.sqrt(members)


class EpochProgress(pl.Callback):
    """One log line per epoch a person can watch: epoch, loss, val Recall@20, time left."""

    def __init__(self, label: str = "train") -> None:
        self.label = label
        self.started = 0.0

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        done = trainer.current_epoch + 1
        elapsed = time.perf_counter() - self.started
        left = elapsed / done * max(trainer.max_epochs - done, 0) if trainer.max_epochs else 0.0
        loss = trainer.callback_metrics.get("train/loss")
        val = trainer.callback_metrics.get(MONITOR)
        log.info(
            "%s epoch %d/%d  loss %s  %s %s  %.0f s, ~%.0f s left",
            self.label,
            done,
            trainer.max_epochs,
            "-" if loss is None else f"{float(loss):.4f}",
            MONITOR,
            "-" if val is None else f"{float(val):.4f}",
            elapsed,
            left,
        )


_QUIET = (
    "pytorch_lightning.utilities.rank_zero",
    "pytorch_lightning.accelerators.cuda",
    "lightning.pytorch.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "lightning_fabric.utilities.distributed",
    "pytorch_lightning.utilities.distributed",
)


def _quiet_lightning() -> None:
    """No "GPU available", tips or seed banners: our own epoch line is the output."""
    import warnings

    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def resolve_precision(precision: str, accelerator: str) -> str:
    """ "auto": bf16 autocast on CUDA (the towers are small; bf16 halves memory traffic),
    full fp32 elsewhere (CPU bf16 autocast is slower than fp32 here)."""
    if precision != "auto":
        return precision
    use_cuda = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    return "bf16-mixed" if use_cuda else "32-true"


def release_process_group() -> None:
    """End a DDP job's process group once its ranks are done with each other.

    Lightning leaves the default group alive after ``fit``; a process that then exits with a
    live gloo group can abort at interpreter shutdown ("terminate called without an active
    exception", SIGABRT) while its worker threads are torn down. Every rank waits for the
    others first, so no rank leaves while another is still in a collective."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def make_trainer(
    config: TrainConfig,
    max_epochs: int,
    callbacks: list[pl.Callback] | None = None,
    default_root_dir: str | None = None,
    logger: bool | pl.loggers.Logger = False,
    validate: bool = True,
    label: str = "train",
    strategy: str = "auto",
) -> pl.Trainer:
    """One Trainer recipe for every two-tower job (both sources)."""
    _quiet_lightning()
    callbacks = [*(callbacks or []), EpochProgress(label)]
    devices = config.devices
    if strategy == "auto" and devices not in (1, "1"):
        strategy = "ddp"
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator=config.accelerator,
        devices=devices,
        strategy=strategy,
        precision=resolve_precision(config.precision, config.accelerator),  # type: ignore[arg-type]
        callbacks=callbacks,
        default_root_dir=default_root_dir,
        logger=logger,
        enable_checkpointing=any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if validate else 0,
        deterministic=False,
        log_every_n_steps=10,
        use_distributed_sampler=False,  # our batches are already sharded per rank
    )
