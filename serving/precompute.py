"""Precompute: every user's top-100 slate, scored in batches by the one pipeline.

``tastemaker precompute`` reads the ``USER_FEATURES`` table the features stage published,
runs :func:`serving.pipeline.score_rows` on batches of rows (the same steps, the same answer
as the real-time path) and writes one slate blob per user with history into a slate store
(:mod:`serving.slates`). The arrows run one way: precompute -> pipeline -> slates -> core.kv.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from data.features.ranker import RANKER_USER_FIELDS
from serving.model import ServingModel
from serving.pipeline import score_rows
from serving.slates import SLATE_K, SlateStore, slate_blobs, to_blob


def score_table(
    model: ServingModel, users: pa.Table, k: int = SLATE_K, batch: int = 2048
) -> Iterator[tuple[str, bytes]]:
    """(user_key, slate blob) for every row of a ``USER_FEATURES`` table that has a history."""
    enc = model.encoder
    now = int(time.time() * 1000)
    cols = ["user_key", "history", "followed", "seen", *enc.segment_fields, *enc.dense_fields]
    if model.ranker is not None:  # the ranker reads more of the row (data.features.ranker)
        cols += [c for c in RANKER_USER_FIELDS if c in users.column_names]
    users = users.select(list(dict.fromkeys(cols)))
    for start in range(0, users.num_rows, batch):
        rows = users.slice(start, batch).to_pylist()
        for row, picks in zip(rows, score_rows(model, rows, k), strict=True):
            if picks is None:  # no history: served from trending, no slate
                continue
            yield (
                row["user_key"],
                to_blob(
                    model.version,
                    now,
                    np.array(picks.ids, dtype=np.int64),
                    np.array(picks.scores, dtype=np.float32),
                    np.array(picks.because, dtype=np.int64),
                ),
            )


def precompute(model: ServingModel, users: pa.Table, store: SlateStore, batch: int = 2048) -> int:
    """Score every user of ``users`` and replace the store's slates with them (atomically)."""
    return store.replace_all(slate_blobs(score_table(model, users, batch=batch)))
