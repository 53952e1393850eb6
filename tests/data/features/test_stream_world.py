"""Streaming features on the tiny world, against the real Redis (marker ``redis``).

* Parity: the day before the last, replayed through the stream over the batch rows of its
  start (and the reference counters of that time), leaves every listener's live row equal to
  the batch features at its end: every field the stream keeps, the dense and segment ones
  included. Between midnights ``ctr_relative`` counts the recent window's whole days only:
  the streamed counts equal the batch's less the events of the cut part of the oldest day.
* SIGKILL: a worker process killed mid-stream and restarted ends with exactly the live rows of
  a worker that ran through once (nothing lost, nothing counted twice).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import redis

from core.constants import DAY_MS
from core.workspace import Workspace
from data.features.build import cutoffs, load_event_log
from data.features.events import ET
from data.features.live import recent_counts, ring_slots, stream_reference
from data.features.online_store import open_online_store, rows_from_table
from data.features.stream import FeatureStreamer, StreamConfig, live_row, read_state
from data.features.user import user_features_at
from data.ingest.job import load_lookups
from data.ingest.objectstore import ObjectStore
from data.ingest.subscriber import EVENT_FIELD, iter_raw_lines
from data.lake import open_events
from data.pii import pseudonym_key, pseudonymise

ROOT = Path(__file__).resolve().parents[3]
EXACT = ("history", "recent_tracks", "followed", "n_impressions", "n_clicks", "n_streams")
EXACT += ("listen_ratio", "ctr_relative", "ctr_per_100", "log_streams", "activity_level")
EXACT += ("tenure_bucket",)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    from data.ingest.job import run_ingest
    from world.generate import WorldConfig, generate_world

    mp = pytest.MonkeyPatch()
    mp.setenv("TASTEMAKER_DEMO", "1")
    mp.delenv("TASTEMAKER_PSEUDONYM_KEY", raising=False)
    ws = Workspace(tmp_path_factory.mktemp("stream") / "ws").ensure()
    generate_world(ws, WorldConfig.tiny(seed=0))
    run_ingest(ws)
    yield ws
    mp.undo()


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url)
    tag = f"tm-test:{uuid.uuid4().hex[:10]}:"
    yield c, tag
    for k in c.scan_iter(f"{tag}*"):
        c.delete(k)
    c.close()


def _ms(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()


def day_lines(ws: Workspace, start: int, end: int, key: bytes) -> list[bytes]:
    """The lake's events of [start, end) as raw lines (account ids restored), in time order."""
    from data.accounts import default_accounts_url, open_accounts

    with open_accounts(default_accounts_url(ws)) as accounts:
        ids = {pseudonymise(u, key): u for u in accounts.user_ids()}
    table = open_events(ws.lake_events).to_pyarrow_table()
    ts = pc.cast(pc.cast(table["event_ts"], pa.timestamp("ms", tz="UTC")), "int64").to_numpy()
    keep = np.flatnonzero((ts >= start) & (ts < end))
    keep = keep[np.argsort(ts[keep], kind="stable")]
    rows = table.take(keep).to_pylist()
    lines = []
    for r in rows:
        event = {k: v for k, v in r.items() if v is not None and k not in ("user_key", "event_ts")}
        event["user_id"] = ids[r["user_key"]]
        event["client_ts"] = _iso(_ms(r["event_ts"]))
        event["server_ts"] = _ms(r["server_ts"])
        lines.append(orjson.dumps(event))
    return lines


