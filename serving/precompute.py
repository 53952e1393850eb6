"""Precompute: every user's top-100 slate, scored in batches by the one pipeline.

``tastemaker precompute`` reads the ``USER_FEATURES`` table the features stage published,
runs :func:`serving.pipeline.score_rows` on batches of rows (the same steps, the same answer
as the real-time path) and writes one slate blob per user with history into a slate store
(:mod:`serving.slates`). The arrows run one way: precompute -> pipeline -> slates -> core.kv.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from core.settings import Settings
from core.urls import redact_url
from data.features.candidates import SEGMENT_PRIORITY
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
    if model.ranker is not None or model.two_stage is not None:
        # the rankers read more of the row (data.features.ranker), the trending source its
        # segments (data.features.candidates)
        extra = [*RANKER_USER_FIELDS, *SEGMENT_PRIORITY]
        cols += [c for c in extra if c in users.column_names]
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


@dataclass(frozen=True)
class Precomputed:
    slates: int  # slates written
    users: int  # users read
    bundle_version: str
    seconds: float
    target: str  # the slate store written (credentials redacted)


def precompute_slates(settings: Settings, users_path: Path, batch: int = 2048) -> Precomputed:
    """Score the users of ``users_path`` (the USER_FEATURES table the features stage
    published online) with ``settings``'s bundle (what ``CURRENT`` names) and replace that
    bundle's slate store (:func:`serving.slates.open_slate_store` with its version). With a
    bundle store, its current bundle is pulled first."""
    from serving.bundle_store import start_mirror

    start_mirror(settings)
    return precompute_bundle(settings.bundles_path, users_path, settings.slate_store_target, batch)


def precompute_bundle(
    bundle: Path, users_path: Path, slate_target: str, batch: int = 2048
) -> Precomputed:
    """Score every user of ``users_path`` with ``bundle`` (a bundles dir: what ``CURRENT``
    names; or one version folder, published or not yet current) into that version's store."""
    import pyarrow.parquet as pq

    from serving.reload import ModelHolder
    from serving.slates import open_slate_store

    if not Path(users_path).is_file():
        raise FileNotFoundError(f"no user features at {users_path}; run `tastemaker features`")
    model = ModelHolder(bundle, faiss_threads=None).current  # batch: all cores
    users = pq.read_table(users_path)
    store = open_slate_store(slate_target, create=True, timeout_s=30.0, version=model.version)
    started = time.perf_counter()
    try:
        n = precompute(model, users, store, batch)
    finally:
        store.close()
    return Precomputed(
        n, users.num_rows, model.version, time.perf_counter() - started, redact_url(slate_target)
    )


@dataclass(frozen=True)
class Warmed:
    precomputed: Precomputed
    previous: str | None  # the version CURRENT named before the switch
    dropped: list[str]  # versions whose slates were removed after it


def warm_and_publish(
    bundles_dir: Path,
    version: str,
    users_path: Path,
    slate_target: str,
    batch: int = 2048,
    grace_s: float = 0.0,
    bundle_store_url: str | None = None,
) -> Warmed:
    """Promote ``version`` (published in ``bundles_dir`` but not yet current) the warm way:

    1. precompute every user's slates for it, into its own store (the old bundle's slates
       keep serving meanwhile);
    2. only then move ``CURRENT`` (a replica swaps bundle and slates together: its requests
       read the slates of the bundle they serve);
    3. after ``grace_s`` (replicas notice ``CURRENT`` within their reload interval) remove the
       slates of every other bundle but the one just replaced, which replicas that have not
       swapped yet still read; the next promotion removes it.

    A failed precompute raises before step 2: ``CURRENT`` has not moved, the old bundle and its
    slates keep serving, and the half-written store is never read (it is dropped).

    ``bundle_store_url``: the object store replicas pull from (:mod:`serving.bundle_store`):
    the version is uploaded first and the store's ``CURRENT`` moves with the local one."""
    from data.ingest.objectstore import ObjectStore
    from index.bundle import current_version, set_current
    from serving.bundle_store import push_bundle, set_remote_current
    from serving.slates import drop_slates, drop_version

    previous = current_version(bundles_dir)
    store = ObjectStore(bundle_store_url) if bundle_store_url else None
    if store is not None:
        push_bundle(store, Path(bundles_dir) / version)  # not current yet: nobody pulls it
    try:
        done = precompute_bundle(Path(bundles_dir) / version, users_path, slate_target, batch)
    except BaseException:
        drop_version(slate_target, version)
        raise
    if done.bundle_version != version:
        raise RuntimeError(f"bundle folder {version} holds version {done.bundle_version}")
    set_current(bundles_dir, version)
    if store is not None:
        set_remote_current(store, version)
    if grace_s > 0:
        time.sleep(grace_s)
    keep = {version} | ({previous} if previous else set())
    return Warmed(done, previous, drop_slates(slate_target, keep))
