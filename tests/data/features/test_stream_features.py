"""Streaming features against the real Redis (marker ``redis``): events -> live rows, atomic and
idempotent by stream id; bad entries quarantined, unknown and erased listeners dropped."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pytest
import redis

from data.features.config import FeatureConfig
from data.features.online_store import open_online_store
from data.features.stream import (
    FeatureStreamer,
    StreamConfig,
    live_row,
    read_state,
    state_key,
)
from data.features.user import dense_values
from data.ingest.subscriber import EVENT_FIELD
from data.ingest.validate import Lookups
from data.pii import pseudonymise

KEY = b"stream-tests-secret-key-0123456789"
T0 = 1_760_000_000_000  # 2025-10-09, after the service start and before now
AS_OF = T0 - 3_600_000


def line(i: int, user: str, et: str, artist: str, ts: int, **extra: object) -> bytes:
    event = {
        "event_id": extra.pop("event_id", f"ev-{i}"),
        "event_type": et,
        "user_id": user,
        "artist_id": artist,
        "client_ts": datetime.fromtimestamp(ts / 1000, tz=timezone.utc).isoformat(),
        "server_ts": ts + 500,
    }
    if et == "stream":
        event.update(track_id=f"t-{artist}", ms_played=60_000, track_duration_ms=200_000)
    event.update(extra)
    return orjson.dumps(event)


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def setup(client, tmp_path: Path):
    """A stream, a group config with its own state prefix, and alice's batch row."""
    tag = uuid.uuid4().hex[:10]
    stream, prefix = f"tm-test:{tag}:events", f"tm-test:{tag}:live:"
    config = StreamConfig(
        stream=stream,
        consumer="c1",
        batch_size=7,
        block_ms=50,
        exit_when_idle=True,
        state_prefix=prefix,
    )
    store = open_online_store(tmp_path / "users.sqlite")
    alice = pseudonymise("alice", KEY)
    store.put_many(
        [
            {
                "user_key": alice,
                "as_of": AS_OF,
                "history": ["a1", "a2"],
                "history_age_s": [60.0, 120.0],
                "recent_tracks": ["t-a1"],
                "followed": ["a9"],
                "seen": ["a1", "a2", "a9"],
                "n_impressions": 10,
                "n_clicks": 1,
                "n_streams": 2,
                "listen_ratio": 0.25,
                "ctr_relative": 0.5,
                "country": "DE",
            }
        ]
    )
    lookups = Lookups(users=pa.array(["alice", "bob", "erin"]), deleted_users=pa.array(["erin"]))
    worker = FeatureStreamer(client, store, KEY, lookups, config)
    yield client, worker, store, alice
    for k in client.scan_iter(f"tm-test:{tag}:*"):
        client.delete(k)
    store.close()


def publish(client, stream: str, lines: list[bytes]) -> list[bytes]:
    return [client.xadd(stream, {EVENT_FIELD: ln}) for ln in lines]


ALICE_DAY = [
    line(1, "alice", "stream", "a5", T0 + 1000),
    line(2, "alice", "follow", "a6", T0 + 2000),
    line(3, "alice", "impression", "a7", T0 + 3000, position=1, request_id="r1"),
    line(4, "alice", "click", "a7", T0 + 4000, position=1, request_id="r1"),
    line(5, "alice", "unfollow", "a9", T0 + 5000),
    line(6, "alice", "stream", "a1", T0 + 6000, ms_played=1000),  # short: not a positive
]


@pytest.mark.redis
def test_events_update_the_live_row(setup) -> None:
    client, worker, _, alice = setup
    publish(client, worker.config.stream, ALICE_DAY)
    stats = worker.run(threading.Event())
    assert stats.outcomes == {"applied": 6}
    state = read_state(client, alice, worker.config.state_prefix)
    assert state is not None
    row = live_row({"user_key": alice, "listen_ratio": 0.25, "country": "DE"}, state, T0 + 10_000)
    assert row["history"] == ["a1", "a5", "a1", "a2"]  # newest first, repeats kept
    assert row["history_age_s"][:2] == [4.0, 9.0]
    assert row["recent_tracks"] == ["t-a1", "t-a5", "t-a1"]
    assert row["followed"] == ["a6"]  # a9 unfollowed
    assert row["seen"] == ["a1", "a2", "a9", "a5", "a6", "a7"]  # first positives, in order
    assert (row["n_impressions"], row["n_clicks"], row["n_streams"]) == (11, 2, 4)
    want = dense_values(*(np.array([v]) for v in (11, 2, 0, 0, 0, 0, 4)))
    assert row["ctr_per_100"] == pytest.approx(float(want["ctr_per_100"][0]))
    assert row["log_streams"] == pytest.approx(float(want["log_streams"][0]))
    assert row["listen_ratio"] == 0.25 and row["country"] == "DE"  # kept from the batch row
    assert client.xpending(worker.config.stream, worker.config.group)["pending"] == 0


