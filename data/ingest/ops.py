"""The hot inner steps of ingest (:mod:`data.ingest.job`), each a vectorised replacement of the
obvious per-event Python, with the same results (tests/data/ingest/test_ingest_perf_parts.py):

* :func:`decompress`: one gzip member inflated in one call (ISA-L when installed);
* :func:`first_occurrences` / :func:`not_seen`: dedupe by event id, first copy wins;
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

# event ids, request ids and tracks are near-unique: dictionary pages only cost time there
_DICTIONARY_COLUMNS = ["event_type", "user_key", "artist_id", "country", "device"]
# min/max statistics only where readers prune on them (time ranges, types); on near-unique ids
# they cost write time and help nobody
_STATISTICS_COLUMNS = ["event_type", "event_ts", "server_ts"]


def write_lake_file(path: Path, table: pa.Table) -> None:
    # LZ4 (raw): about half zstd's CPU at write time for ~1.5x the bytes; every Parquet reader
    # we use (pyarrow, pandas) reads it
    with atomic.atomic_path(path) as tmp:
        pq.write_table(
            table,
            tmp,
            compression="lz4",
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


def not_seen(ids: list[str], seen: set[str]) -> np.ndarray:
    """(N,) bool: ids (already unique) not in ``seen``; adds them all to ``seen``."""
    known = np.fromiter(map(seen.__contains__, ids), dtype=bool, count=len(ids))
    seen.update(ids)
    return ~known


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
