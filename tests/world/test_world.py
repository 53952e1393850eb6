"""The synthetic world: deterministic, on contract, with measurable taste and known dirt."""

from __future__ import annotations

import gzip
import json
import sqlite3
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson
import pytest

from core.workspace import Workspace
from data.catalog import load_catalog, publish_catalog
from data.schemas import ARTISTS, EVENT_TYPES, RAW_REQUIRED_FIELDS
from world.generate import WorldConfig, generate_world


def _lines(ws: Workspace) -> list[tuple[str, bytes]]:
    out = []
    for path in sorted(ws.raw_events.glob("dt=*/part-*.jsonl.gz")):
        out.extend(
            (path.parent.name[3:], line) for line in gzip.decompress(path.read_bytes()).splitlines()
        )
    return out


def _events(ws: Workspace) -> tuple[list[dict], int]:
    events, broken = [], 0
    for dt, line in _lines(ws):
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            broken += 1
            continue
        obj["_dt"] = dt
        events.append(obj)
    return events, broken


def _summary(ws: Workspace) -> dict:
    return json.loads((ws.raw / "world.json").read_text())["summary"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Workspace:
    """One tiny world shared by the read-only tests below."""
    ws = Workspace(tmp_path_factory.mktemp("world")).ensure()
    generate_world(ws, WorldConfig.tiny(seed=0))
    return ws


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path):
    def files(ws):
        return {p.relative_to(ws.raw): p.read_bytes() for p in ws.raw.rglob("*") if p.is_file()}

    a, b, c = (Workspace(tmp_path / n).ensure() for n in "abc")
    generate_world(a, WorldConfig.tiny(seed=3))
    generate_world(b, WorldConfig.tiny(seed=3))
    generate_world(c, WorldConfig.tiny(seed=4))
    assert files(a) == files(b)
    assert files(a).keys() and files(a) != files(c)


def test_events_follow_the_raw_contract(world: Workspace):
    events, _ = _events(world)
    catalogue = set(load_catalog(world)["artist_id"].to_pylist())
    assert len(events) > 5_000
    for e in events:
        assert all(f in e for f in RAW_REQUIRED_FIELDS), e
        assert e["event_type"] in EVENT_TYPES
        assert e["artist_id"] in catalogue
        client = datetime.fromisoformat(e["client_ts"])
        assert client.utcoffset() is not None  # always carries the client's offset
        arrival = datetime.fromtimestamp(e["server_ts"] / 1000, tz=timezone.utc)
        assert e["_dt"] == arrival.date().isoformat()  # partitioned by arrival date
        if e["event_type"] == "stream":
            assert e["ms_played"] >= 0 and e["track_id"].startswith(e["artist_id"])
            assert e.get("track_duration_ms", 1) > 0
    offsets = {e["client_ts"][-6:] for e in events}
    assert len(offsets) >= 3


def test_every_click_points_into_the_slate_it_came_from(world: Workspace):
    events, _ = _events(world)
    slots = {
        (e["request_id"], e["position"]): (e["user_id"], e["artist_id"])
        for e in events
        if e["event_type"] == "impression"
    }
    slate_sizes = Counter(rid for rid, _ in slots)
    assert set(slate_sizes.values()) == {10}
    assert {p for _, p in slots} == set(range(1, 11))
    clicks = [e for e in events if e["event_type"] == "click"]
    assert clicks
    for c in clicks:
        assert slots[(c["request_id"], c["position"])] == (c["user_id"], c["artist_id"])
    ctr = len({c["event_id"] for c in clicks}) / len(slots)
    assert 0.01 < ctr < 0.25


