"""``tastemaker demo`` and streaming: the worker starts when Redis answers, else one line says
the demo is batch-only and how to turn streaming on."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from core.settings import Settings
from core.workspace import Workspace
from jobs.stream import start_demo_worker


def _keep_environment(monkeypatch: pytest.MonkeyPatch, settings: Settings, url: str) -> None:
    """``start_demo_worker`` exports the settings for its child: undo that after the test."""
    for name, value in settings.model_copy(update={"event_bus_url": url}).child_env().items():
        monkeypatch.setenv(name, value)


def test_without_redis_the_demo_says_batch_only_and_how_to_stream(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(workspace=tmp_path, event_bus_url="redis://127.0.0.1:1/0")
    got, proc, line = start_demo_worker(settings)
    assert proc is None and got == settings
    assert "batch-only" in line and "TASTEMAKER_EVENT_BUS_URL" in line
    assert "\n" not in line


@pytest.mark.redis
def test_with_redis_the_demo_runs_the_worker(
    tiny_world: Workspace, redis_url: str, demo_mode, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = f"tm-test:{uuid.uuid4().hex[:10]}:events"  # a fresh stream: no group yet
    settings = Settings(
        workspace=tiny_world.root, event_bus_url=redis_url, event_stream=stream, demo=True
    )
    _keep_environment(monkeypatch, settings, redis_url)
    got, proc, line = start_demo_worker(settings)
    assert proc is not None
    try:
        assert got.event_bus_url == redis_url and "on (worker pid" in line
        client = redis.Redis.from_url(redis_url)
        deadline = time.monotonic() + 60
        while not _has_group(client, got.event_stream):  # the worker joined the bus
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        client.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0  # SIGTERM: the batch in hand is acked, exit 0
        redis.Redis.from_url(redis_url).delete(stream)


def _has_group(client: redis.Redis, stream: str) -> bool:
    from data.features.stream import DEFAULT_GROUP

    try:
        return any(g["name"].decode() == DEFAULT_GROUP for g in client.xinfo_groups(stream))
    except redis.ResponseError:  # no such stream yet
        return False


def test_the_demo_worker_takes_another_metrics_port_when_its_own_is_held() -> None:
    import socket

    from jobs.stream import free_port

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        port = free_port(busy)  # another demo or test run holds it: a kernel-picked one
        assert port != busy and port > 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))  # and it is really free
    assert free_port(busy) == busy  # released: the preferred port again
