"""The lake training job: features in the workspace -> ``runs/<run_id>/``.

A run dir holds ``config.json`` (this job's and the model's configs), ``vocab.json``,
``checkpoint.ckpt`` (best epoch by ``val/recall@20``), ``metrics.json`` (that epoch's
validation metrics), ``lineage.json`` (sha256 of every input file, git sha, library versions)
and ``report.md``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytorch_lightning as pl
import torch

from core.atomic import write_bytes, write_json
from core.workspace import Workspace
from data.schemas import USER_SEGMENT_FIELDS
from models.losses import InBatchSoftmax
from models.two_tower import TwoTower, TwoTowerConfig
from training.datamodule import LakeDataModule
from training.module import MONITOR, TwoTowerModule, make_trainer
from training.train_config import TrainConfig

__all__ = ["TrainConfig", "train_two_tower"]

log = logging.getLogger("tastemaker.training")
USER_FEATURE_SETS = ("history", "segments", "full")  # what the user tower reads besides ids
FEATURE_FILES = (
    "examples.parquet",
    "sequences.parquet",
    "eval.parquet",
    "artist_features.parquet",
    "trending.parquet",
    "meta.json",
)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def lineage(features_dir: Path) -> dict:
    files = {n: _sha256(features_dir / n) for n in FEATURE_FILES if (features_dir / n).exists()}
    return {
        "features_dir": str(features_dir),
        "sha256": files,
        "git_sha": _git_sha(),
        "torch": torch.__version__,
        "pytorch_lightning": pl.__version__,
        "python": platform.python_version(),
    }


def model_config(config: TrainConfig, dm: LakeDataModule) -> TwoTowerConfig:
    return TwoTowerConfig(
        n_artists=len(dm.vocabs.artists),
        n_tags=len(dm.vocabs.tags),
        segment_cardinalities=tuple(len(v) for v in dm.vocabs.segments.values()),
        n_dense=dm.eval_set.inputs.dense.shape[1],  # kept in the input contract either way
        use_dense=config.user_features == "full",
        history_len=config.history_len,
        tags_per_artist=config.tags_per_artist,
        dim=config.dim,
        embed_dim=config.embed_dim,
        hidden=config.hidden,
        pooling=config.pooling,
        item_dropout=config.item_dropout,
    )


def _datamodule(config: TrainConfig, features: Path, splits: tuple[str, ...]) -> LakeDataModule:
    dm = LakeDataModule(
        features,
        config.history_len,
        config.batch_size,
        config.tags_per_artist,
        config.max_train_examples,
        config.seed,
        positives=config.positives,
        repeat_weight=config.repeat_weight,
        segment_fields=() if config.user_features == "history" else USER_SEGMENT_FIELDS,
        train_splits=splits,
    )
    dm.setup("fit")
    return dm


def _module(config: TrainConfig, dm: LakeDataModule) -> tuple[TwoTowerModule, TwoTowerConfig]:
    mcfg = model_config(config, dm)
    model = TwoTower(mcfg, torch.from_numpy(dm.tag_table), torch.from_numpy(dm.popularity))
    module = TwoTowerModule(
        model.user_tower,
        model.artist_tower,
        InBatchSoftmax(config.temperature, learnable=config.learn_temperature),
        dm.log_q if config.log_q else None,
        dm.eval_set,
        lr=config.lr,
        weight_decay=config.weight_decay,
        uniform_negatives=config.uniform_negatives,
        catalogue_weight=config.catalogue_weight,
    )
    return module, mcfg


def _refit(
    config: TrainConfig, ws: Workspace, epochs: int, run_dir: Path
) -> tuple[LakeDataModule, TwoTowerConfig]:
    """Retrain from scratch on train + valid for the selected number of epochs; the result
    replaces ``checkpoint.ckpt`` (its validation numbers would be in-sample, so none are kept)."""
    pl.seed_everything(config.seed, workers=True, verbose=False)
    dm = _datamodule(config, ws.features, ("train", "valid"))
    module, mcfg = _module(config, dm)
    trainer = make_trainer(epochs, config.accelerator, None, str(run_dir), False, validate=False)
    log.info("refit on train + valid for %d epochs (%d examples)", epochs, len(dm.train.artists))
    trainer.fit(module, datamodule=dm)
    trainer.save_checkpoint(run_dir / "checkpoint.ckpt")
    return dm, mcfg


def train_two_tower(ws: Workspace, config: TrainConfig | None = None) -> Path:
    """Train on ``ws.features`` and return the new run dir."""
    config = config or TrainConfig()
    if config.user_features not in USER_FEATURE_SETS:
        raise ValueError(
            f"user_features must be one of {USER_FEATURE_SETS}, got {config.user_features!r}"
        )
    pl.seed_everything(config.seed, workers=True, verbose=False)
    dm = _datamodule(config, ws.features, ("train",))
    module, mcfg = _module(config, dm)
    now = datetime.now(timezone.utc)
    run_id = (
        now.strftime("%Y%m%dT%H%M%SZ")
        + "-"
        + hashlib.sha1(
            json.dumps(dataclasses.asdict(config), sort_keys=True, default=str).encode()
        ).hexdigest()[:6]
    )
    run_dir = ws.runs / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    ckpt = pl.callbacks.ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best", monitor=MONITOR, mode="max", save_top_k=1
    )
    stop = pl.callbacks.EarlyStopping(monitor=MONITOR, mode="max", patience=config.patience)
    logger = pl.loggers.CSVLogger(str(run_dir), name="logs", version="")
    trainer = make_trainer(config.epochs, config.accelerator, [ckpt, stop], str(run_dir), logger)
    log.info("training run %s on %s", run_id, trainer.accelerator.__class__.__name__)
    trainer.fit(module, datamodule=dm)
    if not ckpt.best_model_path:
        raise RuntimeError(f"run {run_id} produced no checkpoint (no validation epoch finished)")
    shutil.move(ckpt.best_model_path, run_dir / "checkpoint.ckpt")
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    best = max(module.val_history, key=lambda m: m[MONITOR])
    report = _report(run_id, config, module, best, dm)
    if config.refit:
        dm, mcfg = _refit(config, ws, int(best["epoch"]) + 1, run_dir)
    write_json(
        run_dir / "config.json",
        {
            "run_id": run_id,
            "created_at": now.isoformat(),
            "train": dataclasses.asdict(config),
            "model": dataclasses.asdict(mcfg),
        },
    )
    write_json(run_dir / "vocab.json", dm.vocabs.to_json())
    write_json(
        run_dir / "metrics.json",
        {"validation": best, "history": module.val_history, "refit": config.refit},
    )
    write_json(run_dir / "lineage.json", lineage(ws.features))
    write_bytes(run_dir / "report.md", report.encode())
    ws.set_latest_run(run_dir)  # last: a run only becomes "the latest" once it is complete
    log.info("run %s: best %s = %.4f at epoch %d", run_id, MONITOR, best[MONITOR], best["epoch"])
    return run_dir


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
