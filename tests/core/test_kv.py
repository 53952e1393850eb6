"""The key-value layer's contract, run on SQLite and on a real Redis; the opener; redaction."""

from __future__ import annotations

import logging
import socket
import sqlite3

import pytest

from core.kv import RedisKV, SqliteKV, open_kv, redis_target
from core.urls import redact_url

LAYOUT = {"table": "things", "column": "blob", "prefix": "unused"}


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def target(request, tmp_path):
    """Where a fresh store lives; every Redis key it makes is deleted afterwards."""
    if request.param == "sqlite":
        yield str(tmp_path / "kv" / "things.sqlite")
        return
    prefix = request.getfixturevalue("redis_prefix")
    url = f"{request.getfixturevalue('redis_url')}?prefix={prefix}kv"
    yield url
    store = open_kv(url, **LAYOUT)
    store.drop()
    store.close()


@pytest.fixture
def pair(target):
    """A writer and a reader: two handles on the same store."""
    writer, reader = open_kv(target, **LAYOUT), open_kv(target, **LAYOUT)
    yield writer, reader
    writer.close()
    reader.close()


def test_get_put_and_overwrite(pair):
    writer, reader = pair
    assert reader.get("a") is None and reader.get_many(["a", "b"]) == [None, None]
    assert reader.get_many([]) == []
    assert writer.put_many([("a", b"\x00\xff1"), ("b", '{"v": "é"}')]) == 2
    assert len(reader) == 2 and reader.get("a") == b"\x00\xff1"  # bytes in, bytes out
    assert reader.get("b") == '{"v": "é"}'.encode()  # text comes back as its UTF-8 bytes
    writer.put_many([("a", b"2")])
    assert reader.get_many(["a", "b", "zz"]) == [b"2", '{"v": "é"}'.encode(), None]


def test_replace_all_is_atomic_for_readers(pair):
    writer, reader = pair
    writer.batch = 2  # several write batches per snapshot
    assert writer.replace_all((f"u{i}", b"old") for i in range(5)) == 5
    seen_midway: list = []

    def new_pairs():
        for i in range(5):
            if i == 4:  # two batches written, not yet switched
                seen_midway.extend(reader.get_many([f"u{j}" for j in range(5)]))
            yield (f"u{i}", b"new") if i < 4 else ("u9", b"new")

    assert writer.replace_all(new_pairs()) == 5
    assert seen_midway == [b"old"] * 5  # the old snapshot, whole
    assert reader.get_many(["u0", "u4", "u9"]) == [b"new", None, b"new"] and len(reader) == 5
    writer.put_many([("u0", b"put")])  # put_many writes into the current snapshot
    assert reader.get_many(["u0", "u1"]) == [b"put", b"new"]


def test_replace_all_with_nothing_empties_the_store(pair):
    writer, reader = pair
    writer.replace_all([("a", b"1")])
    assert writer.replace_all([]) == 0
    assert reader.get("a") is None and reader.sample() is None and len(reader) == 0


def test_sample_reads_one_stored_value_or_none(pair):
    writer, reader = pair
    assert reader.sample() is None
    writer.replace_all([("a", b"1"), ("b", b"2")])
    assert reader.sample(timeout_s=1.0) in (b"1", b"2")


def test_drop_deletes_everything(pair):
    writer, reader = pair
    writer.replace_all([("a", b"1")])
    writer.drop()
    assert reader.get("a") is None and reader.sample() is None


def test_delete_removes_only_those_keys(pair, target):
    writer, reader = pair
    writer.replace_all([("a", b"secret-a"), ("b", b"2"), ("c", b"3")])
    assert writer.delete(["a", "zz"]) == 1
    assert reader.get_many(["a", "b", "c"]) == [None, b"2", b"3"] and len(reader) == 2
    assert writer.delete(["a"]) == 0, "idempotent"
    if "://" not in target:  # SQLite: no freed page of the file still holds the value
        writer.close()
        with open(target, "rb") as f:
            data = f.read()
        assert b"secret-a" not in data


def test_a_failed_replace_leaves_the_old_snapshot(pair):
    writer, reader = pair
    writer.replace_all([("a", b"1")])

    def broken():
        yield ("b", b"2")
        raise RuntimeError("encoder failed midway")

    with pytest.raises(RuntimeError):
        writer.replace_all(broken())
    assert reader.get_many(["a", "b"]) == [b"1", None]


