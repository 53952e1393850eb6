"""The lake training job: features in the workspace -> ``runs/<run_id>/``.

A run dir holds the files of every two-tower run (``training.inference``: ``config.json``,
``vocab.json``, ``checkpoint.ckpt`` of the best epoch by ``val/recall@20``, or of the refit),
``metrics.json`` (that epoch's validation metrics), ``lineage.json`` (sha256 of every input
file, git sha, library versions) and ``report.md``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from core.atomic import write_bytes, write_json
from core.lineage import git_sha, sha256_file
from core.workspace import FeatureDir, RunDir, Workspace
from data.schemas import USER_SEGMENT_FIELDS
from models.two_tower import TwoTower, TwoTowerConfig
from training.datamodule import LakeDataModule
from training.inference import save_run
from training.module import MONITOR, TwoTowerModule, make_trainer, release_process_group
from training.train_config import TrainConfig
from training.warm_start import warm_start

__all__ = ["TrainConfig", "train_two_tower"]

log = logging.getLogger("tastemaker.training")
USER_FEATURE_SETS = ("history", "segments", "full")  # what the user tower reads besides ids


def _info(msg: str, *args: object) -> None:
    """Log on rank 0 only (under DDP every rank runs the job)."""
    if getattr(rank_zero_only, "rank", 0) == 0:
        log.info(msg, *args)


def lineage(features_dir: Path) -> dict:
    inputs = FeatureDir(features_dir).lineage_inputs()
    files = {p.name: sha256_file(p) for p in inputs if p.exists()}
    meta = FeatureDir(features_dir).meta
    # the lake's events table version the features were built from (features --as-of-version)
    version = json.loads(meta.read_text()).get("lake_version") if meta.exists() else None
    return {
        "features_dir": str(features_dir),
        "lake_version": version,
        "sha256": files,
        "git_sha": git_sha(),
        "torch": torch.__version__,
        "pytorch_lightning": pl.__version__,
        "python": platform.python_version(),
    }


def model_config(config: TrainConfig, dm: LakeDataModule) -> TwoTowerConfig:
    return dataclasses.replace(
        config.model,
        n_artists=len(dm.vocabs.artists),
        n_tags=len(dm.vocabs.tags),
        segment_cardinalities=tuple(len(v) for v in dm.vocabs.segments.values()),
        n_dense=dm.eval_set.inputs.dense.shape[1],  # kept in the input contract either way
        use_dense=config.user_features == "full",
    )


def _datamodule(config: TrainConfig, features: Path, splits: tuple[str, ...]) -> LakeDataModule:
    dm = LakeDataModule(
        features,
        config.model.history_len,
        config.batch_size,
        config.model.tags_per_artist,
        config.max_train_examples,
        config.seed,
        positives=config.positives,
        repeat_weight=config.repeat_weight,
        segment_fields=() if config.user_features == "history" else USER_SEGMENT_FIELDS,
        train_splits=splits,
        masked=config.lake_batches == "masked",
        history_keep=config.history_keep,
        swap_halves=config.swap_halves,
        follows_len=config.model.follows_len,
    )
    dm.setup("fit")
    return dm


def _module(config: TrainConfig, dm: LakeDataModule) -> TwoTowerModule:
    model = TwoTower(
        model_config(config, dm), torch.from_numpy(dm.tag_table), torch.from_numpy(dm.popularity)
    )
    return TwoTowerModule(model, config, dm.log_q if config.log_q else None, dm.eval_set)


class KeepBest(pl.Callback):
    """Keeps the weights of the epoch with the best ``val/recall@20`` in memory."""

    def __init__(self) -> None:
        self.best = -1.0
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(MONITOR)
        if value is not None and float(value) > self.best:
            self.best = float(value)
            self.state = copy.deepcopy(module.state_dict())


def _refit(
    config: TrainConfig,
    ws: Workspace,
    epochs: int,
    init_from: str | Path | None = None,
    callbacks: Sequence[pl.Callback] = (),
) -> tuple[LakeDataModule, TwoTower, pl.Trainer]:
    """Retrain (from scratch, or from ``init_from``'s weights) on train + valid for the selected
    number of epochs; the result replaces the checkpoint (its validation numbers would be
    in-sample, so none are kept)."""
    pl.seed_everything(config.seed, workers=True, verbose=False)
    dm = _datamodule(config, ws.features, ("train", "valid"))
    module = _module(config, dm)
    if init_from is not None:
        warm_start(module.model, dm.vocabs, init_from)
    trainer = make_trainer(config, epochs, [*callbacks], validate=False, label="refit")
    _info("refit on train + valid for %d epochs (%d examples)", epochs, len(dm.train.artists))
    trainer.fit(module, datamodule=dm)
    return dm, module.model, trainer


def train_two_tower(
    ws: Workspace,
    config: TrainConfig | None = None,
    init_from: str | Path | None = None,
    callbacks: Sequence[pl.Callback] = (),
) -> Path:
    """Train on ``ws.features`` and return the new run dir; ``init_from`` (a two-tower run dir,
    e.g. the champion's) warm-starts the weights (:mod:`training.warm_start`); ``callbacks``
    join both fits' (the selection fit's and the refit's).

    With ``config.devices`` > 1 (DDP; Lightning starts the other ranks by re-running the
    script, or ``torchrun`` started them all) every rank runs this function: each trains on its
    shard of every batch, validates the same users with the same weights (so early stopping
    and the best epoch agree), and returns the same run dir; rank 0 alone writes it (files,
    logs and the ``LATEST`` pointer), and every rank returns once it is complete."""
    config = config or TrainConfig()
    if config.user_features not in USER_FEATURE_SETS:
        raise ValueError(
            f"user_features must be one of {USER_FEATURE_SETS}, got {config.user_features!r}"
        )
    pl.seed_everything(config.seed, workers=True, verbose=False)
    dm = _datamodule(config, ws.features, ("train",))
    module = _module(config, dm)
    warm = None
    if init_from is not None:
        warm = {"from": str(init_from), **warm_start(module.model, dm.vocabs, init_from)}
    now = datetime.now(timezone.utc)
    run_id = (
        now.strftime("%Y%m%dT%H%M%SZ")
        + "-"
        + hashlib.sha1(
            json.dumps(dataclasses.asdict(config), sort_keys=True, default=str).encode()
        ).hexdigest()[:6]
    )
    # one process, or the launcher (torchrun's RANK 0) of several: the run dir is its
    if config.devices in (1, "1") or getattr(rank_zero_only, "rank", 0) == 0:
        (ws.runs / run_id).mkdir(parents=True, exist_ok=False)
    keep = KeepBest()
    stop = pl.callbacks.EarlyStopping(monitor=MONITOR, mode="max", patience=config.patience)
    logger = pl.loggers.CSVLogger(str(ws.runs / run_id), name="logs", version="")
    trainer = make_trainer(
        config, config.epochs, [keep, stop, *callbacks], str(ws.runs / run_id), logger
    )
    _info("training run %s on %s", run_id, trainer.accelerator.__class__.__name__)
    trainer.fit(module, datamodule=dm)
    run_id = trainer.strategy.broadcast(run_id)  # the other ranks' clocks may name it otherwise
    run_dir = ws.runs / run_id
    if keep.state is None or not module.val_history:
        raise RuntimeError(f"run {run_id} produced no checkpoint (no validation epoch finished)")
    module.load_state_dict(keep.state)
    model = module.model
    best = max(module.val_history, key=lambda m: m[MONITOR])
    report = _report(run_id, config, module, best, dm)
    if config.refit:
        dm, model, trainer = _refit(config, ws, int(best["epoch"]) + 1, init_from, callbacks)
    trained = np.zeros(model.config.n_artists, dtype=bool)
    trained[dm.train.artists] = True
    model.zero_untrained_ids(trained)
    if trainer.is_global_zero:
        metrics = {
            "validation": best,
            "history": module.val_history,
            "refit": config.refit,
            "warm_start": warm,
        }
        _write_run(ws, run_dir, model, dm, config, metrics, report)
    trainer.strategy.barrier("run-written")  # no rank returns a run dir still being written
    release_process_group()
    _info("run %s: best %s = %.4f at epoch %d", run_id, MONITOR, best[MONITOR], best["epoch"])
    return run_dir


def _write_run(
    ws: Workspace,
    run_dir: Path,
    model: TwoTower,
    dm: LakeDataModule,
    config: TrainConfig,
    metrics: dict,
    report: str,
) -> None:
    """Rank 0's part: the run's files, then the ``LATEST`` pointer."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_run(run_dir, model, dm.vocabs, config, "lake", run_id=run_dir.name)
    files = RunDir(run_dir)
    write_json(files.metrics, metrics)
    write_json(files.lineage, lineage(ws.features))
    write_bytes(files.report, report.encode())
    ws.set_latest_run(run_dir)  # last: a run only becomes "the latest" once it is complete


def _report(run_id: str, config: TrainConfig, module: TwoTowerModule, best: dict, dm) -> str:
    rows = "\n".join(
        f"| {h['epoch']} | {h.get('val/recall@20', float('nan')):.4f} | "
        f"{h.get('val/ndcg@20', float('nan')):.4f} |"
        for h in module.val_history
    )
    return (
        f"# Two-tower run {run_id}\n\n"
        f"Train examples: {len(dm.train.artists):,}; artists: {len(dm.vocabs.artists):,}; "
        f"validation users: {len(dm.eval_set.inputs):,}.\n\n"
        f"Best epoch {best['epoch']}: val/recall@20 {best['val/recall@20']:.4f}, "
        f"val/ndcg@20 {best['val/ndcg@20']:.4f}.\n\n"
        "| epoch | val/recall@20 | val/ndcg@20 |\n|---|---|---|\n"
        f"{rows}\n\n## Config\n\n```json\n"
        f"{json.dumps(dataclasses.asdict(config), indent=2, default=str)}\n```\n"
    )
