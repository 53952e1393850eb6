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
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from core.constants import UNK_INDEX
from data.features.ranker import RANKER_USER_FIELDS
from serving.model import ServingModel
from serving.recommender import EXPLAIN_HISTORY, rerank

log = logging.getLogger("tastemaker.serving")
SLATE_K = 100
MAGIC = b"TS1"
DEFAULT_PREFIX = "tastemaker:slates"


@dataclass(frozen=True)
class Slate:
    version: str
    computed_ms: int
    ids: list[int]  # artist vocab indices, best first
    scores: list[float]
    because: list[int]  # vocab index of the explanation artist, -1 = none

    @classmethod
    def from_blob(cls, blob: bytes) -> Slate:
        if blob[:3] != MAGIC:
            raise ValueError("not a tastemaker slate blob")
        nv = blob[3]
        version = blob[4 : 4 + nv].decode()
        computed_ms, n = struct.unpack_from("<qH", blob, 4 + nv)
        arrays = np.frombuffer(blob, dtype="<i4", count=3 * n, offset=14 + nv).reshape(3, n)
        scores = arrays[1].view("<f4")
        return cls(version, computed_ms, arrays[0].tolist(), scores.tolist(), arrays[2].tolist())


def to_blob(
    version: str, computed_ms: int, ids: np.ndarray, scores: np.ndarray, because: np.ndarray
) -> bytes:
    """The compact binary form (~1.2 KB for 100 items; JSON was ~4 KB and spilled SQLite
    pages): magic, version, int64 ms, uint16 n, then int32 ids, float32 scores, int32 because."""
    v = version.encode()
    head = MAGIC + bytes([len(v)]) + v + struct.pack("<qH", computed_ms, len(ids))
    body = np.concatenate(
        [ids.astype("<i4"), scores.astype("<f4").view("<i4"), because.astype("<i4")]
    )
    return head + body.tobytes()


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
) -> Iterator[tuple[str, bytes]]:
    """(user_key, slate blob) for every row of a ``USER_FEATURES`` table that has a history.

    Same steps as the real-time path (``serving.recommender.recommend_from_row``), done per
    batch with array operations: encode, tower, FAISS top-(k + excluded), drop pad/unk and
    followed/seen, explain each pick by the closest of the 20 most recent history artists.
    """
    enc = model.encoder
    now = int(time.time() * 1000)
    cols = ["user_key", "history", "followed", "seen", *enc.segment_fields, *enc.dense_fields]
    if model.ranker is not None:  # the ranker reads more of the row (data.features.ranker)
        cols += [c for c in RANKER_USER_FIELDS if c in users.column_names]
    users = users.select(list(dict.fromkeys(cols)))
    depth = max(k, model.ranker.candidates) if model.ranker is not None else k
    for start in range(0, users.num_rows, batch):
        rows = [r for r in users.slice(start, batch).to_pylist() if r["history"]]
        if not rows:
            continue
        feed = enc.encode(rows)  # the real-time path's encoder: same inputs, same vectors
        vecs = model.session.run(None, feed)[0]  # (B, d)
        excl_lists = [
            [enc.artist_index(a) for a in (r["followed"] or []) + (r["seen"] or [])] for r in rows
        ]
        width = max(1, max(map(len, excl_lists)))
        excl = np.full((len(rows), width), -2, dtype=np.int64)  # (B, E), -2 matches nothing
        for i, lst in enumerate(excl_lists):
            excl[i, : len(lst)] = lst
        fetch = max(1, min(model.index.ntotal, depth + width + 2))
        ids, scores = model.index.search(vecs, fetch)  # (B, F)
        drop = np.asarray((ids <= UNK_INDEX) | (ids[:, :, None] == excl[:, None, :]).any(axis=2))
        order = np.argsort(drop, axis=1, kind="stable")[:, :depth]  # kept first, in score order
        top = np.take_along_axis(ids, order, axis=1)  # (B, depth)
        top_s = np.take_along_axis(scores, order, axis=1)  # (B, depth)
        n_keep = np.minimum((~drop).sum(axis=1), k)  # (B,)
        if model.ranker is not None:  # the real-time path's re-rank (serving.recommender.rerank)
            for i, row in enumerate(rows):
                n = int(min((~drop[i]).sum(), depth))
                pairs = list(zip(top[i, :n].tolist(), top_s[i, :n].tolist(), strict=True))
                picked = rerank(model, row, pairs)
                top[i, :n] = [j for j, _ in picked]
                top_s[i, :n] = [v for _, v in picked]
        top, top_s = top[:, :k], top_s[:, :k]  # (B, k)
        hist = feed["history"][:, :EXPLAIN_HISTORY]  # (B, H) vocab indices, most recent first
        sims = np.einsum(
            "bkd,bhd->bkh", model.artist_vectors[np.maximum(top, 0)], model.artist_vectors[hist]
        )  # (B, k, H)
        sims = np.where(hist[:, None, :] > UNK_INDEX, sims, -np.inf)
        because = np.take_along_axis(hist, sims.argmax(axis=2), axis=1)  # (B, k)
        has_known: np.ndarray = np.asarray(np.asarray(hist > UNK_INDEX).any(axis=1))  # (B,)
        because = np.where(has_known[:, None], because, -1)
        for i, row in enumerate(rows):
            n = int(n_keep[i])
            yield (
                row["user_key"],
                to_blob(model.version, now, top[i, :n], top_s[i, :n], because[i, :n]),
            )


def slate_blobs(slates: Iterable[tuple[str, bytes]], size: int = 5000) -> Iterator[list]:
    """Batches of (user_key, blob) for the stores' ``replace_all``."""
    out: list[tuple[str, bytes]] = []
    for pair in slates:
        out.append(pair)
        if len(out) >= size:
            yield out
            out = []
    if out:
        yield out
