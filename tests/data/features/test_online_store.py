"""Online store: round trip, atomic snapshot swap, and online = offline at the same cutoff,
on SQLite and on a real Redis."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.workspace import Workspace
from data.features.build import FeatureConfig, build_features, load_event_log, user_features_at
from data.features.online_store import open_online_store, rows_from_table, table_from_rows
from data.schemas import EVAL_USERS, USER_FEATURES
from tests.data.features.features_lake import at, events_table, write_lake
from tests.data.features.test_features_leakage import random_lake


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield str(tmp_path / "online" / "users.sqlite")
        return
    url = f"{request.getfixturevalue('redis_url')}?prefix=tm-test-{uuid.uuid4().hex[:10]}"
    yield url
    store = open_online_store(url)
    store.drop()
    store.close()


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("lake"))
    rows, users, artists = random_lake(seed=5)
    write_lake(ws, events_table(rows), users, artists)
    return ws


def test_rows_round_trip_losslessly(lake):
    table = user_features_at(load_event_log(lake), None, at(12, 1))
    assert table_from_rows(rows_from_table(table)).equals(table)


def test_online_equals_offline_after_build(lake, store_url):
    summary = build_features(lake, FeatureConfig(), online=store_url)
    offline = pq.read_table(lake.features / "user_features.parquet")
    assert summary["counts"]["online_rows"] == offline.num_rows
    store = open_online_store(store_url)
    try:
        keys = offline["user_key"].to_pylist()
        online = table_from_rows(store.get_many(keys))
        assert online.equals(offline.cast(USER_FEATURES))
        assert store.get("no-such-user") is None
    finally:
        store.close()


def test_online_vector_equals_eval_row_at_the_cutoff(lake, store_url):
    """Publish the state at the test cutoff; what serving reads equals the offline eval row."""
    build_features(lake, FeatureConfig(), online="")
    offline = pq.read_table(lake.features / "eval.parquet")
    offline = offline.filter(pc.equal(offline["split"], "test"))
    assert offline.num_rows > 0
    cutoff = offline["as_of"][0].as_py()
    store = open_online_store(store_url)
    try:
        store.replace_all(rows_from_table(user_features_at(load_event_log(lake), None, cutoff)))
        online = table_from_rows(store.get_many(offline["user_key"].to_pylist()))
    finally:
        store.close()
    same = [n for n in EVAL_USERS.names if n in USER_FEATURES.names]
    assert online.select(same).equals(offline.select(same))


def test_replace_all_is_atomic_for_readers(store_url):
    writer, reader = open_online_store(store_url), open_online_store(store_url)
    writer.kv.batch = 2  # several write batches per snapshot
    try:
        writer.replace_all({"user_key": f"u{i}", "v": 1} for i in range(5))
        seen_midway = []

        def new_rows():
            for i in range(5):
                if i == 4:  # two batches written, not yet switched
                    seen_midway.extend(reader.get_many([f"u{j}" for j in range(5)]))
                yield {"user_key": f"u{i}", "v": 2} if i < 4 else {"user_key": "u9", "v": 2}

        writer.replace_all(new_rows())
        assert [r["v"] for r in seen_midway] == [1] * 5  # the old snapshot, whole
        assert reader.get("u0")["v"] == 2 and reader.get("u4") is None
        assert reader.get("u9") == {"user_key": "u9", "v": 2}
        writer.put_many([{"user_key": "u0", "v": 3}])
        assert reader.get("u0")["v"] == 3 and reader.get("u1")["v"] == 2
    finally:
        writer.close()
        reader.close()


def test_bad_urls_and_rows_are_refused(tmp_path):
    with pytest.raises(ValueError, match="online store"):
        open_online_store("postgres://nope")
    store = open_online_store(f"sqlite:///{tmp_path}/x.sqlite")
    try:
        with pytest.raises(ValueError, match="user_key"):
            store.put_many([{"user_key": None}])
        with pytest.raises(ValueError, match="lacks columns"):
            list(rows_from_table(pa.table({"user_key": ["a"]})))
    finally:
        store.close()


def test_column_wise_json_matches_per_row_json(lake, store_url):
    """Regression: the vectorised encoder must escape quotes/backslashes like orjson does."""
    from data.features.online_store import json_blobs, publish_table

    table = user_features_at(load_event_log(lake), None, at(12, 1))
    odd = table.set_column(0, "user_key", pa.array([f'u"{i}\\é' for i in range(table.num_rows)]))
    keys, blobs = json_blobs(odd)
    assert table_from_rows(__import__("orjson").loads(b) for b in blobs.to_pylist()).equals(odd)
    ctrl = odd.set_column(0, "user_key", pa.array([f"u\n{i}" for i in range(odd.num_rows)]))
    assert json_blobs(ctrl) is None  # falls back to the per-row path
    store = open_online_store(store_url)
    try:
        assert publish_table(store, ctrl) == odd.num_rows
        assert table_from_rows([store.get("u\n0")]).equals(ctrl.slice(0, 1))
    finally:
        store.close()


def test_a_file_published_in_batches_is_the_table_row_for_row(
    lake, store_url, tmp_path, monkeypatch
):
    """Publishing streams batches (the driver never holds every row's JSON); a batch with a
    control character takes the per-row path alone, and the store still holds every row."""
    from data.features import online_store
    from data.features.online_store import publish_file

    table = user_features_at(load_event_log(lake), None, at(12, 1))
    keys = [f"u{i}" for i in range(table.num_rows)]
    keys[1] = "u\n1"  # a control character: this batch alone is encoded per row
    table = table.set_column(0, "user_key", pa.array(keys))
    path = tmp_path / "users.parquet"
    pq.write_table(table, path)
    monkeypatch.setattr(online_store, "PUBLISH_ROWS", 2)
    assert table.num_rows > 4 and pq.ParquetFile(path).metadata.num_rows == table.num_rows
    store = open_online_store(store_url)
    try:
        assert publish_file(store, path) == table.num_rows
        assert len(store) == table.num_rows
        assert table_from_rows(store.get_many(keys)).equals(table)
    finally:
        store.close()


def test_sample_reads_one_stored_row_or_none_when_empty(store_url):
    """The health probe's public read: None on an empty store, a stored row once published."""
    store = open_online_store(store_url)
    try:
        assert store.sample() is None
        store.replace_all([{"user_key": "u1", "history": ["a1"]}])
        assert store.sample() == {"user_key": "u1", "history": ["a1"]}
    finally:
        store.close()
