"""Redis Streams -> object store, against the real Redis (marker ``redis``), unique keys."""

from __future__ import annotations

import gzip
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest

from data.ingest.objectstore import ObjectStore
from data.ingest.subscriber import Subscriber, SubscriberConfig, connect, publish
from tests.data.ingest.ingest_helpers import BREAKERS, good_event, line, write_object

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def client(redis_url):
    c = connect(redis_url)
    yield c
    c.close()


@pytest.fixture
def stream(client):
    key = f"tastemaker-test:{uuid.uuid4().hex}"
    yield key
    client.delete(key)


def stored_lines(root: Path) -> list[bytes]:
    store = ObjectStore(root)
    return [
        ln for p in store.list("events") for ln in gzip.decompress(store.read_bytes(p)).splitlines()
    ]


def published(root: Path, n: int) -> list[bytes]:
    lines = [line(good_event(i)).encode() for i in range(n)]
    lines[7] = BREAKERS["truncated"][0](good_event(7))  # bad lines travel verbatim too
    write_object(root, "dt=2025-03-01/part-00000.jsonl.gz", lines)
    return lines


@pytest.mark.redis
def test_publish_then_subscribe_round_trip(client, stream, tmp_path):
    lines = published(tmp_path / "src", 250)
    assert publish(client, ObjectStore(tmp_path / "src" / "raw"), stream=stream) == 250
    config = SubscriberConfig(
        stream=stream, consumer="c1", batch_size=40, exit_when_idle=True, block_ms=100
    )
    stats = Subscriber(client, ObjectStore(tmp_path / "dst"), config).run(threading.Event())
    assert stats.events == 250 and stats.batches == 7
    assert sorted(stored_lines(tmp_path / "dst")) == sorted(lines)
    assert client.xpending(stream, config.group)["pending"] == 0
    dts = {p.split("/")[1] for p in ObjectStore(tmp_path / "dst").list("events")}
    assert dts == {"dt=2025-03-01", "dt=unknown"}  # the broken line has no readable server_ts


@pytest.mark.redis
def test_restart_delivers_own_pending_and_claims_dead_consumers(client, stream, tmp_path):
    lines = published(tmp_path / "src", 100)
    publish(client, ObjectStore(tmp_path / "src" / "raw"), stream=stream)
    config = SubscriberConfig(
        stream=stream,
        consumer="c1",
        batch_size=30,
        exit_when_idle=True,
        block_ms=100,
        claim_idle_ms=0,
    )
    sub = Subscriber(client, ObjectStore(tmp_path / "dst"), config)
    sub.ensure_group()
    # two consumers read entries and die before writing/acking them
    client.xreadgroup(config.group, "c1", {stream: ">"}, count=20)
    client.xreadgroup(config.group, "dead", {stream: ">"}, count=20)
    assert client.xpending(stream, config.group)["pending"] == 40
    stats = sub.run(threading.Event())
    assert stats.events == 100
    assert sorted(stored_lines(tmp_path / "dst")) == sorted(lines)
    assert client.xpending(stream, config.group)["pending"] == 0


@pytest.mark.redis
@pytest.mark.slow
def test_sigterm_flushes_and_a_restart_loses_nothing(client, stream, tmp_path, redis_url):
    n = 3000
    lines = published(tmp_path / "src", n)
    publish(client, ObjectStore(tmp_path / "src" / "raw"), stream=stream)
    cmd = [
        sys.executable,
        "-m",
        "tastemaker.cli",
        "--workspace",
        str(tmp_path / "ws"),
        "subscribe",
        "--redis-url",
        redis_url,
        "--stream",
        stream,
        "--consumer",
        "c1",
        "--batch-size",
        "50",
        "--block-ms",
        "200",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    events_dir = tmp_path / "ws" / "raw" / "events"
    deadline = time.monotonic() + 60
    while not (events_dir.exists() and any(events_dir.rglob("*.jsonl.gz"))):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    first = stored_lines(tmp_path / "ws" / "raw")
    info = client.xinfo_groups(stream)[0]
    assert info["pending"] == 0  # what was read was written and acked before exit
    assert 0 < len(first) < n, "SIGTERM must land mid-stream for this test to mean anything"

    done = subprocess.run([*cmd, "--exit-when-idle"], cwd=ROOT, timeout=120)
    assert done.returncode == 0
    got = Counter(stored_lines(tmp_path / "ws" / "raw"))
    assert set(got) == set(lines) and sum(got.values()) == n  # each event exactly once here
    ids = {orjson.loads(x)["event_id"] for x in got if x != lines[7]}
    assert len(ids) == n - 1


def test_unreachable_redis_names_the_url_without_password(tmp_path):
    url = "redis://user:hunter2@127.0.0.1:1/0"
    for command in ("subscribe", "publish"):
        cmd = [sys.executable, "-m", "tastemaker.cli", "--workspace", str(tmp_path), command]
        done = subprocess.run(
            [*cmd, "--redis-url", url], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode != 0
        assert "redis://user:***@127.0.0.1:1/0" in done.stderr
        assert "hunter2" not in done.stderr + done.stdout
    with pytest.raises(ConnectionError, match="127.0.0.1:1"):
        connect(url)