@pytest.mark.redis
def test_redelivered_and_duplicate_events_change_nothing(setup) -> None:
    client, worker, _, alice = setup
    ids = publish(client, worker.config.stream, ALICE_DAY)
    worker.run(threading.Event())
    before = client.hgetall(state_key(alice, worker.config.state_prefix))
    entries = [(i, {EVENT_FIELD: ln}) for i, ln in zip(ids, ALICE_DAY, strict=True)]
    worker.process(entries)  # a crash before XACK: the same entries again
    assert client.hgetall(state_key(alice, worker.config.state_prefix)) == before
    assert worker.stats.outcomes["replayed"] == 6
    # the same event posted twice (a client retry): a new stream id, the same event_id
    publish(client, worker.config.stream, [ALICE_DAY[0]])
    worker.run(threading.Event())
    state = read_state(client, alice, worker.config.state_prefix)
    assert worker.stats.outcomes["duplicate"] == 1
    assert state is not None and state["ns"] == 4 and state["h"][:2] == ["a1", "a5"]


@pytest.mark.redis
def test_bad_entries_are_quarantined_and_strangers_dropped(setup) -> None:
    client, worker, _, _ = setup
    publish(
        client,
        worker.config.stream,
        [
            b"{not json",
            line(10, "alice", "teleport", "a1", T0),  # unknown event type
            line(11, "mallory", "stream", "a1", T0),  # no such account
            line(12, "erin", "stream", "a1", T0),  # erased
            orjson.dumps({"event_id": "x"}),  # fields missing
            line(13, "bob", "stream", "a3", T0),  # fine: bob has no batch row yet
        ],
    )
    stats = worker.run(threading.Event())
    out = stats.outcomes
    assert out["dropped:unknown_user"] == 1 and out["dropped:deleted_user"] == 1
    assert out["applied"] == 1
    assert sum(n for k, n in out.items() if k.startswith("quarantined:")) == 3
    assert stats.entries == 6 == sum(out.values())  # counts in == counts out
    assert client.xpending(worker.config.stream, worker.config.group)["pending"] == 0
    bob = read_state(client, pseudonymise("bob", KEY), worker.config.state_prefix)
    assert bob is not None and bob["h"] == ["a3"] and bob["ns"] == 1
    assert read_state(client, pseudonymise("erin", KEY), worker.config.state_prefix) is None


@pytest.mark.redis
def test_an_undecodable_live_row_is_rebuilt_from_the_batch_row(setup) -> None:
    client, worker, _, alice = setup
    key = state_key(alice, worker.config.state_prefix)
    client.set(key, b"\x00half-written{")
    assert read_state(client, alice, worker.config.state_prefix) is None  # never served
    assert client.exists(key) == 0
    client.hset(key, mapping={"id": "0-1", "h": "[half-writ", "seen": ""})  # a torn row
    assert read_state(client, alice, worker.config.state_prefix) is None
    assert client.exists(key) == 0
    client.set(key, b"\x00half-written{")
    publish(client, worker.config.stream, ALICE_DAY[:1])
    worker.run(threading.Event())
    state = read_state(client, alice, worker.config.state_prefix)
    assert state is not None and state["h"] == ["a5", "a1", "a2"] and state["ns"] == 3


@pytest.mark.redis
def test_redis_down_then_back_resumes_from_pending(setup, redis_url) -> None:
    """A worker whose Redis refuses connections retries with back-off; pointed back at the
    server it first re-delivers its pending entries (read before the outage, never acked)."""
    client, worker, store, alice = setup
    cfg = worker.config
    worker.ensure_group()
    publish(client, cfg.stream, ALICE_DAY)
    client.xreadgroup(cfg.group, cfg.consumer, {cfg.stream: ">"}, count=3)  # read, then "crash"
    assert client.xpending(cfg.stream, cfg.group)["pending"] == 3
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    broken = FeatureStreamer(down, store, KEY, worker.lookups, cfg)
    stop = threading.Event()
    t = threading.Thread(target=broken.run, args=(stop,))
    t.start()
    deadline = time.monotonic() + 20
    while broken.stats.retries < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    t.join(timeout=10)
    assert broken.stats.retries >= 2 and broken.stats.entries == 0
    stats = worker.run(threading.Event())
    assert stats.outcomes == {"applied": 6}
    assert client.xpending(cfg.stream, cfg.group)["pending"] == 0
    state = read_state(client, alice, cfg.state_prefix)
    assert state is not None and state["ns"] == 4


@pytest.mark.redis
def test_accounts_made_after_the_start_are_picked_up(setup) -> None:
    client, worker, store, _ = setup
    known = ["alice"]
    late = FeatureStreamer(
        client,
        store,
        KEY,
        Lookups(users=pa.array(known)),
        worker.config,
        reload_lookups=lambda: Lookups(users=pa.array(list(known))),
        reload_every_s=0.0,
    )
    publish(client, worker.config.stream, [line(20, "newbie", "stream", "a1", T0)])
    assert late.run(threading.Event()).outcomes == {"dropped:unknown_user": 1}
    known.append("newbie")  # the account table gains the listener
    publish(client, worker.config.stream, [line(21, "newbie", "stream", "a2", T0 + 1)])
    assert late.run(threading.Event()).outcomes == {"dropped:unknown_user": 1, "applied": 1}


