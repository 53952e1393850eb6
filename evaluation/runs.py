"""Bring-your-own-data run dirs: their format, loading, recommending and evaluating.

Training one is :func:`training.byod.train_interactions`; everything after it lives here.

Run-dir format of a bring-your-own-data run (``tastemaker train --interactions ...``):

* ``config.json`` — ``{"kind": "interactions", "model_name": NAME, "interactions": PATH,
  "artist_meta": PATH | null, "created_at": ISO-8601 UTC, ...}``; a baseline adds
  ``"model": NAME, "model_config": {...}``, the two-tower its run-dir configs
  (``training.inference``: ``train``, ``model``);
* ``interactions.npz`` — the training matrix as CSR arrays ``data``, ``indices``, ``indptr``,
  ``shape`` plus ``user_ids`` and ``artist_ids`` (unicode arrays, the file's own ids);
* ``model.npz`` — a non-neural model's ``state()`` arrays (numpy only, ``allow_pickle`` off):
  ``popularity`` (popular), ``n_artists`` (random), ``segment_values``/``segment_scores``/
  ``global_scores``/``user_segment`` (trending), CSR ``data``/``indices``/``indptr``/``shape``
  of the item-item similarity (itemknn), ``active``/``weights``/``n_artists`` (ease),
  ``user_factors``/``artist_factors`` (als);
* the two-tower's ``vocab.json`` and ``checkpoint.ckpt`` (tensors only, read with
  ``weights_only``): the same files as a lake run, so it can be exported and served too.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from core.atomic import write_bytes, write_json, write_table
from core.workspace import RunDir
from evaluation.metrics import DEFAULT_KS, catalogue_metrics, ranking_metrics
from evaluation.registry import baseline_class, is_plugin, load_fitted_plugin
from evaluation.report import write_report
from evaluation.temporal import UNKNOWN_TARGET
from models.base import Interactions

log = logging.getLogger("tastemaker.evaluation")
RECS = pa.schema(
    [
        ("user_id", pa.string()),
        ("artist_id", pa.string()),
        ("rank", pa.int32()),
        ("score", pa.float32()),
    ]
)


def read_interactions_file(path: str | Path) -> pa.Table:
    """The data platform's reader (``data.importers.read_interactions``), INTERACTIONS columns."""
    from data.importers import read_interactions

    return read_interactions(path)


def interactions_from_table(table: pa.Table) -> Interactions:
    users = np.asarray(table["user_id"].to_pylist(), dtype=str)
    artists = np.asarray(table["artist_id"].to_pylist(), dtype=str)
    weights = None
    if "weight" in table.column_names and table["weight"].null_count < table.num_rows:
        weights = table["weight"].to_numpy(zero_copy_only=False).astype(np.float32)
        weights = np.where(np.isnan(weights), 1.0, weights)
    return Interactions.from_pairs(users, artists, weights)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub misreads **kwargs
    return buf.getvalue()


def save_interactions(path: Path, inter: Interactions) -> None:
    m = inter.matrix.tocsr()
    write_bytes(
        path,
        npz_bytes(
            {
                "data": m.data,
                "indices": m.indices,
                "indptr": m.indptr,
                "shape": np.array(m.shape),
                "user_ids": inter.user_ids.astype(str),
                "artist_ids": inter.artist_ids.astype(str),
            }
        ),
    )


def load_interactions(path: Path) -> Interactions:
    with np.load(path, allow_pickle=False) as z:
        shape = tuple(int(v) for v in z["shape"])
        m = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
        return Interactions(m, z["user_ids"], z["artist_ids"])