# ---- the opener --------------------------------------------------------------------------


def test_sqlite_targets_and_layout(tmp_path):
    path = tmp_path / "x.sqlite"
    for target in (str(path), f"sqlite:///{path}", path):
        store = open_kv(target, **LAYOUT)
        assert isinstance(store, SqliteKV)
        store.put_many([("k", b"v")])
        store.close()
    db = sqlite3.connect(path)  # the table and column names are the on-disk contract
    assert db.execute("SELECT user_key, blob FROM things").fetchall() == [("k", b"v")]
    db.close()
    with pytest.raises(FileNotFoundError, match="thing store: no file at"):
        open_kv(tmp_path / "missing.sqlite", **LAYOUT, create=False, what="thing store")
    assert not (tmp_path / "missing.sqlite").exists()


def test_unsupported_urls_are_refused_with_the_password_hidden():
    with pytest.raises(ValueError, match=r"'postgres://u:\*\*\*@h/db'") as err:
        open_kv("postgres://u:hunter2@h/db", **LAYOUT)
    assert "hunter2" not in str(err.value)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_redis_is_reported_without_the_password(caplog):
    url = f"redis://user:hunter2@127.0.0.1:{_closed_port()}/0?prefix=p"
    with caplog.at_level(logging.DEBUG), pytest.raises(ConnectionError) as err:
        open_kv(url, **LAYOUT, timeout_s=0.5, what="online store")
    assert "online store: cannot reach Redis at redis://user:***@127.0.0.1" in str(err.value)
    assert "hunter2" not in str(err.value) and "hunter2" not in caplog.text
    lazy = open_kv(url, **LAYOUT, timeout_s=0.5, check=False)  # fails on use instead
    assert isinstance(lazy, RedisKV) and "hunter2" not in lazy.target
    lazy.close()


@pytest.mark.redis
def test_redis_url_options_timeouts_and_key_scheme(redis_url, redis_prefix):
    store = open_kv(f"{redis_url}?prefix={redis_prefix}ns", **LAYOUT, suffix=":s", timeout_s=0.25)
    try:
        assert isinstance(store, RedisKV) and store.ns == f"{redis_prefix}ns:s"
        kwargs = store._r.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 0.25 and kwargs["socket_connect_timeout"] == 0.25
        store.replace_all([("a", b"1")])
        store.replace_all([("a", b"2")])
        r = store._r  # one hash per snapshot, switched by <ns>:current; the old one is gone
        assert r.get(f"{store.ns}:current") == b"2"
        assert r.hget(f"{store.ns}:v2", "a") == b"2" and not r.exists(f"{store.ns}:v1")
    finally:
        store.drop()
        store.close()
    assert redis_target("redis://h:1/2?socket_timeout=3&prefix=p") == (
        "redis://h:1/2?socket_timeout=3",
        "p",
    )
    assert redis_target("redis://h/0") == ("redis://h/0", None)


@pytest.mark.redis
def test_redis_legacy_hash_is_read_until_the_first_replace(redis_url, redis_prefix):
    """The slates' earlier layout (one hash, renamed into place) stays readable."""
    url = f"{redis_url}?prefix={redis_prefix}old"
    store = open_kv(url, **LAYOUT, suffix=":slates", legacy_suffix=":slates")
    legacy = f"{redis_prefix}old:slates"
    try:
        store._r.hset(legacy, mapping={"a": b"legacy"})
        assert store.get("a") == b"legacy" and store.sample() == b"legacy"
        store.replace_all([("b", b"new")])
        assert store.get_many(["a", "b"]) == [None, b"new"]
        assert not store._r.exists(legacy)
    finally:
        store.drop()
        store.close()


def test_redact_url_hides_every_password():
    assert redact_url("redis://u:s3cret@host:6379/0") == "redis://u:***@host:6379/0"
    assert redact_url("rediss://:s3cret@host/0?prefix=p") == "rediss://:***@host/0?prefix=p"
    assert redact_url("postgresql://h/db?password=x&sslmode=require") == (
        "postgresql://h/db?password=***&sslmode=require"
    )
    assert redact_url("redis://h/0?prefix=p&password=x") == "redis://h/0?prefix=p&password=***"
    for plain in ("s3://bucket/raw", "redis://u@h/0", "/tmp/x.sqlite", "sqlite:///tmp/x"):
        assert redact_url(plain) == plain
