"""Precompute: every user of the online store scored with the bundle, top-100 slates written
to the slate store in one atomic swap. A batch job: FAISS uses all cores."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from core.settings import Settings


@dataclass(frozen=True)
class Precomputed:
    slates: int  # slates written
    users: int  # users read
    bundle_version: str
    seconds: float
    target: str  # the slate store written


def precompute_slates(settings: Settings, users_path: Path, batch: int = 2048) -> Precomputed:
    """Score the users of ``users_path`` (the USER_FEATURES table the features stage
    published online) with ``settings``'s bundle and replace the slate store's contents."""
    import pyarrow.parquet as pq

    from serving.reload import ModelHolder
    from serving.slates import open_slate_store, score_table, slate_blobs

    if not Path(users_path).is_file():
        raise FileNotFoundError(f"no user features at {users_path}; run `tastemaker features`")
    model = ModelHolder(settings.bundles_path, faiss_threads=None).current  # batch: all cores
    users = pq.read_table(users_path)
    store = open_slate_store(settings.slate_store_target, create=True, timeout_s=30.0)
    started = time.perf_counter()
    n = store.replace_all(slate_blobs(score_table(model, users, batch=batch)))
    store.close()
    return Precomputed(
        n, users.num_rows, model.version, time.perf_counter() - started, settings.slate_store_target
    )
