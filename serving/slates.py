"""Precomputed slates: every user's top-100, scored in batch, served with one lookup.

``tastemaker precompute`` scores every user of the online store (the ``USER_FEATURES`` table
the features stage published) with the bundle's ONNX user tower and FAISS index, in batches,
applies the same exclusion (followed, seen) as the real-time path, picks the explanation
artist, and writes one compact blob per user:

    {"v": bundle version, "t": epoch ms computed, "a": [artist vocab index...],
     "s": [score...], "b": [vocab index of the "because you listen to" artist, or -1...]}

Vocab indices are only meaningful for bundle ``v``; the API serves a slate only when ``v`` is
the served bundle and ``t`` is younger than ``slate_max_age_s``, else it computes in real time.

Stores: SQLite (default ``workspace/online/slates.sqlite``, one table, replaced atomically) or
Redis (``redis://host:port/db?prefix=P``: one hash ``P:slates``).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa

from core.constants import UNK_INDEX
from serving.model import ServingModel
from serving.recommender import EXPLAIN_HISTORY

log = logging.getLogger("tastemaker.serving")
SLATE_K = 100
DEFAULT_PREFIX = "tastemaker:slates"


@dataclass(frozen=True)
class Slate:
    version: str
    computed_ms: int
    ids: list[int]  # artist vocab indices, best first
    scores: list[float]
    because: list[int]  # vocab index of the explanation artist, -1 = none

    @classmethod
    def from_blob(cls, blob: bytes | str) -> Slate:
        d = orjson.loads(blob)
        return cls(d["v"], int(d["t"]), d["a"], d["s"], d["b"])


class SqliteSlateStore:
    def __init__(self, path: str | Path, create: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise FileNotFoundError(f"no slate store at {self.path}; run `tastemaker precompute`")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=5, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS slates (user_key TEXT PRIMARY KEY, s BLOB)")
        self._db.commit()

    def replace_all(self, batches: Iterable[list[tuple[str, bytes]]]) -> int:
        n = 0
        with self._db:  # one transaction: readers see the old or the new slates, not a mix
            self._db.execute("DELETE FROM slates")
            for batch in batches:
                self._db.executemany("INSERT INTO slates VALUES (?, ?)", batch)
                n += len(batch)
        return n

    def get(self, user_key: str) -> Slate | None:
        hit = self._db.execute("SELECT s FROM slates WHERE user_key = ?", (user_key,)).fetchone()
        return Slate.from_blob(hit[0]) if hit else None

    def close(self) -> None:
        self._db.close()


class RedisSlateStore:
    def __init__(self, url: str, timeout_s: float = 0.05) -> None:
        import redis

        base, _, prefix = url.partition("?prefix=")
        self._r = redis.Redis.from_url(
            base, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self.key = f"{prefix or DEFAULT_PREFIX}:slates"

    def replace_all(self, batches: Iterable[list[tuple[str, bytes]]]) -> int:
        tmp, n = f"{self.key}:building", 0
        self._r.unlink(tmp)
        for batch in batches:
            self._r.hset(tmp, mapping=dict(batch))
            n += len(batch)
        if n:
            self._r.rename(tmp, self.key)  # the atomic switch
        return n

    def get(self, user_key: str) -> Slate | None:
        blob = self._r.hget(self.key, user_key)
        return Slate.from_blob(blob) if blob is not None else None  # type: ignore[arg-type]

    def close(self) -> None:
        self._r.close()


SlateStore = SqliteSlateStore | RedisSlateStore


def open_slate_store(target: str, create: bool = False, timeout_s: float = 0.05) -> SlateStore:
    if target.startswith(("redis://", "rediss://", "unix://")):
        return RedisSlateStore(target, timeout_s)
    return SqliteSlateStore(target.removeprefix("sqlite:///"), create=create)


def score_table(
    model: ServingModel, users: pa.Table, k: int = SLATE_K, batch: int = 2048
) -> Iterator[tuple[str, Slate]]:
    """(user_key, slate) for every row of a ``USER_FEATURES`` table that has a history."""
    enc = model.encoder
    now = int(time.time() * 1000)
    cols = ["user_key", "history", "followed", "seen", *enc.segment_fields, *enc.dense_fields]
    users = users.select(list(dict.fromkeys(cols)))
    for start in range(0, users.num_rows, batch):
        rows = [r for r in users.slice(start, batch).to_pylist() if r["history"]]
        if not rows:
            continue
        feed = enc.encode(rows)  # the real-time path's encoder: same inputs, same vectors
        vecs = model.session.run(None, feed)[0]  # (B, d)
        excl = [
            {enc.artist_index(a) for a in (r["followed"] or []) + (r["seen"] or [])} for r in rows
        ]
        fetch = min(model.index.ntotal, k + max(map(len, excl)) + 2)
        ids, scores = model.index.search(vecs, max(fetch, 1))  # (B, fetch)
        hist = feed["history"]  # (B, L) vocab indices, most recent first
        for i, row in enumerate(rows):
            row_ids = ids[i]  # (fetch,)
            keep = (row_ids > UNK_INDEX) & ~np.isin(row_ids, np.fromiter(excl[i], np.int64))
            top, top_s = row_ids[keep][:k], scores[i][keep][:k]  # (k,)
            h = hist[i][hist[i] > UNK_INDEX][:EXPLAIN_HISTORY]  # (h,)
            if len(h) and len(top):
                sims = model.artist_vectors[top] @ model.artist_vectors[h].T  # (k, h)
                because = h[sims.argmax(axis=1)].tolist()
            else:
                because = [-1] * len(top)
            yield row["user_key"], Slate(model.version, now, top.tolist(), top_s.tolist(), because)


def slate_blobs(slates: Iterable[tuple[str, Slate]], size: int = 5000) -> Iterator[list]:
    out: list[tuple[str, bytes]] = []
    for key, s in slates:
        out.append(
            (
                key,
                orjson.dumps(
                    {"v": s.version, "t": s.computed_ms, "a": s.ids, "s": s.scores, "b": s.because}
                ),
            )  # fmt: skip
        )
        if len(out) >= size:
            yield out
            out = []
    if out:
        yield out
