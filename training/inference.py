"""Load a trained run and score users against the whole catalogue (evaluation's entry point)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from core.constants import N_SPECIAL
from data.features.encoding import encode_users
from data.features.vocab import FeatureVocabs
from models.two_tower import TwoTower, TwoTowerConfig


@dataclass(frozen=True)
class LoadedRun:
    model: TwoTower
    vocabs: FeatureVocabs
    config: TwoTowerConfig
    run_id: str


def load_run(run_dir: str | Path) -> LoadedRun:
    """Rebuild the towers from ``config.json`` + ``vocab.json`` and the checkpoint's weights."""
    run_dir = Path(run_dir)
    for name in ("config.json", "vocab.json", "checkpoint.ckpt"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir / name} not found; is {run_dir} a two-tower run?")
    cfg_json = json.loads((run_dir / "config.json").read_text())
    model_kw = dict(cfg_json["model"])
    model_kw["segment_cardinalities"] = tuple(model_kw["segment_cardinalities"])
    config = TwoTowerConfig(**model_kw)
    vocabs = FeatureVocabs.from_json(json.loads((run_dir / "vocab.json").read_text()))
    state = torch.load(run_dir / "checkpoint.ckpt", map_location="cpu", weights_only=False)
    weights = state["state_dict"]
    tag_table = weights["artist_tower.tag_table"]
    popularity = weights["artist_tower.popularity"]
    model = TwoTower(config, tag_table, popularity)
    own = {k: v for k, v in weights.items() if k.startswith(("user_tower.", "artist_tower."))}
    own["artist_embedding.weight"] = weights["user_tower.artist_embedding.weight"]
    model.load_state_dict(own, strict=True)
    return LoadedRun(model.eval(), vocabs, config, cfg_json.get("run_id", run_dir.name))


class TwoTowerScorer:
    """``score_users(users) -> (U, A)`` cosine scores against every catalogue artist."""

    def __init__(self, run: LoadedRun) -> None:
        self.run = run
        self.artist_ids = np.asarray(run.vocabs.artists.tokens[N_SPECIAL:], dtype=object)  # (A,)
        with torch.no_grad():
            self._artist_vecs = run.model.artist_tower.all_vectors()[N_SPECIAL:]  # (A, d)

    @torch.no_grad()
    def user_vectors(self, users: pa.Table) -> np.ndarray:
        x = encode_users(users, self.run.vocabs, self.run.config.history_len)
        out = self.run.model.user_tower(
            torch.from_numpy(x.history), torch.from_numpy(x.segments), torch.from_numpy(x.dense)
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
