"""The two-tower run dir (both sources) and scoring users against the whole catalogue.

A run dir holds ``config.json`` (``kind`` "lake" | "interactions", ``run_id``, the training
config with the model config nested under ``train.model`` and the fitted model config under
``model``), ``vocab.json`` and ``checkpoint.ckpt`` (``{"state_dict": tensors}``, read with
``torch.load(weights_only=True)``: no pickled objects). Lake runs add ``metrics.json``,
``lineage.json`` and ``report.md``; interactions runs add ``interactions.npz``.
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from core.atomic import write_bytes, write_json
from core.constants import N_SPECIAL
from core.workspace import RunDir
from data.features.encoding import encode_users
from data.features.vocab import FeatureVocabs
from models.two_tower import TwoTower, TwoTowerConfig
from training.train_config import TrainConfig, config_from_json


@dataclass(frozen=True)
class LoadedRun:
    model: TwoTower
    vocabs: FeatureVocabs
    config: TwoTowerConfig
    run_id: str
    train_config: TrainConfig
    kind: str = "lake"


def model_config_from_json(obj: dict) -> TwoTowerConfig:
    kw = dict(obj)
    kw["segment_cardinalities"] = tuple(kw.get("segment_cardinalities", ()))
    return TwoTowerConfig(**kw)


def checkpoint_bytes(model: TwoTower) -> bytes:
    buf = io.BytesIO()
    state = {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state}, buf)
    return buf.getvalue()


def save_run(
    run_dir: Path,
    model: TwoTower,
    vocabs: FeatureVocabs,
    config: TrainConfig,
    kind: str,
    extra: dict | None = None,
    run_id: str | None = None,
) -> None:
    """Write the three files every two-tower run has (atomically, checkpoint last-but-one)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    files = RunDir(run_dir)
    write_bytes(files.checkpoint, checkpoint_bytes(model))
    write_json(files.vocab, vocabs.to_json())
    write_json(
        files.config,
        {
            "kind": kind,
            "model_name": "two-tower",
            "run_id": run_id or run_dir.name,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "train": dataclasses.asdict(config),
            "model": dataclasses.asdict(model.config),
            **(extra or {}),
        },
    )


def load_run(run_dir: str | Path) -> LoadedRun:
    """Rebuild the towers from ``config.json`` + ``vocab.json`` and the checkpoint's weights."""
    run_dir = Path(run_dir)
    files = RunDir(run_dir)
    for path in (files.config, files.vocab, files.checkpoint):
        if not path.exists():
            raise FileNotFoundError(f"{path} not found; is {run_dir} a two-tower run?")
    cfg_json = json.loads(files.config.read_text())
    if "train" not in cfg_json or "model" not in cfg_json:
        raise ValueError(
            f"{files.config} has no 'train'/'model' configs (keys: "
            f"{', '.join(cfg_json)}); was it written by an older version? retrain it"
        )
    config = model_config_from_json(cfg_json["model"])
    vocabs = FeatureVocabs.from_json(json.loads(files.vocab.read_text()))
    state = torch.load(files.checkpoint, map_location="cpu", weights_only=True)
    weights = {
        k.removeprefix("model."): v
        for k, v in state["state_dict"].items()
        if k.startswith("model.")
    }
    model = TwoTower(config, weights["artist_tower.tag_table"], weights["artist_tower.popularity"])
    model.load_state_dict(weights, strict=True)
    return LoadedRun(
        model.eval(),
        vocabs,
        config,
        cfg_json.get("run_id", run_dir.name),
        config_from_json(cfg_json["train"]),
        cfg_json.get("kind", "lake"),
    )


class TwoTowerScorer:
    """``score_users(users) -> (U, A)`` cosine scores against every catalogue artist."""

    def __init__(self, run: LoadedRun) -> None:
        self.run = run
        self.artist_ids = np.asarray(run.vocabs.artists.tokens[N_SPECIAL:], dtype=object)  # (A,)
        with torch.no_grad():
            self._artist_vecs = run.model.artist_tower.all_vectors()[N_SPECIAL:]  # (A, d)

    @torch.no_grad()
    def user_vectors(self, users: pa.Table) -> np.ndarray:
        cfg = self.run.config
        x = encode_users(users, self.run.vocabs, cfg.history_len, follows_len=cfg.follows_len)
        out = self.run.model.user_tower(
            torch.from_numpy(x.history),
            torch.from_numpy(x.segments),
            torch.from_numpy(x.dense),
            None if x.follows is None else torch.from_numpy(x.follows),
        )  # (U, d)
        return out.numpy()

    @torch.no_grad()
    def score_users(self, users: pa.Table, batch_size: int = 4096) -> np.ndarray:
        parts = [
            self.user_vectors(users.slice(s, batch_size)) @ self._artist_vecs.numpy().T
            for s in range(0, users.num_rows, batch_size)
        ]
        if not parts:
            return np.zeros((0, len(self.artist_ids)), dtype=np.float32)
        return np.concatenate(parts).astype(np.float32)  # (U, A)


def load_scorer(run_dir: str | Path) -> TwoTowerScorer:
    return TwoTowerScorer(load_run(run_dir))
