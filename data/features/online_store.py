"""The online feature store: the latest ``USER_FEATURES`` row per user, one lookup away.

A row is a plain dict with the ``USER_FEATURES`` column names: lists as lists, floats as
floats (float32 values, exact after a JSON round trip), ``as_of`` as **epoch milliseconds**
(int). :func:`rows_from_table` and :func:`table_from_rows` convert between a table and rows
losslessly, so the row served online equals the offline one bit for bit. Each row is stored as
one JSON blob (orjson) under its ``user_key``.

* :class:`SqliteOnlineStore` (default ``workspace/online/users.sqlite``): WAL mode, one
  primary-key lookup per ``get``; :meth:`replace_all` swaps the whole snapshot in one
  transaction, so readers see the old or the new snapshot, never a mix.
* :class:`RedisOnlineStore`: one hash per snapshot version (``<prefix>:v<n>``); ``replace_all``
  fills a new version with pipelined ``HSET`` and then switches ``<prefix>:current`` in one
  ``SET``; ``get`` is a single server-side script (read version, ``HGET``), one round trip.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from data.schemas import USER_FEATURES

log = logging.getLogger("tastemaker.data")
_BATCH = 5_000


class OnlineStore(Protocol):
    def put_many(self, rows: Iterable[dict[str, Any]]) -> int: ...
    def replace_all(self, rows: Iterable[dict[str, Any]]) -> int: ...
    def replace_pairs(self, pairs: Iterable[tuple[str, str | bytes]]) -> int: ...
    def get(self, user_key: str) -> dict[str, Any] | None: ...
    def get_many(self, user_keys: Iterable[str]) -> list[dict[str, Any] | None]: ...
    def sample(self, timeout_s: float = 1.0) -> dict[str, Any] | None: ...
    def close(self) -> None: ...


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


def publish_table(store: OnlineStore, table: pa.Table) -> int:
    """Replace the store's content with a ``USER_FEATURES`` table (fast, column-wise)."""
    enc = json_blobs(table)
    if enc is None:
        return store.replace_all(rows_from_table(table))
    keys, blobs = enc
    pairs = zip(keys.to_pylist(), blobs.to_pylist(), strict=True)
    return store.replace_pairs(pairs)


def _pairs(pairs: Iterable[tuple[str, str | bytes]]) -> Iterator[list[tuple[str, str | bytes]]]:
    it = iter(pairs)
    while batch := list(islice(it, _BATCH)):
        yield batch


def _blobs(rows: Iterable[dict[str, Any]]) -> Iterator[list[tuple[str, bytes]]]:
    it = iter(rows)
    while batch := list(islice(it, _BATCH)):
        out = []
        for r in batch:
            key = r.get("user_key")
            if not isinstance(key, str) or not key:
                raise ValueError(f"online row without a string user_key: {str(r)[:80]}")
            out.append((key, orjson.dumps(r)))
        yield out


class SqliteOnlineStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS user_features (user_key TEXT PRIMARY KEY, row BLOB NOT NULL)"
        )
        self._db.commit()

    def _write(self, batches: Iterable[list[tuple[str, Any]]], replace: bool) -> int:
        n = 0
        with self._db:  # one transaction: readers (WAL) keep the old snapshot until commit
            if replace:
                self._db.execute("DELETE FROM user_features")
            for batch in batches:
                self._db.executemany(
                    "INSERT OR REPLACE INTO user_features (user_key, row) VALUES (?, ?)", batch
                )
                n += len(batch)
        return n

    def put_many(self, rows: Iterable[dict[str, Any]]) -> int:
        """Insert or overwrite rows, atomically as a whole."""
        return self._write(_blobs(rows), replace=False)

    def replace_all(self, rows: Iterable[dict[str, Any]]) -> int:
        """Make ``rows`` the whole content, atomically."""
        return self._write(_blobs(rows), replace=True)

    def replace_pairs(self, pairs: Iterable[tuple[str, str | bytes]]) -> int:
        """Like :meth:`replace_all` with rows already encoded as (user_key, JSON)."""
        return self._write(_pairs(pairs), replace=True)

    def get(self, user_key: str) -> dict[str, Any] | None:
        hit = self._db.execute(
            "SELECT row FROM user_features WHERE user_key = ?", (user_key,)
        ).fetchone()
        return orjson.loads(hit[0]) if hit else None

    def get_many(self, user_keys: Iterable[str]) -> list[dict[str, Any] | None]:
        return [self.get(k) for k in user_keys]

    def sample(self, timeout_s: float = 1.0) -> dict[str, Any] | None:
        """One row, decoded, read fresh from the file (None when the store is empty).

        For health checks: a new read-only connection sees the file as it is now (the serving
        connection may answer from its page cache), and the serving connection must answer
        too. Raises ``sqlite3.Error`` / ``orjson.JSONDecodeError`` on a corrupt store."""
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=timeout_s)
        try:
            hit = db.execute("SELECT row FROM user_features LIMIT 1").fetchone()
        finally:
            db.close()
        self._db.execute("SELECT 1 FROM user_features LIMIT 1").fetchone()
        return orjson.loads(hit[0]) if hit else None

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM user_features").fetchone()[0])

    def close(self) -> None:
        self._db.close()


