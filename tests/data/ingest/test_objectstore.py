"""The object store: a local folder, and s3:// against a real S3-compatible server (moto)."""

from __future__ import annotations

import socket

import pytest

from core.workspace import Workspace
from data.ingest.job import ingest_store
from data.ingest.objectstore import ObjectStore, redact_url
from data.lake import events_dataset
from tests.data.ingest.ingest_helpers import KEY, NOW, good_event, line, lookups, write_object


def _contract(store: ObjectStore) -> None:
    assert store.list("events") == []
    store.write_bytes("events/dt=2025-03-02/b.jsonl", b"two\n")
    store.write_bytes("events/dt=2025-03-01/a.jsonl", b"one\n")
    store.write_bytes("other/c.txt", b"x")
    assert store.list("events") == ["events/dt=2025-03-01/a.jsonl", "events/dt=2025-03-02/b.jsonl"]
    assert store.read_bytes("events/dt=2025-03-02/b.jsonl") == b"two\n"
    assert store.exists("other/c.txt") and not store.exists("other/d.txt")
    store.write_bytes("other/c.txt", b"replaced")
    assert store.read_bytes("other/c.txt") == b"replaced"
    with pytest.raises(FileNotFoundError, match="d.txt"):
        store.read_bytes("other/d.txt")
    with pytest.raises(ValueError, match=r"\.\."):
        store.read_bytes("../secrets")


def test_local_store(tmp_path):
    store = ObjectStore(tmp_path / "raw")
    _contract(store)
    (tmp_path / "raw" / "events" / ".tmp-half-written").write_bytes(b"partial")
    assert all(".tmp-" not in p for p in store.list("events"))
    assert not list((tmp_path / "raw").rglob(".tmp-*.jsonl"))  # atomic writes leave no temp


def test_redact_url_hides_only_the_password():
    assert redact_url("redis://u:s3cret@host:6379/0") == "redis://u:***@host:6379/0"
    assert redact_url("s3://bucket/raw") == "s3://bucket/raw"


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _s3(endpoint: str, url: str) -> ObjectStore:
    return ObjectStore(url, endpoint_url=endpoint, key="testing", secret="testing")


def test_s3_store_contract(s3_endpoint):
    store = _s3(s3_endpoint, "s3://contract-bucket/raw")
    store.fs.mkdir("contract-bucket")
    _contract(store)


def test_ingest_reads_raw_events_from_s3(s3_endpoint, tmp_path):
    local = tmp_path / "staging"
    write_object(
        local, "dt=2025-03-01/part-00000.jsonl.gz", [line(good_event(i)) for i in range(5)]
    )
    write_object(local, "dt=2025-03-02/part-00000.jsonl.gz", ["{broken", line(good_event(1))])
    store = _s3(s3_endpoint, "s3://ingest-bucket/raw")
    store.fs.mkdir("ingest-bucket")
    for path in ObjectStore(local / "raw").list("events"):
        store.write_bytes(path, (local / "raw" / path).read_bytes())

    ws = Workspace(tmp_path / "ws")
    manifest = ingest_store(ws, store, lookups(), key=KEY, now=NOW)
    assert manifest["objects"] == [
        "events/dt=2025-03-01/part-00000.jsonl.gz",
        "events/dt=2025-03-02/part-00000.jsonl.gz",
    ]
    assert (manifest["read"], manifest["accepted"], manifest["duplicates"]) == (7, 5, 1)
    assert manifest["quarantined_by_reason"] == {"not_json": 1}
    ids = sorted(events_dataset(ws.lake_events).to_table()["event_id"].to_pylist())
    assert ids == [f"ev-{i:06d}" for i in range(5)]
