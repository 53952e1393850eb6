"""The online feature store: the latest ``USER_FEATURES`` row per user, one lookup away.

A row is a plain dict with the ``USER_FEATURES`` column names: lists as lists, floats as
floats (float32 values, exact after a JSON round trip), ``as_of`` as **epoch milliseconds**
(int). :func:`rows_from_table` and :func:`table_from_rows` convert between a table and rows
losslessly, so the row served online equals the offline one bit for bit. Each row is stored as
one JSON blob (orjson) under its ``user_key``, in a :mod:`core.kv` store (the one key-value
layer, shared with the precomputed slates):

* SQLite (default ``workspace/online/users.sqlite``): table ``user_features (user_key, row)``;
* Redis (``redis://host:port/db?prefix=P``, default ``tastemaker:users``): one hash per
  snapshot version, ``P:v<n>``, switched atomically by ``P:current``.

:class:`OnlineStore` is that encoding: ``replace_all`` swaps the whole snapshot atomically
(readers see the old or the new snapshot, never a mix); :func:`publish_table` is its fast,
column-wise form for a ``USER_FEATURES`` table (:func:`publish_file` for a Parquet file),
encoded a batch at a time and streamed into that swap.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.kv import KV, open_kv
from data.schemas import USER_FEATURES

log = logging.getLogger("tastemaker.data")
_BATCH = 5_000  # rows per Arrow batch when decoding a table
PUBLISH_ROWS = 50_000  # rows encoded at once when publishing (about 100 MB of JSON at most)
DEFAULT_PREFIX = "tastemaker:users"


def rows_from_table(table: pa.Table) -> Iterator[dict[str, Any]]:
    """``USER_FEATURES`` table -> row dicts (``as_of`` in epoch ms), batch by batch."""
    missing = [n for n in USER_FEATURES.names if n not in table.column_names]
    if missing:
        raise ValueError(f"user features table lacks columns {missing}")
    table = table.select(USER_FEATURES.names).cast(USER_FEATURES)
    table = table.set_column(
        USER_FEATURES.get_field_index("as_of"), "as_of", table["as_of"].cast(pa.int64())
    )
    for batch in table.to_batches(max_chunksize=_BATCH):
        yield from batch.to_pylist()


def table_from_rows(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Inverse of :func:`rows_from_table`."""
    rows = list(rows)
    cols = {n: [r[n] for r in rows] for n in USER_FEATURES.names}
    as_of = pa.array(cols.pop("as_of"), pa.int64()).cast(USER_FEATURES.field("as_of").type)
    arrays = {n: pa.array(v, USER_FEATURES.field(n).type) for n, v in cols.items()}
    arrays["as_of"] = as_of
    return pa.table({n: arrays[n] for n in USER_FEATURES.names}, schema=USER_FEATURES)


def _needs_escape(values: pa.Array) -> bool:
    return bool(pc.any(pc.match_substring_regex(values, '["\\\\]')).as_py())


def _json_strings(values: pa.Array) -> pa.Array:
    """Strings -> JSON string literals (quoted, escaped); null -> null."""
    esc = values
    if _needs_escape(values):
        esc = pc.replace_substring(values, "\\", "\\\\")
        esc = pc.replace_substring(esc, '"', '\\"')
    return pc.binary_join_element_wise('"', esc, '"', "")


def _json_column(col: pa.Array) -> pa.Array:
    if pa.types.is_list(col.type):
        inner = col.values
        if pa.types.is_string(inner.type) and not _needs_escape(inner):
            # nothing to escape: quote the joined list once, not every element
            joined = pc.binary_join(pa.ListArray.from_arrays(col.offsets, inner), '","')
            quoted = pc.binary_join_element_wise('["', joined, '"]', "")
            return pc.if_else(pc.equal(pc.list_value_length(col), 0), "[]", quoted)
        lit = _json_strings(inner) if pa.types.is_string(inner.type) else inner.cast(pa.string())
        joined = pc.binary_join(pa.ListArray.from_arrays(col.offsets, lit), ",")
        return pc.binary_join_element_wise("[", joined, "]", "")
    if pa.types.is_string(col.type):
        return _json_strings(col).fill_null("null")
    return col.cast(pa.string()).fill_null("null")


def json_blobs(table: pa.Table) -> tuple[pa.Array, pa.Array] | None:
    """A ``USER_FEATURES`` table -> (user keys, one JSON object per row), built column-wise
    by Arrow instead of per row in Python; None when a string holds control characters
    (then the per-row orjson path is used). Floats are written in shortest float32 form."""
    table = table.select(USER_FEATURES.names).cast(USER_FEATURES).combine_chunks()
    parts: list[Any] = []
    for i, name in enumerate(USER_FEATURES.names):
        col = table[name].chunk(0) if table[name].num_chunks else pa.array([], table[name].type)
        if name == "as_of":
            col = col.cast(pa.int64())
        for arr in (col.values if pa.types.is_list(col.type) else col,):
            if (
                pa.types.is_string(arr.type)
                and pc.any(pc.match_substring_regex(arr, "[\\x00-\\x1f]")).as_py()
            ):
                return None
        parts += ["{" if i == 0 else ",", f'"{name}":', _json_column(col)]
    parts.append("}")
    n = table.num_rows
    if not n:
        return table["user_key"].combine_chunks(), pa.array([], pa.string())
    blobs = pc.binary_join_element_wise(*parts, "")
    return table["user_key"].chunk(0), blobs


