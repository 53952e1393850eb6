"""Serving reads fresh rows (real Redis, marker ``redis``): a stream or follow posted to
``/v1/events`` goes over the bus, ``stream-features`` applies it, and the next answer excludes
the artist; a precomputed slate older than the listener's last applied event is not served."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest
import redis
from conftest import TEST_KEY, TEST_TOKEN_KEY, USERS, token_header
from fastapi.testclient import TestClient

from core.settings import Settings
from data.features.live import track_key
from data.features.online_store import open_online_store, table_from_rows
from data.features.stream import FeatureStreamer, StreamConfig, state_key
from data.ingest.validate import Lookups
from serving.app import create_app
from serving.precompute import precompute
from serving.reload import ModelHolder
from serving.slates import open_slate_store


@pytest.fixture
def bus(redis_url):
    client = redis.Redis.from_url(redis_url)
    stream = f"tm-test:{uuid.uuid4().hex[:10]}:events"
    yield client, stream
    client.delete(stream)
    for user in USERS.values():
        client.delete(state_key(user["user_key"]))
    for key in client.scan_iter(track_key("t-*")):  # the listen references of its streams
        client.delete(key)
    client.close()


def _event(i: int, et: str, artist: str) -> dict:
    event = {
        "event_id": f"fresh-{uuid.uuid4().hex[:8]}-{i}",
        "event_type": et,
        "user_id": "alice",
        "artist_id": artist,
        "client_ts": datetime.now(timezone.utc).isoformat(),
    }
    if et == "stream":
        event.update(track_id=f"t-{artist}", ms_played=90_000, track_duration_ms=200_000)
    return event


def _stream_features(client: redis.Redis, stream: str, store_path: Path) -> dict:
    store = open_online_store(store_path)
    lookups = Lookups(users=pa.array(["alice", "bob", "carol"]))
    config = StreamConfig(stream=stream, exit_when_idle=True, block_ms=50)
    try:
        worker = FeatureStreamer(client, store, TEST_KEY.encode(), lookups, config)
        return worker.run(threading.Event()).outcomes
    finally:
        store.close()


def _items(client: TestClient) -> list[str]:
    r = client.get("/v1/users/alice/recommendations?k=5")
    assert r.status_code == 200
    return [i["artist_id"] for i in r.json()["items"] if i["source"] == "model"], r.json()["source"]


@pytest.mark.redis
@pytest.mark.parametrize("with_slates", [False, True])
def test_a_posted_stream_and_follow_are_excluded_from_the_next_answer(
    tmp_path: Path,
    bundles_dir: Path,
    store_path: Path,
    bus,
    redis_url: str,
    with_slates: bool,
) -> None:
    client, stream = bus
    extra = {}
    if with_slates:
        path = tmp_path / "slates.sqlite"
        model = ModelHolder(bundles_dir).current
        assert (
            precompute(
                model, table_from_rows(USERS.values()), open_slate_store(str(path), create=True)
            )
            == 2
        )
        extra["slate_store_url"] = str(path)
    settings = Settings(
        workspace=tmp_path,
        bundle_dir=bundles_dir,
        online_store_url=str(store_path),
        reload_interval_s=0,
        event_bus_url=redis_url,
        event_stream=stream,
        public_recommendations=True,
        token_key=TEST_TOKEN_KEY,  # POST /v1/events takes the listener's own token
        **extra,
    )
    with TestClient(create_app(settings)) as http:
        before, source = _items(http)
        assert source == ("precomputed" if with_slates else "model") and len(before) >= 2
        http.app.state.events.flush()  # the answer's impressions: counters only
        assert _stream_features(client, stream, store_path) == {"applied": 5}
        again, source = _items(http)
        assert again == before and source == ("precomputed" if with_slates else "model")
        streamed, followed = before[0], before[1]
        r = http.post(
            "/v1/events",
            json={"events": [_event(0, "stream", streamed), _event(1, "follow", followed)]},
            headers=token_header("alice"),
        )
        assert r.status_code == 202 and r.json()["accepted"] == 2
        http.app.state.events.flush()  # the sink's thread would within flush_s
        # the two events and the impressions of the second answer (5 items)
        assert _stream_features(client, stream, store_path) == {"applied": 2 + 5}
        after, source = _items(http)
        assert source == "model"  # fresher than any slate: the real-time path on the live row
        assert streamed not in after and followed not in after
        assert len(after) == len(before)
        streaming = http.get("/ui/api/dashboard").json()["serving"]["streaming"]
        assert streaming["events"] >= 2 + 5 + 5 and streaming["lag_s"] >= 0  # on the dashboard
