"""The one key-value store layer: string keys -> byte blobs, SQLite or Redis, one opener.

What is stored is an encoding's business (feature rows as JSON in
``data.features.online_store``, slates as a binary codec in ``serving.slates``); this layer
only keeps snapshots of blobs:

* :meth:`KV.get` / :meth:`KV.get_many`: one round trip either way;
* :meth:`KV.put_many`: insert or overwrite into the current snapshot;
* :meth:`KV.replace_all`: make the given pairs the whole content, **atomically** (a reader
  sees the old snapshot or the new one, never a mix);
* :meth:`KV.sample`: one stored blob read fresh, for health probes (None when empty);
* ``len()``, :meth:`KV.drop` (delete everything of this namespace), :meth:`KV.close`.

Layouts (kept as they were, so existing workspaces and deployments read on):

* SQLite: one table ``<table> (user_key TEXT PRIMARY KEY, <column> BLOB)`` in WAL mode;
  ``replace_all`` deletes and refills it in one transaction.
* Redis: one hash per snapshot version, ``<ns>:v<n>``; ``replace_all`` fills a new version
  (``INCR <ns>:seq``) with pipelined ``HSET`` and switches ``<ns>:current`` with one ``SET``;
  ``get`` is one server-side script (read the version, ``HMGET``). A store may name a
  ``legacy`` hash, read while ``<ns>:current`` does not exist yet (the slates' earlier
  layout, one hash renamed into place) and deleted by the next ``replace_all``.

Targets: ``redis://…``, ``rediss://…``, ``unix://…`` (query ``prefix=`` sets the key prefix),
``sqlite:///path`` or a plain path. Every message this module writes shows the URL through
:func:`core.urls.redact_url`, so no password reaches a log or an error.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from core.urls import redact_url

BATCH = 5_000  # pairs per write batch (SQLite executemany, Redis pipeline)
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

Blob = str | bytes
Pair = tuple[str, Blob]
T_co = TypeVar("T_co", covariant=True)


class Reader(Protocol[T_co]):
    """What a reader of any encoding needs (the service's guarded wrapper wraps this)."""

    def get(self, key: str) -> T_co | None: ...

    def sample(self, timeout_s: float = 1.0) -> T_co | None:
        """One stored value read fresh, None when empty; raises when the store is unreadable."""
        ...

    def close(self) -> None: ...


class KV(Protocol):
    """The contract both backends keep (``tests/core/test_kv.py`` runs it on each)."""

    target: str  # where it is, credentials redacted
    batch: int

    def get(self, key: str) -> bytes | None: ...
    def get_many(self, keys: Iterable[str]) -> list[bytes | None]: ...
    def put_many(self, pairs: Iterable[Pair]) -> int: ...
    def delete(self, keys: Iterable[str]) -> int: ...
    def replace_all(self, pairs: Iterable[Pair]) -> int: ...
    def sample(self, timeout_s: float = 1.0) -> bytes | None: ...
    def __len__(self) -> int: ...
    def drop(self) -> None: ...
    def close(self) -> None: ...


def batches(pairs: Iterable[Pair], size: int) -> Iterator[list[Pair]]:
    it = iter(pairs)
    while batch := list(islice(it, size)):
        yield batch


def _bytes(blob: Any) -> bytes:
    return blob.encode() if isinstance(blob, str) else bytes(blob)


class SqliteKV:
    """One SQLite table of (``user_key``, blob) in WAL mode."""

    def __init__(self, path: str | Path, table: str, column: str) -> None:
        self.path = Path(path)
        self.target = str(self.path)
        self.table, self.column = table, column
        self.batch = BATCH
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (user_key TEXT PRIMARY KEY, {column} BLOB NOT NULL)"
        )
        self._db.commit()
        self._select = f"SELECT {column} FROM {table} WHERE user_key = ?"

    def _write(self, pairs: Iterable[Pair], replace: bool) -> int:
        n = 0
        insert = f"INSERT OR REPLACE INTO {self.table} (user_key, {self.column}) VALUES (?, ?)"
        with self._db:  # one transaction: readers (WAL) keep the old snapshot until commit
            if replace:
                self._db.execute(f"DELETE FROM {self.table}")
            for batch in batches(pairs, self.batch):
                self._db.executemany(insert, batch)
                n += len(batch)
        return n

    def put_many(self, pairs: Iterable[Pair]) -> int:
        """Insert or overwrite pairs, atomically as a whole."""
        return self._write(pairs, replace=False)

    def replace_all(self, pairs: Iterable[Pair]) -> int:
        """Make ``pairs`` the whole content, atomically."""
        return self._write(pairs, replace=True)

    def get(self, key: str) -> bytes | None:
        hit = self._db.execute(self._select, (key,)).fetchone()
        return _bytes(hit[0]) if hit else None

    def get_many(self, keys: Iterable[str]) -> list[bytes | None]:
        return [self.get(k) for k in keys]

    def sample(self, timeout_s: float = 1.0) -> bytes | None:
        """One blob read fresh from the file (None when empty). A new read-only connection
        sees the file as it is now (the serving connection may answer from its page cache),
        and the serving connection must answer too. Raises ``sqlite3.Error`` when corrupt."""
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=timeout_s)
        try:
            hit = db.execute(f"SELECT {self.column} FROM {self.table} LIMIT 1").fetchone()
        finally:
            db.close()
        self._db.execute(f"SELECT 1 FROM {self.table} LIMIT 1").fetchone()
        return _bytes(hit[0]) if hit else None

    def __len__(self) -> int:
        return int(self._db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0])

    def delete(self, keys: Iterable[str]) -> int:
        """Remove these keys (erasure), then checkpoint the WAL and vacuum, so no freed page
        of the file still holds them; returns how many were there."""
        keys = list(keys)
        with self._db:
            n = sum(
                self._db.execute(f"DELETE FROM {self.table} WHERE user_key = ?", (k,)).rowcount
                for k in keys
            )
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.execute("VACUUM")
        return int(n)

    def drop(self) -> None:
        with self._db:
            self._db.execute(f"DELETE FROM {self.table}")

    def close(self) -> None:
        self._db.close()