def _pairs(batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[str, str | bytes]]:
    """``USER_FEATURES`` batches -> (user_key, JSON) pairs, one batch encoded at a time
    (column-wise; per row with orjson for a batch :func:`json_blobs` declines)."""
    for batch in batches:
        table = pa.Table.from_batches([batch])
        enc = json_blobs(table)
        if enc is None:
            yield from _blobs(rows_from_table(table))
            continue
        keys, blobs = enc
        yield from zip(keys.to_pylist(), blobs.to_pylist(), strict=True)


def publish_batches(store: OnlineStore, batches: Iterable[pa.RecordBatch]) -> int:
    """Replace the store's content with a ``USER_FEATURES`` table given as batches, streamed:
    memory holds one batch and its JSON, never the table's (a million listeners' rows and
    their JSON are gigabytes), and the store still switches atomically."""
    return store.replace_pairs(_pairs(batches))


def publish_table(store: OnlineStore, table: pa.Table) -> int:
    """Replace the store's content with a ``USER_FEATURES`` table (fast, column-wise)."""
    return publish_batches(store, table.to_batches(max_chunksize=PUBLISH_ROWS))


def publish_file(store: OnlineStore, path: str | Path) -> int:
    """Replace the store's content with a ``USER_FEATURES`` Parquet file, read
    :data:`PUBLISH_ROWS` rows at a time."""
    return publish_batches(store, pq.ParquetFile(path).iter_batches(PUBLISH_ROWS))


def _blobs(rows: Iterable[dict[str, Any]]) -> Iterator[tuple[str, bytes]]:
    for r in rows:
        key = r.get("user_key")
        if not isinstance(key, str) or not key:
            raise ValueError(f"online row without a string user_key: {str(r)[:80]}")
        yield key, orjson.dumps(r)


def _row(blob: bytes | None) -> dict[str, Any] | None:
    return orjson.loads(blob) if blob is not None else None


class OnlineStore:
    """Feature rows (JSON, one blob per ``user_key``) over a :mod:`core.kv` store."""

    def __init__(self, kv: KV) -> None:
        self.kv = kv

    @property
    def target(self) -> str:
        return self.kv.target

    def put_many(self, rows: Iterable[dict[str, Any]]) -> int:
        """Insert or overwrite rows (into the current snapshot)."""
        return self.kv.put_many(_blobs(rows))

    def replace_all(self, rows: Iterable[dict[str, Any]]) -> int:
        """Make ``rows`` the whole content, atomically."""
        return self.kv.replace_all(_blobs(rows))

    def replace_pairs(self, pairs: Iterable[tuple[str, str | bytes]]) -> int:
        """Like :meth:`replace_all` with rows already encoded as (user_key, JSON)."""
        return self.kv.replace_all(pairs)

    def get(self, user_key: str) -> dict[str, Any] | None:
        return _row(self.kv.get(user_key))

    def get_many(self, user_keys: Iterable[str]) -> list[dict[str, Any] | None]:
        return [_row(b) for b in self.kv.get_many(user_keys)]

    def sample(self, timeout_s: float = 1.0) -> dict[str, Any] | None:
        """One stored row read fresh, decoded (None when empty); for health checks. Raises
        the backend's error or ``orjson.JSONDecodeError`` on a corrupt store."""
        return _row(self.kv.sample(timeout_s))

    def __len__(self) -> int:
        return len(self.kv)

    def delete(self, user_keys: Iterable[str]) -> int:
        """Remove these listeners' rows (erasure); returns how many were there."""
        return self.kv.delete(user_keys)

    def drop(self) -> None:
        """Delete every row (tests, decommissioning)."""
        self.kv.drop()

    def close(self) -> None:
        self.kv.close()


def open_online_store(
    url_or_path: str | Path,
    timeout_s: float | None = None,
    create: bool = True,
    check: bool = True,
) -> OnlineStore:
    """``redis://host:port/db[?prefix=...]`` (default prefix ``tastemaker:users``),
    ``rediss://``, ``unix://`` -> Redis; ``sqlite:///path`` or a path -> SQLite (table
    ``user_features``). See :func:`core.kv.open_kv` for ``timeout_s``/``create``/``check``."""
    kv = open_kv(
        url_or_path,
        table="user_features",
        column="row",
        prefix=DEFAULT_PREFIX,
        timeout_s=timeout_s,
        create=create,
        check=check,
        what="online store",
    )
    return OnlineStore(kv)