def test_popularity_and_activity_are_heavy_tailed(world: Workspace):
    events, _ = _events(world)
    streams = [e for e in events if e["event_type"] == "stream"]
    per_artist = np.sort(np.array(list(Counter(e["artist_id"] for e in streams).values())))[::-1]
    top_tenth = per_artist[: max(1, len(per_artist) // 10)].sum() / per_artist.sum()
    assert top_tenth > 0.35  # uniform popularity would give ~0.10
    per_user = np.sort(np.array(list(Counter(e["user_id"] for e in events).values())))[::-1]
    assert per_user[: len(per_user) // 10].sum() / per_user.sum() > 0.3


def test_users_streams_concentrate_in_their_genres(world: Workspace):
    """Taste is measurable: a user's top-2 genres hold far more of their streams than chance,
    and artists a user discovers in the last week come mostly from genres they played before."""
    events, _ = _events(world)
    genre = {r["artist_id"]: r["tags"][0] for r in load_catalog(world).to_pylist()}
    cutoff = max(e["server_ts"] for e in events) - 7 * 86_400_000
    before, after = defaultdict(Counter), defaultdict(set)
    overall = Counter()
    for e in events:
        if e["event_type"] != "stream":
            continue
        overall[genre[e["artist_id"]]] += 1
        if e["server_ts"] < cutoff:
            before[e["user_id"]][genre[e["artist_id"]]] += 1
        else:
            after[e["user_id"]].add(e["artist_id"])
    share = [
        sum(c for _, c in g.most_common(2)) / sum(g.values())
        for g in before.values()
        if sum(g.values()) >= 10
    ]
    chance = sum(c for _, c in overall.most_common(2)) / sum(overall.values())
    # users close most of the gap between the catalogue-wide top-2 share and full
    # concentration; relative, because the overall genre mix differs with the demographics
    # source (LFM-1b table or the built-in fallback)
    assert (np.mean(share) - chance) / (1 - chance) > 0.4
    hits = total = 0
    seen = {u: set() for u in before}
    for e in events:
        if e["event_type"] == "stream" and e["server_ts"] < cutoff:
            seen[e["user_id"]].add(e["artist_id"])
    for u, artists in after.items():
        if u in before and sum(before[u].values()) >= 10:
            top = {g for g, _ in before[u].most_common(3)}
            for a in artists - seen[u]:
                hits += genre[a] in top
                total += 1
    assert total > 20 and hits / total > 0.6


def test_dirt_is_present_at_the_configured_rates(world: Workspace):
    cfg, summary = WorldConfig.tiny(), _summary(world)
    events, broken = _events(world)
    assert broken == summary["malformed"] > 0
    ids = Counter(e["event_id"] for e in events)
    dups = sum(n - 1 for n in ids.values())
    assert dups == summary["duplicates"]
    n = summary["events"]
    assert n == len(ids)
    assert 0.5 * cfg.duplicate_rate < dups / n < 1.5 * cfg.duplicate_rate
    lag = np.array(
        [e["server_ts"] - datetime.fromisoformat(e["client_ts"]).timestamp() * 1000 for e in events]
    )
    late = int((lag > 3_600_000).sum())
    assert 0.5 * cfg.late_rate < late / len(events) < 2 * cfg.late_rate + 0.01
    future = {e["user_id"] for e, lg in zip(events, lag, strict=False) if lg < -3_600_000}
    assert 0 < len(future) <= 3 * cfg.skewed_client_frac * cfg.n_users


def test_deleted_accounts_are_silent_after_deletion(world: Workspace):
    import sqlite3

    with sqlite3.connect(world.accounts_db) as conn:
        deleted = dict(
            conn.execute("SELECT user_id, deleted_at FROM accounts WHERE deleted_at IS NOT NULL")
        )
    assert deleted
    events, _ = _events(world)
    for e in events:
        if e["user_id"] in deleted:
            when = datetime.fromisoformat(deleted[e["user_id"]]).timestamp() * 1000
            assert (
                datetime.fromisoformat(e["client_ts"]).timestamp() * 1000 <= when + 3 * 86_400_000
            )


def test_catalogue_publishes_to_the_lake(tiny_world: Workspace):
    import pyarrow.parquet as pq

    assert publish_catalog(tiny_world) == WorldConfig.tiny().n_artists
    table = pq.read_table(tiny_world.lake_artists)
    assert table.schema.equals(ARTISTS)
    assert all(tags for tags in table["tags"].to_pylist())


def test_fallback_demographics_without_the_lfm_table(tmp_path: Path):
    """Without ../shared/data the built-in marginals give the same kinds of dirt."""
    import dataclasses

    from world.people import make_people

    cfg = dataclasses.replace(WorldConfig.tiny(), n_users=2_000, use_real_demographics=False)
    people = make_people(cfg, np.random.default_rng(0))
    assert 0.4 < (people.country_entered == "").mean() < 0.7
    assert np.isnan(people.lat[people.country_entered == ""]).all()
    assert np.isfinite(people.lat[people.country_iso != ""]).all()
    assert 0.5 < (people.birth_date == None).mean() < 0.75  # noqa: E711
    assert set(people.age_group.tolist()) >= {0, 1, 6}  # <18, 18-24 and unknown all occur


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown world preset 'huge'"):
        WorldConfig.preset("huge")


def test_a_chunked_world_keeps_the_rules(tmp_path: Path):
    """Big worlds are written a chunk of users at a time, each chunk with its own random
    streams: the same rules as one pass (rates, shares, heavy tails, slates that hold), the
    same people, and the same bytes however many workers wrote it."""
    import dataclasses

    cfg = dataclasses.replace(WorldConfig.tiny(seed=5), n_users=1_200)
    one, two, four = (Workspace(tmp_path / n).ensure() for n in ("one", "two", "four"))
    s_one = generate_world(one, cfg)  # one pass: the draws of every world up to 25,000 users
    s_two = generate_world(two, cfg, chunk_users=300, workers=2)
    generate_world(four, cfg, chunk_users=300, workers=1)

    def files(ws):
        return {p.relative_to(ws.raw): p.read_bytes() for p in ws.raw_events.rglob("*.gz")}

    chunked = files(two)
    assert chunked == files(four)  # independent of the number of workers
    assert {p.name[:11] for p in chunked} == {f"part-u{c:04d}-" for c in range(4)}
    for key in ("events", "lines", "malformed", "duplicates", "late"):
        assert abs(s_two[key] - s_one[key]) <= 0.15 * s_one[key] + 10, key
    for name in EVENT_TYPES:
        share = s_two[f"events_{name}"] / s_two["events"]
        assert abs(share - s_one[f"events_{name}"] / s_one["events"]) < 0.02, name

    events, broken = _events(two)
    assert broken == s_two["malformed"]
    slots = {
        (e["request_id"], e["position"]): (e["user_id"], e["artist_id"])
        for e in events
        if e["event_type"] == "impression"
    }
    assert set(Counter(rid for rid, _ in slots).values()) == {10}  # no slate ids shared
    for c in (e for e in events if e["event_type"] == "click"):
        assert slots[(c["request_id"], c["position"])] == (c["user_id"], c["artist_id"])
    per_user = np.sort(np.array(list(Counter(e["user_id"] for e in events).values())))[::-1]
    assert per_user[: len(per_user) // 10].sum() / per_user.sum() > 0.3
    users_one = {e["user_id"] for e in _events(one)[0]}
    assert abs(len(per_user) - len(users_one)) <= 0.05 * len(users_one)

    def accounts(ws):
        with sqlite3.connect(ws.accounts_db) as db:
            return db.execute("SELECT * FROM accounts ORDER BY user_id").fetchall()

    assert accounts(two) == accounts(one)  # the same people, whatever the chunks
