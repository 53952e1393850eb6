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

Per bundle (:class:`BundleSlates`, what the service reads): the slates of bundle ``V`` live in
their own store, ``<stem>.V.sqlite`` beside the SQLite target or the Redis namespace
``P:slates@V``. A promotion fills the new bundle's store *before* ``CURRENT`` moves
(:func:`serving.precompute.warm_and_publish`), so a request that reads the new bundle finds its
slates, and one still on the old bundle finds the old ones: bundle and slates switch together.
The unversioned store above is still read for a bundle that has no store of its own.
"""

from __future__ import annotations

import logging
import re
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from core.kv import KV, is_redis, open_kv, redis_target, sqlite_path

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

    def lookup(self, user_key: str, version: str) -> Slate | None:
        """The user's slate (whatever bundle it was scored for; the caller checks)."""
        return self.get(user_key)

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


_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")


def _check_version(version: str) -> str:
    if not _VERSION.match(version):
        raise ValueError(f"bundle version {version!r} cannot name a slate store")
    return version


def version_path(target: str, version: str) -> Path:
    """The SQLite file of bundle ``version``'s slates, beside ``target``'s file."""
    path = sqlite_path(target, "slate store")
    return path.with_name(f"{path.stem}.{_check_version(version)}{path.suffix or '.sqlite'}")


def open_slate_store(
    target: str, create: bool = False, timeout_s: float = 0.05, version: str | None = None
) -> SlateStore:
    """``redis://…?prefix=P`` (default ``tastemaker:slates``) or a SQLite path (table
    ``slates``); a missing SQLite file is refused unless ``create``. ``version``: the store of
    that bundle's slates (namespace ``P:slates@V``, file ``<stem>.V.sqlite``)."""
    if version is not None and not is_redis(target):
        target = str(version_path(target, version))
    suffix = ":slates" if version is None else f":slates@{_check_version(version)}"
    try:
        kv = open_kv(
            target,
            table="slates",
            column="s",
            prefix=DEFAULT_PREFIX,
            suffix=suffix,
            legacy_suffix=":slates" if version is None else "",
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


def slate_versions(target: str) -> list[str]:
    """The bundle versions that have a slate store of their own at ``target``."""
    if is_redis(target):
        import redis

        url, given = redis_target(target)
        head = f"{given or DEFAULT_PREFIX}:slates@"
        r = redis.Redis.from_url(url)
        try:
            keys = {k.decode()[len(head) :].split(":", 1)[0] for k in r.scan_iter(f"{head}*")}
        finally:
            r.close()
        return sorted(keys)
    path = sqlite_path(target, "slate store")
    stem, suffix = f"{path.stem}.", path.suffix or ".sqlite"
    if not path.parent.is_dir():
        return []
    return sorted(
        p.name[len(stem) : -len(suffix)]
        for p in path.parent.iterdir()
        if p.name.startswith(stem) and p.name.endswith(suffix) and len(p.name) > len(stem + suffix)
    )


def drop_version(target: str, version: str) -> None:
    """Delete bundle ``version``'s own slate store (missing: nothing to do)."""
    if is_redis(target):
        store = open_slate_store(target, timeout_s=30.0, version=version)
        try:
            store.drop()
        finally:
            store.close()
        return
    path = version_path(target, version)
    for extra in ("", "-wal", "-shm"):  # open readers keep their (unlinked) inode
        path.with_name(path.name + extra).unlink(missing_ok=True)


def drop_slates(target: str, keep: Iterable[str]) -> list[str]:
    """Delete the per-bundle slate stores of every version not in ``keep`` (and the
    unversioned store, which the per-bundle ones replace); the dropped versions."""
    keep = set(keep)
    doomed = [v for v in slate_versions(target) if v not in keep]
    for v in doomed:
        drop_version(target, v)
    if is_redis(target):
        legacy = open_slate_store(target, timeout_s=30.0)
        try:
            legacy.drop()
        finally:
            legacy.close()
    else:
        path = sqlite_path(target, "slate store")
        for extra in ("", "-wal", "-shm"):
            path.with_name(path.name + extra).unlink(missing_ok=True)
    if doomed:
        log.info("dropped the slates of bundle(s) %s", ", ".join(doomed))
    return doomed


class BundleSlates:
    """The service's view: for each request, the slates of the bundle that request serves.

    One store per bundle version, opened on first use; a version without a store of its own
    (not precomputed, or precomputed the earlier way) reads the unversioned store, whose blobs
    name their version, so stale ones are still recognised. A missing store is looked for
    again every ``retry_s`` (a precompute may create it later). Only the two most recently
    used versions stay open: a swap keeps the old bundle's store for the requests still on it.
    """

    def __init__(
        self, target: str, timeout_s: float = 0.05, retry_s: float = 5.0, cooldown_s: float = 1.0
    ) -> None:
        if not is_redis(target):
            sqlite_path(target, "slate store")  # a bad URL fails at start, not per request
        self.target = target
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.cooldown_s = cooldown_s  # after a failed lookup, skip the store this long
        self._down_until = 0.0
        self._stores: dict[str, tuple[SlateStore | None, float]] = {}
        self._legacy: tuple[SlateStore | None, float] = (None, -1e18)

    def _open(self, version: str | None) -> SlateStore | None:
        try:
            store = open_slate_store(self.target, timeout_s=self.timeout_s, version=version)
        except FileNotFoundError:
            return None
        if version is None or not is_redis(self.target):
            return store
        try:
            present = len(store.kv) > 0
        except Exception:  # Redis down: look again after retry_s
            present = False
        if not present:
            store.close()
            return None
        return store

    def store(self, version: str) -> SlateStore | None:
        """``version``'s own store, else the unversioned one, else None."""
        now = time.monotonic()
        store, checked = self._stores.get(version, (None, -1e18))
        if store is None and now - checked >= self.retry_s:
            store = self._open(version)
            self._stores.pop(version, None)
            self._stores[version] = (store, now)
            while len(self._stores) > 2:  # keep the served version and the one before
                old = next(iter(self._stores))
                dropped, _ = self._stores.pop(old)
                if dropped is not None:
                    dropped.close()
        if store is not None:
            return store
        legacy, checked = self._legacy
        if legacy is None and now - checked >= self.retry_s:
            legacy = self._open(None)
            self._legacy = (legacy, now)
        return legacy

    def lookup(self, user_key: str, version: str) -> Slate | None:
        """The user's slate from ``version``'s store. A failure raises and the store is then
        skipped (None, at no cost) for ``cooldown_s``: a Redis that hangs costs one timeout
        per cool-down, not one per request."""
        if time.monotonic() < self._down_until:
            return None
        store = self.store(version)
        if store is None:
            return None
        try:
            return store.get(user_key)
        except Exception:
            self._down_until = time.monotonic() + self.cooldown_s
            raise

    def close(self) -> None:
        for store, _ in self._stores.values():
            if store is not None:
                store.close()
        self._stores.clear()
        if self._legacy[0] is not None:
            self._legacy[0].close()
        self._legacy = (None, -1e18)
