"""Stateless replicas: bundles published to an object store (file://, memory://, and s3://
against moto's S3 server) and pulled by each replica into its own cache; checksums verified on
pull, a corrupt bundle refused (the replica keeps its bundle, or at start waits for a good
one), and the app started from the store alone serves what the store's CURRENT names."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from data.ingest.objectstore import ObjectStore
from index.bundle import current_version, publish_bundle
from serving.bundle_store import (
    BundleMirror,
    point_store_at,
    push_bundle,
    remote_current,
    set_remote_current,
)
from tests.fixtures.synthetic_bundle import bundle_files
from tests.serving.conftest import SPEC, TRENDING


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


@pytest.fixture(params=["file", "memory", "s3"])
def store_url(request, tmp_path, monkeypatch) -> str:
    if request.param == "file":
        return f"file://{tmp_path / 'object-store' / 'bundles'}"
    if request.param == "memory":
        return f"memory://tm-{uuid.uuid4().hex[:8]}/bundles"
    endpoint = request.getfixturevalue("s3_endpoint")
    # botocore reads these itself (the service configures s3:// the same way in production)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"tm-{uuid.uuid4().hex[:8]}"
    ObjectStore(f"s3://{bucket}").fs.mkdir(bucket)
    return f"s3://{bucket}/bundles"


def _local_version(root: Path, version: str) -> Path:
    files, manifest = bundle_files(SPEC, TRENDING)
    publish_bundle(root, files, manifest, version=version, make_current=False)
    return root / version


def test_two_replicas_pull_the_same_bundle_and_refuse_a_corrupt_one(tmp_path, store_url) -> None:
    store = ObjectStore(store_url)
    publisher = tmp_path / "publisher"
    v1 = push_bundle(store, _local_version(publisher, "20240101T000000Z-one"))
    assert remote_current(store) is None
    replicas = [BundleMirror(store_url, tmp_path / f"replica-{i}") for i in range(2)]
    assert not any(m.sync() for m in replicas)  # nothing is current yet
    set_remote_current(store, v1)
    assert all(m.sync() for m in replicas)
    assert [current_version(m.local_dir) for m in replicas] == [v1, v1]
    assert not any(m.sync() for m in replicas)  # already there: no-op

    v2 = push_bundle(store, _local_version(publisher, "20240102T000000Z-bad"))
    store.write_bytes(f"{v2}/vocab.json", b"{}")  # damaged in the store, after the upload
    set_remote_current(store, v2)
    for m in replicas:
        assert not m.sync()
        assert current_version(m.local_dir) == v1 and m.has_good_bundle()
        assert "checksum" in m.refused[v2]
        assert not (m.local_dir / v2).exists()
        assert not [p for p in m.local_dir.iterdir() if p.name.startswith(".tmp-")]

    v3 = push_bundle(store, _local_version(publisher, "20240103T000000Z-three"))
    set_remote_current(store, v3)
    assert all(m.sync() for m in replicas)
    assert [current_version(m.local_dir) for m in replicas] == [v3, v3]
    with pytest.raises(FileNotFoundError):
        set_remote_current(store, "20240104T000000Z-never-pushed")


def test_a_replica_starts_from_the_store_alone_and_waits_for_a_good_bundle(
    tmp_path, store_path, store_url
) -> None:
    from core.settings import Settings
    from serving.app import create_app

    store = ObjectStore(store_url)
    publisher = tmp_path / "publisher"
    bad = push_bundle(store, _local_version(publisher, "20240101T000000Z-bad"))
    store.write_bytes(f"{bad}/artists.faiss", b"not an index")
    set_remote_current(store, bad)
    settings = Settings(
        workspace=tmp_path,
        bundle_dir=tmp_path / "cache",
        bundle_store_url=store_url,
        online_store_url=str(store_path),
        reload_interval_s=0.05,
        bundle_wait_s=0.3,
        public_recommendations=True,  # this test is about bundles, not who may ask
    )
    with pytest.raises(TimeoutError, match="checksum"):
        create_app(settings)  # only a corrupt bundle: it never starts serving it

    good = push_bundle(store, _local_version(publisher, "20240102T000000Z-good"))

    def publish_later() -> None:
        time.sleep(0.5)
        set_remote_current(store, good)

    later = threading.Thread(target=publish_later)
    later.start()
    app = create_app(settings.model_copy(update={"bundle_wait_s": 30.0}))
    later.join()
    with TestClient(app) as c:
        assert c.get("/readyz").json()["bundle_version"] == good
        assert c.get("/v1/users/alice/recommendations?k=3").status_code == 200
        newer = push_bundle(store, _local_version(publisher, "20240103T000000Z-newer"))
        set_remote_current(store, newer)  # the puller and the watcher take it from here
        deadline = time.monotonic() + 10
        while c.get("/healthz").json()["bundle_version"] != newer:
            assert time.monotonic() < deadline, "the new bundle never reached the replica"
            time.sleep(0.05)


def test_warm_and_publish_pushes_then_moves_the_stores_current(tmp_path, store_url) -> None:
    import pyarrow.parquet as pq

    from data.features.online_store import table_from_rows
    from serving.precompute import warm_and_publish
    from tests.serving.conftest import USERS

    users = tmp_path / "users.parquet"
    pq.write_table(table_from_rows(USERS.values()), users)
    bundles = tmp_path / "bundles"
    version = _local_version(bundles, "20240101T000000Z-one").name
    store = ObjectStore(store_url)
    warm_and_publish(
        bundles, version, users, str(tmp_path / "slates.sqlite"), bundle_store_url=store_url
    )
    assert remote_current(store) == version == current_version(bundles)
    mirror = BundleMirror(store_url, tmp_path / "replica")
    assert mirror.sync() and mirror.has_good_bundle()


def test_a_manual_promote_or_rollback_points_the_store_too(tmp_path, store_url) -> None:
    bundles = tmp_path / "bundles"
    one = _local_version(bundles, "20240101T000000Z-one").name
    two = _local_version(bundles, "20240102T000000Z-two").name
    point_store_at(store_url, bundles, two)  # never pushed: pushed, then named
    store = ObjectStore(store_url)
    assert remote_current(store) == two
    point_store_at(store_url, bundles, one)  # the rollback
    assert remote_current(store) == one
    mirror = BundleMirror(store_url, tmp_path / "replica")
    assert mirror.sync() and current_version(mirror.local_dir) == one
