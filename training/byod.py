"""Bring your own data: fit any model of the registry on an interactions file, no code.

The two-tower is fitted by :class:`training.two_tower_recommender.TwoTowerRecommender` (the
same config, LightningModule and run-dir files as the lake job) and its run dir can be
evaluated, recommended from and exported; everything done with a run afterwards is in
:mod:`evaluation.runs`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.atomic import write_bytes, write_json
from core.workspace import RunDir
from evaluation.registry import TWO_TOWER, make_recommender
from evaluation.runs import (
    interactions_from_table,
    npz_bytes,
    read_interactions_file,
    save_interactions,
)
from models.base import ScoringRecommender
from training.train_config import FRIENDS_LEN, USER_TAGS_LEN, TrainConfig

log = logging.getLogger("tastemaker.training")


def read_artist_tags(path: str | Path) -> dict[str, list[str]]:
    from data.importers import read_artists

    meta = read_artists(path)
    ids = [str(a) for a in meta["artist_id"].to_pylist()]
    return dict(zip(ids, meta["tags"].to_pylist(), strict=True))


def train_interactions(
    interactions_path: str | Path,
    out_dir: str | Path,
    model_name: str = TWO_TOWER,
    artist_meta_path: str | Path | None = None,
    config: TrainConfig | None = None,
    params: Mapping[str, Any] | None = None,
    friends_path: str | Path | None = None,
    user_tags_path: str | Path | None = None,
) -> Path:
    """Fit ``model_name`` on an interactions file and persist it in ``out_dir``; ``params``
    set fields of a baseline's config (e.g. ``tastemaker tune``'s best).

    Two-tower only: ``friends_path`` (``FRIENDS`` rows) and ``user_tags_path`` (``USER_TAGS``
    rows, e.g. from ``tastemaker import hetrec``) switch on the user tower's friends and
    own-tags inputs (``TrainConfig.model.friends_len`` / ``user_tags_len``; when 0 they take
    ``FRIENDS_LEN`` / ``USER_TAGS_LEN``). Both are read against the interactions file only:
    a friend counts with their artists in it, a tag only on a (user, artist) pair in it."""
    out = Path(out_dir)
    if model_name != TWO_TOWER and (friends_path is not None or user_tags_path is not None):
        raise ValueError(f"--friends / --user-tags feed the two-tower only, not {model_name!r}")
    inter = interactions_from_table(read_interactions_file(interactions_path))
    log.info(
        "fitting %s on %d users x %d artists (%d pairs)", model_name, *inter.shape, inter.matrix.nnz
    )
    common = {
        "kind": "interactions",
        "model_name": model_name,
        "interactions": str(Path(interactions_path).resolve()),
        "artist_meta": None if artist_meta_path is None else str(Path(artist_meta_path).resolve()),
        "friends": None if friends_path is None else str(Path(friends_path).resolve()),
        "user_tags": None if user_tags_path is None else str(Path(user_tags_path).resolve()),
        "created_at": datetime.now(timezone.utc).isoformat(),
        "n_users": inter.shape[0],
        "n_artists": inter.shape[1],
        "n_pairs": int(inter.matrix.nnz),
    }
    if model_name == TWO_TOWER:
        from data.importers import read_side_table
        from data.schemas import FRIENDS, USER_TAGS
        from training.two_tower_recommender import TwoTowerRecommender

        tags = read_artist_tags(artist_meta_path) if artist_meta_path is not None else None
        config = config or TrainConfig()
        model_kw: dict[str, Any] = {}
        friends = user_tags = None
        if friends_path is not None:
            friends = read_side_table(friends_path, FRIENDS)
            if config.model.friends_len <= 0:
                model_kw["friends_len"] = FRIENDS_LEN
        if user_tags_path is not None:
            user_tags = read_side_table(user_tags_path, USER_TAGS)
            if config.model.user_tags_len <= 0:
                model_kw["user_tags_len"] = USER_TAGS_LEN
        if model_kw:
            config = dataclasses.replace(
                config, model=dataclasses.replace(config.model, **model_kw)
            )
        rec = TwoTowerRecommender(config, tags, friends, user_tags).fit(inter)
        save_interactions(RunDir(out).interactions, inter)
        timing = {
            "fit_seconds": round(rec.fit_seconds, 2),
            "fit_cpu_seconds": round(rec.fit_cpu_seconds, 2),
        }
        rec.save(out, {**common, **timing})
        return out
    model = make_recommender(model_name, params)
    if not isinstance(model, ScoringRecommender):
        raise ValueError(f"{model_name!r} cannot be persisted in a run dir")
    model.fit(inter)
    save_interactions(RunDir(out).interactions, inter)
    write_bytes(RunDir(out).model, npz_bytes(model.state()))
    write_json(RunDir(out).config, {**common, "model": model_name, "model_config": model.config()})
    return out
