"""Precomputed slates: the codec and the store. Scored by :mod:`serving.precompute` (the
batch side of :mod:`serving.pipeline`), served with one lookup by :mod:`serving.recommender`.

One compact blob per user (:func:`to_blob`, :meth:`Slate.from_blob`):

    bundle version, epoch ms computed, [artist vocab index...], [score...],
    [vocab index of the "because you listen to" artist, or -1...]

Vocab indices are only meaningful for the slate's bundle version; the API serves a slate only when
that is the served bundle and it is younger than ``slate_max_age_s``, else it computes in real time.

Stores (:mod:`core.kv`): SQLite (default ``workspace/online/slates.sqlite``, table ``slates``,
replaced atomically) or Redis (``redis://host:port/db?prefix=P``: versioned hashes
``P:slates:v<n>`` switched by ``P:slates:current``; the earlier single hash ``P:slates`` is
still read until the next precompute replaces it).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain

import numpy as np

from core.kv import KV, open_kv, sqlite_path

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


class SlateStore:
    """Slates (the binary codec above, one blob per ``user_key``) over a :mod:`core.kv` store."""

    def __init__(self, kv: KV) -> None:
        self.kv = kv

    def replace_all(self, batches: Iterable[list[tuple[str, bytes]]]) -> int:
        """Make the (user_key, blob) pairs of ``batches`` the whole content, atomically."""
        return self.kv.replace_all(chain.from_iterable(batches))

    def get(self, user_key: str) -> Slate | None:
        blob = self.kv.get(user_key)
        return Slate.from_blob(blob) if blob is not None else None

    def sample(self, timeout_s: float = 1.0) -> Slate | None:
        blob = self.kv.sample(timeout_s)
        return Slate.from_blob(blob) if blob is not None else None

    def delete(self, user_keys: Iterable[str]) -> int:
        """Remove these listeners' slates (erasure); returns how many were there."""
        return self.kv.delete(user_keys)

    def drop(self) -> None:
        self.kv.drop()

    def close(self) -> None:
        self.kv.close()


def open_slate_store(target: str, create: bool = False, timeout_s: float = 0.05) -> SlateStore:
    """``redis://…?prefix=P`` (default ``tastemaker:slates``) or a SQLite path (table
    ``slates``); a missing SQLite file is refused unless ``create``."""
    try:
        kv = open_kv(
            target,
            table="slates",
            column="s",
            prefix=DEFAULT_PREFIX,
            suffix=":slates",
            legacy_suffix=":slates",
            timeout_s=timeout_s,
            create=create,
            check=False,  # as before: a Redis that is down fails the lookups, not the start
            what="slate store",
        )
    except FileNotFoundError:
        path = sqlite_path(target)
        raise FileNotFoundError(f"no slate store at {path}; run `tastemaker precompute`") from None
    return SlateStore(kv)


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