@pytest.mark.redis
def test_a_streamed_day_equals_the_batch_features_at_its_end(world, client, tmp_path) -> None:
    r, tag = client
    key = pseudonym_key()
    ev = load_event_log(world)
    d1 = cutoffs(ev, _config())["end"] - DAY_MS
    d0 = d1 - DAY_MS
    before = user_features_at(ev, None, d0)
    after = {row["user_key"]: row for row in rows_from_table(user_features_at(ev, None, d1))}
    store = open_online_store(tmp_path / "users.sqlite")
    store.put_many(rows_from_table(before))
    lines = day_lines(world, d0, d1, key)
    assert len(lines) > 200
    cfg = StreamConfig(
        stream=f"{tag}events",
        state_prefix=f"{tag}live:",
        batch_size=500,
        exit_when_idle=True,
        block_ms=50,
    )
    pipe = r.pipeline(transaction=False)
    for ln in lines:
        pipe.xadd(cfg.stream, {EVENT_FIELD: ln})
    pipe.execute()
    worker = FeatureStreamer(
        r, store, key, load_lookups(world, None), cfg, reference=stream_reference(ev, d0)
    )
    stats = worker.run(threading.Event())
    assert stats.outcomes == {"applied": len(lines)}
    users = {orjson.loads(ln)["user_id"] for ln in lines}
    assert len(users) > 20
    changed, cut_users = dict.fromkeys(EXACT, 0), 0  # the day moved each field for some listener
    # 8 h after the day, nothing more streamed: the batch over the same events at that time
    mid = d1 + DAY_MS // 3
    day_ev = ev.truncate(d1)
    at_mid = {r["user_key"]: r for r in rows_from_table(user_features_at(day_ev, None, mid))}
    cut = (mid - 7 * DAY_MS, d1 - 6 * DAY_MS)  # the part of the oldest day left out
    impression, click = ET["impression"], ET["click"]
    for uid in users:
        user_key = pseudonymise(uid, key)
        state = read_state(r, user_key, cfg.state_prefix)
        assert state is not None and state["rf"] == 1
        got, want = live_row(store.get(user_key), state, d1), after[user_key]
        for f in EXACT:
            assert got[f] == want[f], (f, uid, got[f], want[f])
            changed[f] += store.get(user_key)[f] != want[f]
        assert set(got["seen"]) == set(want["seen"])
        assert got["seen"] == want["seen"]
        assert got["history_age_s"] == pytest.approx(want["history_age_s"], abs=0.5)
        # mid-day: the streamed recent counts are the batch window's less its cut-off part
        u = int(np.searchsorted(ev.user_ids.to_numpy(zero_copy_only=False), user_key))
        rows = (day_ev.u == u) & (day_ev.ts >= cut[0]) & (day_ev.ts < cut[1])
        cut_impr = int((rows & (day_ev.et == impression)).sum())
        cut_clicks = int((rows & (day_ev.et == click)).sum())
        ri, rc = recent_counts(state, ring_slots(_config()), mid, 7)
        recent = (day_ev.u == u) & (day_ev.ts >= mid - 7 * DAY_MS)
        assert ri == int((recent & (day_ev.et == impression)).sum()) - cut_impr
        assert rc == int((recent & (day_ev.et == click)).sum()) - cut_clicks
        got_mid = live_row(store.get(user_key), state, mid)
        for f in ("listen_ratio", "activity_level", "tenure_bucket", "ctr_per_100"):
            assert got_mid[f] == at_mid[user_key][f], (f, uid)
        if not cut_impr and not cut_clicks:
            assert got_mid["ctr_relative"] == at_mid[user_key]["ctr_relative"]
        else:
            cut_users += 1
    # tenure moves with time, not events: no one turned 30 days that day, so check its edge
    assert changed.pop("tenure_bucket") == 0 and all(changed.values()), changed
    su = state["su"]
    assert su is not None
    for at, bucket in ((su + 30 * DAY_MS - 1, "new"), (su + 30 * DAY_MS, "long")):
        assert live_row(store.get(user_key), state, at)["tenure_bucket"] == bucket
    assert cut_users, "no listener had events in the cut part: the bound went untested"
    store.close()


def _config():
    from data.features.config import FeatureConfig

    return FeatureConfig()


def _states(r: redis.Redis, prefix: str) -> dict[str, dict]:
    out = {}
    for k in r.scan_iter(f"{prefix}*"):
        if k.decode().startswith(f"{prefix}track:"):
            continue  # a track's listen reference (the same events give the same one)
        state = {f.decode(): v for f, v in r.hgetall(k).items()}
        state.pop("at")  # when it was applied: the only fields that depend on the run
        state.pop("ax", None)
        out[k.decode()[len(prefix) :]] = state
    return out


@pytest.mark.redis
@pytest.mark.slow
def test_sigkill_and_restart_lose_and_double_count_nothing(world, client, redis_url) -> None:
    r, tag = client
    lines = list(iter_raw_lines(ObjectStore(world.raw)))  # the world's raw events, dirt included
    stream = f"{tag}events"
    pipe = r.pipeline(transaction=False)
    for ln in lines:
        pipe.xadd(stream, {EVENT_FIELD: ln})
    pipe.execute()
    rows = world.online / "users.sqlite"
    open_online_store(rows).close()  # no batch rows: every listener starts empty
    key = pseudonym_key()
    ref = StreamConfig(
        stream=stream,
        group="ref",
        state_prefix=f"{tag}ref:",
        batch_size=200,
        exit_when_idle=True,
        block_ms=50,
    )
    store = open_online_store(rows)
    stats = FeatureStreamer(r, store, key, load_lookups(world, None), ref).run(threading.Event())
    store.close()
    assert stats.entries == len(lines) and stats.outcomes["applied"] > 1000
    want = _states(r, ref.state_prefix)

    env = {
        **os.environ,
        "TASTEMAKER_DEMO": "1",
        "TASTEMAKER_WORKSPACE": str(world.root),
        "TASTEMAKER_EVENT_BUS_URL": redis_url,
        "TASTEMAKER_ONLINE_STORE_URL": str(rows),
    }
    env.pop("TASTEMAKER_PSEUDONYM_KEY", None)
    cmd = [sys.executable, "-m", "tastemaker.cli", "stream-features", "--stream", stream]
    cmd += ["--group", "killed", "--state-prefix", f"{tag}kill:", "--batch-size", "50"]
    cmd += ["--block-ms", "100"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None and time.monotonic() < deadline
        groups = {g["name"].decode(): g for g in r.xinfo_groups(stream)}
        done = groups.get("killed", {}).get("entries-read") or 0
        if done > len(lines) // 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = len(_states(r, f"{tag}kill:"))
    assert killed_at > 0, "SIGKILL must land mid-stream for this test to mean anything"
    again = subprocess.run([*cmd, "--exit-when-idle"], cwd=ROOT, env=env, timeout=300)
    assert again.returncode == 0
    assert r.xpending(stream, "killed")["pending"] == 0
    got = _states(r, f"{tag}kill:")
    assert got == want