@pytest.mark.redis
def test_a_deleted_stream_is_recreated_not_fatal(setup) -> None:
    client, worker, _, alice = setup
    cfg = worker.config
    stop = threading.Event()
    live = FeatureStreamer(
        client,
        worker.batch_rows,
        KEY,
        worker.lookups,
        StreamConfig(stream=cfg.stream, consumer="c1", block_ms=200, state_prefix=cfg.state_prefix),
    )
    t = threading.Thread(target=live.run, args=(stop,))
    t.start()
    try:
        deadline = time.monotonic() + 20
        while not client.exists(cfg.stream):  # the worker made the stream and its group
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.3)
        client.delete(cfg.stream)  # under a blocked XREADGROUP
        publish(client, cfg.stream, ALICE_DAY[:1])
        while live.stats.outcomes.get("applied", 0) < 1:
            assert time.monotonic() < deadline and t.is_alive()
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(timeout=10)
    state = read_state(client, alice, cfg.state_prefix)
    assert state is not None and state["h"][0] == "a5"


@pytest.mark.redis
def test_a_script_call_of_many_events_equals_one_call_an_event(setup) -> None:
    """Regression for the batched apply: a call holds each row as Lua tables and splices the
    history into its JSON string; with late (out-of-order) events, a history past its length,
    re-follows, duplicates and a listener without a batch row, one call for all the events
    leaves every row exactly as one call an event does."""
    client, worker, store, alice = setup
    day = [
        *ALICE_DAY,
        line(7, "alice", "stream", "a8", T0 + 500),  # late: goes behind a5
        line(8, "alice", "stream", "a/9", T0 + 7000, track_id='t-"q"'),  # escaped in JSON
        line(9, "alice", "follow", "a9", T0 + 8000),
        line(10, "alice", "stream", "a4", T0 + 6000),  # late, a tie with a1: goes before it
        line(11, "alice", "impression", "a3", T0 + 9000, position=2, request_id="r2"),
        line(2, "alice", "follow", "a6", T0 + 2000),  # a retried post: a duplicate
        line(12, "bob", "stream", "a3", T0 + 100),
        line(13, "bob", "stream", "a2", T0 + 50),  # late, behind a3
        line(14, "bob", "follow", "a1", T0 + 200),
        line(15, "bob", "unfollow", "a1", T0 + 150),  # older than the follow: it stays
    ]
    publish(client, worker.config.stream, day)
    features = FeatureConfig(history_len=4)
    rows = {}
    for chunk in (1, 100):
        cfg = replace(worker.config, group=f"g{chunk}", apply_chunk=chunk, state_prefix=f"{chunk}:")
        cfg = replace(cfg, state_prefix=worker.config.state_prefix + cfg.state_prefix)
        w = FeatureStreamer(client, store, KEY, worker.lookups, cfg, features=features)
        stats = w.run(threading.Event())
        assert stats.outcomes == {"applied": len(day) - 1, "duplicate": 1}
        rows[chunk] = {
            who: {
                k: v
                for k, v in client.hgetall(
                    state_key(pseudonymise(who, KEY), cfg.state_prefix)
                ).items()
                if k not in (b"at", b"ax")
            }
            for who in ("alice", "bob")
        }
    assert rows[1] == rows[100]
    state = read_state(client, alice, worker.config.state_prefix + "100:")
    assert state is not None
    assert state["h"] == ["a/9", "a4", "a1", "a5"] and len(state["hts"]) == 4
    assert state["rt"] == ['t-"q"', "t-a4", "t-a1", "t-a5"]
    assert state["f"] == ["a9", "a6"] and state["ns"] == 2 + 5
    bob = read_state(client, pseudonymise("bob", KEY), worker.config.state_prefix + "100:")
    assert bob is not None and bob["h"] == ["a3", "a2"] and bob["f"] == ["a1"]


@pytest.mark.redis
def test_entries_read_as_one_string_keep_their_lines_apart(setup) -> None:
    """The read script joins the batch's lines with newlines: an event written over several
    lines is still one event, and an entry without the event field (or a blank one) is one
    quarantined line, not a shift of the lines after it."""
    client, worker, _, alice = setup
    pretty = orjson.dumps(orjson.loads(ALICE_DAY[0]), option=orjson.OPT_INDENT_2)
    assert pretty.count(b"\n") > 3
    stream = worker.config.stream
    client.xadd(stream, {b"other": b"x"})
    client.xadd(stream, {EVENT_FIELD: pretty})
    client.xadd(stream, {EVENT_FIELD: b"  \r "})
    publish(client, stream, ALICE_DAY[1:3])
    stats = worker.run(threading.Event())
    out = stats.outcomes
    assert out.pop("applied") == 3 and stats.entries == 5
    assert sum(n for k, n in out.items() if k.startswith("quarantined:")) == 2 == sum(out.values())
    state = read_state(client, alice, worker.config.state_prefix)
    assert state is not None and state["h"][0] == "a5" and state["f"][0] == "a6"
