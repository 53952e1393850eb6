"""The HTTP API over a real tiny bundle and a real SQLite online store."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import C0, C1, SPEC, TRENDING, USERS
from fastapi.testclient import TestClient

from core.settings import Settings
from index import BundleNotFoundError, CorruptBundleError
from serving.app import create_app
from tests.fixtures.synthetic_bundle import cluster_of, publish_synthetic

ROOT = Path(__file__).resolve().parents[2]


ADMIN = "test-admin-token"


@pytest.fixture
def client(settings):
    # /admin/reload now refuses every call unless a token is configured (issue 10)
    with TestClient(create_app(settings.model_copy(update={"admin_token": ADMIN}))) as c:
        c.headers["X-Admin-Token"] = ADMIN
        yield c


def recs(client: TestClient, user: str, **params):
    return client.get(f"/v1/users/{user}/recommendations", params=params)


def test_known_user_k_distinct_known_artists_no_followed(client) -> None:
    resp = recs(client, "alice", k=5)
    assert resp.status_code == 200
    body = resp.json()
    ids = [item["artist_id"] for item in body["items"]]
    assert len(ids) == 5 == len(set(ids)) and set(ids) <= set(C0)
    assert not set(ids) & (set(USERS["alice"]["followed"]) | set(USERS["alice"]["seen"]))
    assert [item["rank"] for item in body["items"]] == [1, 2, 3, 4, 5]
    assert body["source"] == "model" and body["bundle_version"] == "20240101T000000Z-first"
    assert body["items"][0]["name"].startswith("Artist C0")
    assert body["items"][0]["reason"].startswith("because you listen to")
    assert len(body["request_id"]) == 32


def test_default_k_and_two_users_differ(client) -> None:
    a = recs(client, "alice").json()["items"]
    b = recs(client, "bob").json()["items"]
    assert len(a) == 10 == len(b)
    assert [i["artist_id"] for i in a] != [i["artist_id"] for i in b]
    assert cluster_of(b[0]["artist_id"]) == 1 and cluster_of(a[0]["artist_id"]) == 0


def test_unknown_and_cold_users_get_trending(client) -> None:
    body = recs(client, "stranger", k=3).json()
    assert body["source"] == "trending"
    assert [i["artist_id"] for i in body["items"]] == TRENDING["global"][:3]
    assert {i["source"] for i in body["items"]} == {"trending"}
    carol = recs(client, "carol", k=2).json()["items"]
    assert [i["artist_id"] for i in carol] == [C0[9], C0[10]]
    assert carol[0]["reason"] == "trending in DE"
    hinted = recs(client, "stranger", k=1, country="us").json()["items"]
    assert hinted[0]["artist_id"] == C1[9]


@pytest.mark.parametrize("k", [0, -1, 101, "ten"])
def test_k_out_of_bounds_is_422(client, k) -> None:
    assert recs(client, "alice", k=k).status_code == 422


@pytest.mark.parametrize("k", [1, 100])
def test_k_bounds_inclusive(client, k) -> None:
    items = recs(client, "alice", k=k).json()["items"]
    assert len(items) == min(k, 19) and len({i["artist_id"] for i in items}) == len(items)


def test_healthz_and_docs(client) -> None:
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["online_store"] is True
    assert body["bundle_version"] == "20240101T000000Z-first" and body["artists"] == 26
    assert client.get("/docs").status_code == 404, "Swagger UI (a CDN script): demo mode only"
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/users/{user_id}/recommendations" in paths


def test_healthz_reports_unreachable_store(settings) -> None:
    app = create_app(settings)
    app.state.recommender.store.close()  # a store that can no longer answer
    with TestClient(app) as c:
        resp = c.get("/healthz")  # liveness stays 200 (issue 10); readiness says 503
        assert resp.status_code == 200 and resp.json()["online_store"] is False
        assert c.get("/readyz").status_code == 503
        assert recs(c, "alice", k=2).json()["source"] == "trending", "degrade, don't 500"


def test_missing_bundle_tells_user_to_export(tmp_path, store_path) -> None:
    settings = Settings(workspace=tmp_path / "empty", online_store_url=str(store_path))
    with pytest.raises(BundleNotFoundError, match="tastemaker export"):
        create_app(settings)


def test_corrupt_bundle_refused_at_startup(settings, bundles_dir) -> None:
    (bundles_dir / "20240101T000000Z-first" / "vocab.json").write_text("{}")
    with pytest.raises(CorruptBundleError, match="vocab.json"):
        create_app(settings)


def test_admin_reload_swaps_and_refuses_corrupt(client, bundles_dir) -> None:
    assert client.post("/admin/reload").json()["swapped"] is False
    v2 = publish_synthetic(bundles_dir, SPEC, trending=TRENDING, version="20240102T000000Z-b")
    assert client.post("/admin/reload").json() == {
        "swapped": True,
        "version": v2,
        "previous": "20240101T000000Z-first",
    }
    assert recs(client, "alice", k=1).json()["bundle_version"] == v2
    v3 = publish_synthetic(bundles_dir, SPEC, trending=TRENDING, version="20240103T000000Z-c")
    (bundles_dir / v3 / "user_tower.onnx").write_bytes(b"not onnx")
    resp = client.post("/admin/reload")
    assert resp.status_code == 409 and "user_tower.onnx" in resp.json()["detail"]
    assert recs(client, "alice", k=1).json()["bundle_version"] == v2
    assert client.get("/healthz").json()["bundle_version"] == v2


def test_admin_token(settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"admin_token": "s3cret"}))) as c:
        assert c.post("/admin/reload").status_code == 403
        assert c.post("/admin/reload", headers={"X-Admin-Token": "s3cret"}).status_code == 200


def test_hot_swap_under_concurrent_requests(client, bundles_dir) -> None:
    """Regression guard: a swap must never fail or tear an in-flight request."""
    stop = threading.Event()
    failures: list[str] = []
    versions: set[str] = set()
    served = [0]

    def hammer(user: str) -> None:
        while not stop.is_set():
            resp = recs(client, user, k=5)
            served[0] += 1
            if resp.status_code != 200:
                failures.append(f"{resp.status_code}: {resp.text[:200]}")
                continue
            body = resp.json()
            versions.add(body["bundle_version"])
            if len(body["items"]) != 5:
                failures.append(f"short list: {body}")

    threads = [threading.Thread(target=hammer, args=(u,)) for u in ("alice", "bob", "x", "carol")]
    for t in threads:
        t.start()
    try:
        for i in range(4):
            publish_synthetic(bundles_dir, SPEC, trending=TRENDING, version=f"2024020{i}T000000Z-h")
            assert client.post("/admin/reload").json()["swapped"] is True
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:3]
    assert served[0] >= 20, f"only {served[0]} requests overlapped the swaps"
    assert "20240203T000000Z-h" in versions and len(versions) >= 2


def test_serving_never_imports_torch() -> None:
    code = (
        "import sys, serving.app, serving.server, serving.precompute, serving.recommender; "
        "import tastemaker.cli, tastemaker.commands.serve; "
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'lightning', 'pytorch_lightning'))); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_watcher_picks_up_a_new_current(settings, bundles_dir) -> None:
    with TestClient(create_app(settings.model_copy(update={"reload_interval_s": 0.05}))) as c:
        v2 = publish_synthetic(bundles_dir, SPEC, trending=TRENDING, version="20240105T000000Z-w")
        deadline = time.monotonic() + 10
        while c.get("/healthz").json()["bundle_version"] != v2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert recs(c, "bob", k=1).json()["bundle_version"] == v2


def test_cli_serve_parses_and_reports_missing_bundle(tmp_path, store_path) -> None:
    from tastemaker.cli import parse_args

    args = parse_args(
        [
            "--workspace",
            str(tmp_path),
            "serve",
            "--port",
            "8123",
            "--bundle",
            str(tmp_path / "nowhere"),
            "--online-store",
            str(store_path),
        ]
    )
    assert (args.host, args.port) == ("127.0.0.1", 8123)
    with pytest.raises(BundleNotFoundError, match="tastemaker export"):
        args.func(args)