_GET = """
local v = redis.call('GET', KEYS[1])
local h
if v then h = ARGV[1] .. v elseif ARGV[2] ~= '' then h = ARGV[2] else return {} end
return redis.call('HMGET', h, unpack(ARGV, 3))
"""


class RedisKV:
    """Versioned Redis hashes under ``<ns>:``, switched atomically by ``<ns>:current``."""

    def __init__(
        self,
        url: str,
        namespace: str,
        timeout_s: float | None = None,
        legacy: str = "",
        check: bool = True,
        what: str = "store",
    ) -> None:
        import redis  # a declared dependency; imported here so SQLite users never load it

        self.target = redact_url(url)
        self.ns, self.legacy = namespace, legacy
        self.batch = BATCH
        options: dict[str, Any] = {}
        if timeout_s is not None:
            options = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
        self._r = redis.Redis.from_url(url, **options)
        if check:
            try:
                self._r.ping()
            except redis.RedisError as exc:
                self._r.close()
                raise ConnectionError(
                    f"{what}: cannot reach Redis at {self.target}: {type(exc).__name__}: {exc}"
                ) from None
        self._get = self._r.register_script(_GET)
        self._current = f"{namespace}:current"

    def _hash(self, version: int | bytes) -> str:
        return f"{self.ns}:v{int(version)}"

    def _fill(self, name: str, pairs: Iterable[Pair]) -> int:
        n = 0
        for batch in batches(pairs, self.batch):
            pipe = self._r.pipeline(transaction=False)
            for key, blob in batch:
                pipe.hset(name, key, blob)
            pipe.execute()
            n += len(batch)
        return n

    def put_many(self, pairs: Iterable[Pair]) -> int:
        """Write into the current snapshot (creating the first one if there is none)."""
        version = self._r.get(self._current)
        if version is None:
            return self.replace_all(pairs)
        return self._fill(self._hash(version), pairs)  # type: ignore[arg-type]

    def replace_all(self, pairs: Iterable[Pair]) -> int:
        version = int(self._r.incr(f"{self.ns}:seq"))  # type: ignore[arg-type]
        try:
            n = self._fill(self._hash(version), pairs)
        except BaseException:
            self._r.unlink(self._hash(version))  # never switched to: readers saw none of it
            raise
        old = self._r.set(self._current, version, get=True)  # the atomic switch
        stale = [self._hash(old)] if old is not None else []  # type: ignore[arg-type]
        if self.legacy:
            stale.append(self.legacy)
        if stale:
            self._r.unlink(*stale)
        return n

    def get(self, key: str) -> bytes | None:
        return self.get_many([key])[0]

    def get_many(self, keys: Iterable[str]) -> list[bytes | None]:
        keys = list(keys)
        if not keys:
            return []
        hits = self._get(keys=[self._current], args=[f"{self.ns}:v", self.legacy, *keys])
        return list(hits) if hits else [None] * len(keys)  # type: ignore[arg-type]

    def sample(self, timeout_s: float = 1.0) -> bytes | None:
        """One blob of the current snapshot (None when there is none); the client's socket
        timeout applies."""
        version = self._r.get(self._current)
        if version is not None:
            name = self._hash(version)  # type: ignore[arg-type]
        elif self.legacy:
            name = self.legacy
        else:
            return None
        hit = self._r.hrandfield(name, 1, withvalues=True)
        return hit[1] if hit else None  # type: ignore[index,return-value]

    def __len__(self) -> int:
        version = self._r.get(self._current)
        name = self._hash(version) if version is not None else self.legacy  # type: ignore[arg-type]
        return int(self._r.hlen(name)) if name else 0  # type: ignore[arg-type]

    def delete(self, keys: Iterable[str]) -> int:
        """Remove these keys from every snapshot of the namespace (erasure)."""
        keys = list(keys)
        if not keys:
            return 0
        names = list(self._r.scan_iter(match=f"{self.ns}:v*"))
        if self.legacy:
            names.append(self.legacy)
        return sum(int(self._r.hdel(name, *keys)) for name in names)  # type: ignore[arg-type]

    def drop(self) -> None:
        """Delete every key of this namespace (tests, decommissioning)."""
        names = list(self._r.scan_iter(match=f"{self.ns}:*"))
        if self.legacy:
            names.append(self.legacy)
        if names:
            self._r.unlink(*names)

    def close(self) -> None:
        self._r.close()


