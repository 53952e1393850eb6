"""A benchmark peer as the served system: fitted, its lists precomputed, published as a bundle.

When the gate finds the best benchmark peer (ItemKNN, EASE or ALS with its tuned params) ahead
of the day's two-tower and two-stage system (``jobs.daily.publish``), that peer serves:

1. it is fitted on every week of the examples (``evaluation.temporal.examples_interactions``,
   train + valid + test: what the features stage knows of each listener, as the gate fitted
   it on the weeks before its holdout);
2. its top-``SLATE_K`` for every listener of the features stage with a history is ranked
   (the peer's own ``recommend``, seen artists excluded), followed and seen artists of the
   listener's row and artists outside the run's vocabulary dropped;
3. the lists are encoded as slates (:mod:`serving.slates`, scored for the new bundle's version)
   into ``index.PEER_SLATES_FILE`` and published with the run's files
   (``training.export.export_bundle(peer=...)``), checksummed like the rest.

The API answers a listener with their slate (:mod:`serving.peer`); one without a slate gets
trending for their segment.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.constants import UNK_INDEX
from core.workspace import RunDir, Workspace
from data.features.vocab import FeatureVocabs, Vocab
from data.schemas import PEER_SLATES, SPLITS
from serving.pipeline import NO_REASON, exclusions
from serving.slates import SLATE_K, to_blob

log = logging.getLogger("tastemaker.jobs")


def peer_slates(
    ws: Workspace,
    model: str,
    params: Mapping[str, Any] | None,
    vocab: Vocab,
    version: str,
    k: int = SLATE_K,
) -> tuple[pa.Table, dict[str, Any]]:
    """(``PEER_SLATES`` rows, the manifest's "peer" section): ``model`` fitted on every week of
    the examples, its top-``k`` for each listener of the features stage with a history and a
    row in the fit, as slates of bundle ``version`` (ids: ``vocab`` indices)."""
    from evaluation.registry import make_recommender
    from evaluation.temporal import examples_interactions

    started = time.perf_counter()
    data = examples_interactions(ws, SPLITS)
    peer = make_recommender(model, params).fit(data)
    users = pq.read_table(
        ws.feature_dir.user_features, columns=["user_key", "history", "followed", "seen"]
    ).to_pylist()
    users = [u for u in users if u["history"]]
    rows = pd.Index(data.user_ids).get_indexer([u["user_key"] for u in users])
    listeners = [(u, int(r)) for u, r in zip(users, rows, strict=True) if r >= 0]
    vocab_of = vocab.encode(list(data.artist_ids))  # (A,) the bundle's index of each column
    known = vocab_of > UNK_INDEX
    # the peer excludes the artists of its matrix row; the lists also drop the row's other
    # exclusions and the artists the bundle cannot name, so fetch past those
    extra = max((len(exclusions(u)) for u, _ in listeners), default=0)
    fetch = min(len(data.artist_ids), k + extra + int((~known).sum()))
    now = int(time.time() * 1000)
    keys, blobs = [], []
    for start in range(0, len(listeners), 1024):
        part = listeners[start : start + 1024]
        cols, scores = peer.recommend(np.array([r for _, r in part], np.int64), fetch)
        for (user, _), c, s in zip(part, cols, scores, strict=True):
            drop = exclusions(user)
            ok = [j for j in range(len(c)) if c[j] >= 0 and known[c[j]]]
            ok = [j for j in ok if data.artist_ids[c[j]] not in drop][:k]
            ids = vocab_of[c[ok]]
            keys.append(user["user_key"])
            blobs.append(to_blob(version, now, ids, s[ok], np.full(len(ok), NO_REASON, np.int64)))
    table = pa.table({"user_key": keys, "slate": blobs}, schema=PEER_SLATES)
    section = {
        "model": model,
        "params": dict(params or {}),
        "tuned": bool(params),
        "k": k,
        "listeners": len(keys),
        "without_slate": len(users) - len(keys),
        "fitted_on": list(SPLITS),
        "seconds": round(time.perf_counter() - started, 2),
    }
    log.info(
        "peer %s: %d listeners' top-%d as slates (%d with a history but no row: trending)",
        model,
        len(keys),
        k,
        section["without_slate"],
    )
    return table, section


def export_peer_bundle(
    ws: Workspace,
    run_dir: Path,
    model: str,
    params: Mapping[str, Any] | None,
    make_current: bool = True,
) -> Path:
    """Publish ``model`` (with ``params``) as a bundle served through its precomputed slates,
    beside ``run_dir``'s files (catalogue, trending, the vectors that explain its picks);
    returns the bundle's folder."""
    from index.bundle import new_version
    from training.export import export_bundle

    version = new_version()
    vocab = FeatureVocabs.from_json(json.loads(RunDir(run_dir).vocab.read_text())).artists
    table, section = peer_slates(ws, model, params, vocab, version)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return export_bundle(
        ws, run_dir, make_current=make_current, peer=(buf.getvalue(), section), version=version
    )