def load_fitted(run_dir: str | Path) -> tuple[Any, Interactions, dict[str, Any]]:
    run = Path(run_dir)
    cfg_path = RunDir(run).config
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found; train with --interactions first")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("kind") != "interactions":
        raise ValueError(
            f"{run} is not a bring-your-own-data run (config kind {cfg.get('kind')!r})"
        )
    inter = load_interactions(RunDir(run).interactions)
    name = cfg.get("model_name", cfg.get("model"))
    cfg["model"] = name
    if is_plugin(name):
        model = load_fitted_plugin(name, run, inter)
    else:
        cls: Any = baseline_class(cfg["model"])  # a concrete baseline with its own cfg
        with np.load(RunDir(run).model, allow_pickle=False) as z:
            state = {k: z[k] for k in z.files}
        model = cls(cls().cfg.__class__(**cfg["model_config"])).load_state(state, inter.binary())
    return model, inter, cfg


def recommend_run(run_dir: str | Path, k: int, user_ids: list[str] | None = None) -> pa.Table:
    """Top-``k`` per user (all training users, or ``user_ids``), training artists excluded."""
    model, inter, _ = load_fitted(run_dir)
    if user_ids is None:
        rows = np.arange(inter.shape[0])
    else:
        rows = pd.Index(inter.user_ids).get_indexer(np.asarray(user_ids, dtype=str))
        if (rows < 0).any():
            unknown = np.asarray(user_ids)[rows < 0][:5].tolist()
            raise ValueError(f"users {unknown} are not in the training interactions")
    idx, scores = model.recommend(rows, k)
    valid = idx >= 0
    return pa.table(
        {
            "user_id": np.repeat(inter.user_ids[rows], valid.sum(axis=1)).astype(str),
            "artist_id": inter.artist_ids[idx[valid]].astype(str),
            "rank": np.broadcast_to(np.arange(1, k + 1, dtype=np.int32), idx.shape)[valid],
            "score": scores[valid].astype(np.float32),
        },
        schema=RECS,
    )


def write_recommendations(table: pa.Table, out: str | Path) -> None:
    write_table(out, table)


def evaluate_run(run_dir: str | Path, test_path: str | Path, k: int = 100) -> dict[str, Any]:
    """Score a run on a test interactions file: full ranking, training artists excluded.

    Test users absent from training are counted (``n_unknown_test_users``) and skipped; test
    artists absent from training stay in |targets| and can never be hit.
    """
    run = Path(run_dir)
    model, inter, cfg = load_fitted(run)
    test = interactions_from_table(read_interactions_file(test_path))
    rows = pd.Index(inter.user_ids).get_indexer(test.user_ids)
    cols = pd.Index(inter.artist_ids).get_indexer(test.artist_ids)
    known = np.flatnonzero(rows >= 0)
    m = test.matrix.tocsr()
    targets = [
        np.where(
            cols[m.indices[m.indptr[u] : m.indptr[u + 1]]] < 0,
            UNKNOWN_TARGET,
            cols[m.indices[m.indptr[u] : m.indptr[u + 1]]],
        )
        for u in known
    ]
    idx, _ = model.recommend(rows[known], k)
    ks = [x for x in DEFAULT_KS if x <= k]
    result = {f"test/{n}": v for n, v in ranking_metrics(idx, targets, ks).items()}
    popularity = np.asarray(inter.binary().sum(axis=0)).ravel()
    cat = catalogue_metrics(idx, popularity, inter.shape[0], ks)
    result.update({f"test/{n}": v for n, v in cat.items()})
    share = float(np.mean(np.concatenate(targets) == UNKNOWN_TARGET)) if targets else 0.0
    summary: dict[str, Any] = {
        "protocol": "holdout-file",
        "split": "test",
        "test": str(Path(test_path).resolve()),
        "n_users": len(rows),
        "n_warm_users": len(known),
        "n_cold_users": int((rows < 0).sum()),
        "cold_artist_target_share": share,
        "models": {cfg["model"]: result},
        "cold_start": {},
        "train_sample": {},
        "segments": {},
        "overfit_flags": {},
    }
    path = RunDir(run).metrics
    existing = json.loads(path.read_text()) if path.is_file() else {}
    existing.update(result)
    existing["evaluation"] = summary
    write_json(path, existing)
    write_report(run, summary)
    return summary
