"""Redis restarting under load: the service degrades to trending answers, never to errors or
hangs, and answers from its precomputed slates again once Redis is back. A private
``redis-server`` (Debian's, started and killed by this test, append-only file so a restart
keeps the data) holds the online features and the slates; the shared test Redis is never
touched."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import redis
from fastapi.testclient import TestClient

from data.features.online_store import open_online_store, table_from_rows
from serving.precompute import precompute_bundle
from tests.conftest import skip_unless_required
from tests.deploy.balancer import free_port
from tests.serving.conftest import SPEC, TEST_KEY, TRENDING, USERS

pytestmark = pytest.mark.slow


def _start_redis(port: int, folder: Path) -> subprocess.Popen:
    server = shutil.which("redis-server")
    if server is None:
        skip_unless_required("redis", "redis-server not installed")
    proc = subprocess.Popen(
        [str(server), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
        + ["--appendonly", "yes", "--appendfsync", "always", "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.RedisError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    client.close()
    return proc


def test_redis_restart_mid_load_degrades_to_trending_then_recovers(
    tmp_path, monkeypatch, caplog
) -> None:
    from core.settings import Settings
    from data.pii import KEY_ENV
    from serving.app import create_app
    from tests.fixtures.synthetic_bundle import publish_synthetic

    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    monkeypatch.delenv("TASTEMAKER_DEMO", raising=False)
    bundles_dir = tmp_path / "bundles"
    publish_synthetic(bundles_dir, SPEC, trending=TRENDING, version="20240101T000000Z-first")

    port = free_port()
    folder = tmp_path / "redis"
    folder.mkdir()
    proc = _start_redis(port, folder)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        online, slates = f"{url}?prefix=t:users", f"{url}?prefix=t:slates"
        store = open_online_store(online)
        store.put_many(USERS.values())
        store.close()
        users = tmp_path / "users.parquet"
        pq.write_table(table_from_rows(USERS.values()), users)
        precompute_bundle(bundles_dir, users, slates)
        settings = Settings(
            workspace=tmp_path,
            bundle_dir=bundles_dir,
            online_store_url=online,
            slate_store_url=slates,
            reload_interval_s=0,
            health_interval_s=0.2,
            public_recommendations=True,  # the subject is Redis, not who may ask
        )
        seen: list[tuple[float, int, str, float]] = []  # (time, status, source, seconds)
        stop = threading.Event()
        with TestClient(create_app(settings)) as c:
            assert c.get("/v1/users/alice/recommendations?k=3").json()["source"] == "precomputed"

            def load() -> None:
                while not stop.is_set():
                    started = time.monotonic()
                    r = c.get("/v1/users/alice/recommendations?k=3")
                    took = time.monotonic() - started
                    source = r.json().get("source", "") if r.status_code == 200 else ""
                    seen.append((started, r.status_code, source, took))
                    time.sleep(0.002)

            thread = threading.Thread(target=load)
            thread.start()
            time.sleep(0.5)
            proc.kill()  # Redis gone, mid-load
            proc.wait(timeout=10)
            down_at = time.monotonic()
            time.sleep(1.5)
            ready_while_down = c.get("/readyz").status_code
            restart_at = time.monotonic()
            proc = _start_redis(port, folder)  # back, with its data (append-only file)
            up_at = time.monotonic()
            deadline = up_at + 15
            while not (seen and seen[-1][2] == "precomputed"):
                assert time.monotonic() < deadline, "never answered from slates again"
                time.sleep(0.05)
            time.sleep(0.3)
            stop.set()
            thread.join()
    finally:
        proc.kill()
        proc.wait(timeout=10)

    assert {status for _, status, _, _ in seen} == {200}, Counter(s for _, s, _, _ in seen)
    assert max(took for *_, took in seen) < 1.0  # bounded by the store timeout: no hang
    during = Counter(src for t, _, src, _ in seen if down_at + 0.1 < t < restart_at)
    assert during and set(during) <= {"trending"}, during
    assert ready_while_down == 503  # the probe saw the store fail
    # the slate store is skipped for a cool-down after a failure, not tried on every request
    tried = sum("slate lookup failed" in r.getMessage() for r in caplog.records)
    assert 1 <= tried <= (restart_at - down_at) / settings.store_cooldown_s + 3, tried
    assert seen[-1][2] == "precomputed"