_GET = """
local v = redis.call('GET', KEYS[1])
if not v then return {} end
return redis.call('HMGET', ARGV[1] .. v, unpack(ARGV, 2))
"""


class RedisOnlineStore:
    def __init__(self, url: str, prefix: str = "tastemaker:users") -> None:
        import redis  # a declared dependency; imported here so SQLite users never load it

        self.prefix = prefix
        self._r = redis.Redis.from_url(url)
        try:
            self._r.ping()
        except redis.ConnectionError as exc:
            raise ConnectionError(f"online store: cannot reach Redis at {url}: {exc}") from exc
        self._get = self._r.register_script(_GET)
        self._current = f"{prefix}:current"

    def _hash(self, version: int | bytes) -> str:
        v = version.decode() if isinstance(version, bytes) else version
        return f"{self.prefix}:v{v}"

    def _fill(self, name: str, batches: Iterable[list[tuple[str, Any]]]) -> int:
        n = 0
        for batch in batches:
            pipe = self._r.pipeline(transaction=False)
            for key, blob in batch:
                pipe.hset(name, key, blob)
            pipe.execute()
            n += len(batch)
        return n

    def put_many(self, rows: Iterable[dict[str, Any]]) -> int:
        """Write into the current snapshot (creating version 1 if there is none)."""
        version = self._r.get(self._current)
        if version is None:
            return self.replace_all(rows)
        return self._fill(self._hash(int(version)), _blobs(rows))

    def replace_all(self, rows: Iterable[dict[str, Any]]) -> int:
        return self._replace(_blobs(rows))

    def replace_pairs(self, pairs: Iterable[tuple[str, str | bytes]]) -> int:
        return self._replace(_pairs(pairs))

    def _replace(self, batches: Iterable[list[tuple[str, Any]]]) -> int:
        version = int(self._r.incr(f"{self.prefix}:seq"))
        n = self._fill(self._hash(version), batches)
        old = self._r.set(self._current, version, get=True)  # the atomic switch
        if old is not None:
            self._r.unlink(self._hash(int(old)))
        return n

    def get(self, user_key: str) -> dict[str, Any] | None:
        return self.get_many([user_key])[0]

    def get_many(self, user_keys: Iterable[str]) -> list[dict[str, Any] | None]:
        keys = list(user_keys)
        if not keys:
            return []
        hits = self._get(keys=[self._current], args=[f"{self.prefix}:v", *keys])
        if not hits:
            return [None] * len(keys)
        return [orjson.loads(h) if h is not None else None for h in hits]

    def sample(self, timeout_s: float = 1.0) -> dict[str, Any] | None:
        """One row of the current snapshot, decoded (None when there is none); for health
        checks. Raises redis errors (the client's socket timeout applies) or a decode error."""
        version = self._r.get(self._current)
        if version is None:
            return None
        blob = self._r.hrandfield(self._hash(int(version)), 1, withvalues=True)
        return orjson.loads(blob[1]) if blob else None  # type: ignore[index,arg-type]

    def drop(self) -> None:
        """Delete every key of this prefix (tests, decommissioning)."""
        names = list(self._r.scan_iter(match=f"{self.prefix}:*"))
        if names:
            self._r.unlink(*names)

    def close(self) -> None:
        self._r.close()


def open_online_store(url_or_path: str | Path) -> SqliteOnlineStore | RedisOnlineStore:
    """``redis://host:port/db[?prefix=...]`` -> Redis; ``sqlite:///path`` or a path -> SQLite."""
    s = str(url_or_path)
    if s.startswith(("redis://", "rediss://", "unix://")):
        base, _, query = s.partition("?prefix=")
        return RedisOnlineStore(base, prefix=query or "tastemaker:users")
    if s.startswith("sqlite:///"):
        return SqliteOnlineStore(s[len("sqlite:///") :])
    if "://" in s:
        raise ValueError(f"online store {s!r}: use redis://..., sqlite:///path or a file path")
    return SqliteOnlineStore(s)
