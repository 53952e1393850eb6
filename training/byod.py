"""Bring your own data: fit any model of the registry on an interactions file, no code.

The run-dir format and everything done with a run afterwards (recommend, evaluate) is in
:mod:`evaluation.runs`.
"""

from __future__ import annotations

import logging
import pickle
from datetime import datetime, timezone
from pathlib import Path

from core.atomic import write_bytes, write_json
from evaluation.registry import TWO_TOWER, make_recommender
from evaluation.runs import (
    interactions_from_table,
    npz_bytes,
    read_interactions_file,
    save_interactions,
)
from models.base import ScoringRecommender

log = logging.getLogger("tastemaker.training")


def train_interactions(
    interactions_path: str | Path,
    out_dir: str | Path,
    model_name: str = TWO_TOWER,
    artist_meta_path: str | Path | None = None,
) -> Path:
    """Fit ``model_name`` on an interactions file and persist it in ``out_dir``."""
    out = Path(out_dir)
    inter = interactions_from_table(read_interactions_file(interactions_path))
    log.info("fitting %s on %d users x %d artists (%d pairs)", model_name, *inter.shape,
             inter.matrix.nnz)  # fmt: skip
    model = make_recommender(model_name)
    if model_name == TWO_TOWER and artist_meta_path is not None:
        from data.importers import read_artists

        meta = read_artists(artist_meta_path)
        model.artist_tags = dict(zip(meta["artist_id"].to_pylist(), meta["tags"].to_pylist(),
                                     strict=True))  # fmt: skip
    model.fit(inter)
    save_interactions(out / "interactions.npz", inter)
    if isinstance(model, ScoringRecommender):
        write_bytes(out / "model.npz", npz_bytes(model.state()))
        model_config = model.config()
    else:
        write_bytes(out / "model.pkl", pickle.dumps(model))
        model_config = {"repr": repr(getattr(model, "config", None))}
    write_json(out / "config.json", {
        "kind": "interactions", "model": model_name, "model_config": model_config,
        "interactions": str(Path(interactions_path).resolve()),
        "artist_meta": None if artist_meta_path is None else str(Path(artist_meta_path).resolve()),
        "created_at": datetime.now(timezone.utc).isoformat(),
        "n_users": inter.shape[0], "n_artists": inter.shape[1], "n_pairs": int(inter.matrix.nnz),
    })  # fmt: skip
    return out
