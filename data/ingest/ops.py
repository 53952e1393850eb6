"""The hot inner steps of ingest (:mod:`data.ingest.job`), each a vectorised replacement of the
obvious per-event Python, with the same results (tests/data/ingest/test_ingest_perf_parts.py):

* :func:`decompress`: one gzip member inflated in one call (ISA-L when installed);
* :func:`first_occurrences`: dedupe by event id within an object, first copy wins;
* :func:`id_hashes`: a stable 64-bit hash per id, for the cross-run id index (``ledger``);
* :class:`Pseudonyms`: HMAC-SHA256 pseudonyms, computed once per distinct user and run;
* :func:`write_lake_file`: the lake's Parquet settings.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from isal import isal_zlib

from core import atomic
from data.schemas import LAKE_EVENTS

# event ids, request ids and tracks are near-unique: dictionary pages only cost time there
_DICTIONARY_COLUMNS = ["event_type", "user_key", "artist_id", "country", "device"]
# min/max statistics only where readers prune on them (time ranges, types); on near-unique ids
# they cost write time and help nobody
_STATISTICS_COLUMNS = ["event_type", "event_ts", "server_ts"]


# pseudonyms are hex digests: LZ4 spends ~12 % of the write on them and saves ~2 % of the bytes
_COMPRESSION = {name: "none" if name == "user_key" else "lz4" for name in LAKE_EVENTS.names}


def write_lake_file(path: Path, table: pa.Table) -> None:
    # LZ4 (raw): about half zstd's CPU at write time for ~1.5x the bytes; every Parquet reader
    # we use (pyarrow, pandas) reads it
    with atomic.atomic_path(path) as tmp:
        pq.write_table(
            table,
            tmp,
            compression=_COMPRESSION,
            use_dictionary=_DICTIONARY_COLUMNS,
            write_statistics=_STATISTICS_COLUMNS,
        )


# ISA-L inflates gzip about twice as fast as zlib, same bytes out (a declared dependency)
_INFLATE_ERROR: type[Exception] = isal_zlib.error  # type: ignore[assignment]  # stub says instance


def decompress(source: str, data: bytes) -> bytes:
    """The object's bytes, gunzipped when ``source`` ends in ``.gz``.

    One gzip member (what the subscriber writes) is inflated directly with ISA-L, without ``gzip``'s Python-level member loop
    and separate CRC pass; anything else (several members, trailing bytes, a truncated or
    corrupt stream) goes through :func:`gzip.decompress`, so results and errors are exactly
    gzip's (``EOFError``, ``gzip.BadGzipFile``, ``zlib.error``).
    """
    if not source.endswith(".gz"):
        return data
    inflater = isal_zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data)
    except (zlib.error, _INFLATE_ERROR):
        out = None
    if out is not None and inflater.eof and not inflater.unused_data:
        return out
    return gzip.decompress(data)


def first_occurrences(ids: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """((N,) bool True where ids[i] appears for the first time, those ids in row order).

    ``dictionary_encode`` numbers values in order of first appearance, so a row is a first
    occurrence exactly when its code exceeds every earlier code, and the dictionary lists
    the first occurrences in row order.
    """
    encoded = ids.dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    first = np.empty(len(codes), dtype=bool)
    if len(codes):
        first[0] = True
        first[1:] = codes[1:] > np.maximum.accumulate(codes)[:-1]
    return first, encoded.dictionary


class Pseudonyms:
    """``data.pii.pseudonymise`` memoised for one run: each account is hashed once.

    HMAC-SHA256 (RFC 2104) with the key schedule done once: the inner and outer SHA-256
    states are copied per id, which gives ``pseudonymise``'s digest at ~40 % of its cost
    (tests check the two agree). Ids already hashed are found with one ``index_in`` per
    object against the run's ids, not a Python lookup per id.
    """

    def __init__(self, key: bytes) -> None:
        self.key = key
        block = hashlib.sha256().block_size
        padded = (hashlib.sha256(key).digest() if len(key) > block else key).ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))
        self._ids = pa.array([], pa.string())  # (U,) every id hashed in this run
        self._keys = pa.array([], pa.string())  # (U,) their pseudonyms

    def _one(self, user_id: str) -> str:
        inner = self._inner.copy()
        inner.update(user_id.encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()[:32]

    def keys(self, user_ids: pa.Array) -> pa.Array:
        """(N,) pseudonyms of (N,) distinct, non-null user ids."""
        pos = pc.index_in(user_ids, value_set=self._ids)
        new = np.flatnonzero(pc.is_null(pos).to_numpy(zero_copy_only=False))
        pos = pc.fill_null(pos, 0).to_numpy(zero_copy_only=False).astype(np.int64)
        if len(new):
            new_ids = user_ids.take(pa.array(new))
            new_keys = pa.array([self._one(u) for u in new_ids.to_pylist()], pa.string())
            pos[new] = len(self._ids) + np.arange(len(new))
            self._ids = pa.concat_arrays([self._ids, new_ids])
            self._keys = pa.concat_arrays([self._keys, new_keys])
        return self._keys.take(pa.array(pos))

    def __call__(self, user_ids: list[str]) -> list[str]:
        distinct = pa.array(user_ids, pa.string()).dictionary_encode()
        return self.keys(distinct.dictionary).take(distinct.indices).to_pylist()


_HASH_MUL = np.uint64(0x100000001B3)  # FNV-1's 64-bit prime: the multiplier of the byte polynomial
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)  # splitmix64


def id_hashes(ids: pa.Array) -> np.ndarray:
    """(N,) uint64: a fixed, vectorised 64-bit hash of each string (no Python per id).

    A polynomial over the UTF-8 bytes (wrapping uint64 arithmetic), then splitmix64's
    finaliser with the length mixed in. Stable across runs and versions (the id index on
    disk depends on it); equal strings hash equal, and unequal ones collide rarely: a hash
    match is only ever a candidate, confirmed by comparing the strings themselves.
    """
    if pa.types.is_large_string(ids.type):
        ids = ids.cast(pa.string())  # event ids are short: 32-bit offsets
    n = len(ids)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    offsets = np.frombuffer(ids.buffers()[1], np.int32, count=n + 1, offset=ids.offset * 4)
    lo, hi = int(offsets[0]), int(offsets[-1])
    raw = np.frombuffer(ids.buffers()[2], np.uint8, count=hi - lo, offset=lo) if hi > lo else None
    lengths = np.diff(offsets)
    width = int(lengths[0])
    with np.errstate(over="ignore"):
        h = np.zeros(n, dtype=np.uint64)
        if raw is not None and width and (lengths == width).all():
            # the common case, ids of one length: one pass per byte position, no gathers
            grid = raw.reshape(n, width)
            for j in range(width):
                h = h * _HASH_MUL + (grid[:, j].astype(np.uint64) + np.uint64(1))
        elif raw is not None:
            # byte b at distance k from its string's end contributes (b + 1) * MUL**k
            dist = np.repeat(offsets[1:] - 1, lengths) - np.arange(lo, hi, dtype=np.int32)
            powers = np.ones(int(lengths.max()), dtype=np.uint64)
            powers[1:] = np.cumprod(np.full(len(powers) - 1, _HASH_MUL, dtype=np.uint64))
            terms = (raw.astype(np.uint64) + np.uint64(1)) * powers[dist]
            nonempty = lengths > 0
            h[nonempty] = np.add.reduceat(terms, (offsets[:-1] - lo)[nonempty])
        h ^= lengths.astype(np.uint64) * _MIX2
        h ^= h >> np.uint64(30)
        h *= _MIX1
        h ^= h >> np.uint64(27)
        h *= _MIX2
        h ^= h >> np.uint64(31)
    return h