def is_redis(target: str | Path) -> bool:
    return str(target).startswith(REDIS_SCHEMES)


def redis_target(url: str) -> tuple[str, str | None]:
    """``redis://h:p/db?prefix=P&...`` -> (the URL without ``prefix``, P or None)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), None)
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


def sqlite_path(target: str | Path, what: str = "store") -> Path:
    """``sqlite:///path`` or a plain path -> the path; any other URL is refused."""
    s = str(target)
    if s.startswith("sqlite:///"):
        return Path(s[len("sqlite:///") :])
    if "://" in s:
        raise ValueError(
            f"{what} {redact_url(s)!r}: use redis://..., rediss://..., unix://..., "
            "sqlite:///path or a file path"
        )
    return Path(s)


def open_kv(
    target: str | Path,
    *,
    table: str,
    column: str,
    prefix: str,
    suffix: str = "",
    timeout_s: float | None = None,
    create: bool = True,
    check: bool = True,
    legacy_suffix: str = "",
    what: str = "store",
) -> SqliteKV | RedisKV:
    """Open a store: Redis (namespace ``<prefix>`` or the URL's ``?prefix=`` + ``suffix``) or
    SQLite (``table``/``column``). ``timeout_s`` bounds every Redis call (None: block);
    ``create=False`` refuses a SQLite file that does not exist (``FileNotFoundError``).
    ``check``: ping Redis now and raise ``ConnectionError`` (URL redacted) if it does not
    answer; without it the first call fails instead. ``what`` names the store in messages."""
    s = str(target)
    if is_redis(s):
        url, given = redis_target(s)
        base = given or prefix
        legacy = f"{base}{legacy_suffix}" if legacy_suffix else ""
        namespace = f"{base}{suffix}"
        return RedisKV(url, namespace, timeout_s, legacy=legacy, check=check, what=what)
    path = sqlite_path(s, what)
    if not create and not path.is_file():
        raise FileNotFoundError(f"{what}: no file at {path}")
    return SqliteKV(path, table, column)
