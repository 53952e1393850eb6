"""Engagement and churn from a hand-made lake with known answers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from core.workspace import Workspace
from data.lake import append_events, publish_users
from data.schemas import LAKE_EVENTS, USERS
from evaluation.engagement import engagement_table
from evaluation.stats import wilson

T0 = datetime(2024, 3, 1, 12, tzinfo=timezone.utc)


def _event(i, kind, user, artist, day, req=None, ms=None, dur=None, minutes=0):
    ts = T0 + timedelta(days=day, minutes=minutes)
    return {
        "event_id": f"e{i}",
        "event_type": kind,
        "user_key": user,
        "artist_id": artist,
        "track_id": None,
        "request_id": req,
        "position": None,
        "ms_played": ms,
        "track_duration_ms": dur,
        "event_ts": ts,
        "server_ts": ts,
        "country": None,
        "device": None,
        "bundle_version": "v1" if kind == "impression" else None,
        "source": "model" if kind == "impression" else None,
    }


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace(tmp_path).ensure()
    ev = []
    # day 0: u1 sees a1, a2 (r1), clicks a1, streams it 60 s of 120 s, follows a2 later
    ev += [
        _event(1, "impression", "u1", "a1", 0, "r1"),
        _event(2, "impression", "u1", "a2", 0, "r1"),
        _event(3, "click", "u1", "a1", 0, "r1", minutes=1),
        _event(4, "stream", "u1", "a1", 0, "r1", 60_000, 120_000, minutes=2),
        _event(5, "follow", "u1", "a2", 0, minutes=3),
    ]
    # day 0: u2 sees a1 twice in two slates, clicks once, streams 10 s (not a stream-through)
    ev += [
        _event(6, "impression", "u2", "a1", 0, "r2"),
        _event(7, "impression", "u2", "a1", 0, "r3"),
        _event(8, "click", "u2", "a1", 0, "r3", minutes=1),
        _event(9, "stream", "u2", "a1", 0, "r3", 10_000, 120_000, minutes=2),
    ]
    # activity for churn: u1 active days 0..20; u2 only day 0; u3 days 0 and 10
    ev += [_event(100 + d, "stream", "u1", "a3", d, ms=40_000, dur=100_000) for d in range(1, 21)]
    ev += [
        _event(200, "stream", "u3", "a3", 0, ms=40_000),
        _event(201, "stream", "u3", "a3", 10, ms=40_000),
    ]
    table = pa.Table.from_pylist(ev, schema=LAKE_EVENTS)
    append_events(ws.lake_events, table, "part-0", {})
    users = pa.Table.from_pylist(
        [
            {
                "user_key": u,
                "age_group": "25-34",
                "gender": g,
                "country": c,
                "region": None,
                "city": None,
                "signup_ts": T0 - timedelta(days=100),
            }
            for u, g, c in (("u1", "f", "DE"), ("u2", "m", "DE"), ("u3", "m", "FR"))
        ],
        schema=USERS,
    )
    publish_users(ws.lake_users, users, "test")
    return ws


def test_ctr_stream_through_follow_rate_and_churn(ws) -> None:
    eng = engagement_table(ws)
    day0 = eng[(eng["date"] == "2024-03-01") & (eng["version"] == "*")].set_index("segment")
    row = day0.loc["all=all"]
    assert (row["impressions"], row["clicks"]) == (4, 2)
    assert row["ctr"] == pytest.approx(50.0)
    assert row["stream_through"] == pytest.approx(0.5)  # u1's 60 s yes, u2's 10 s no
    assert row["follow_rate"] == pytest.approx(25.0)  # one follow of a shown artist
    assert day0.loc["gender=f", "ctr"] == pytest.approx(50.0)
    assert day0.loc["gender=f", "follow_rate"] == pytest.approx(50.0)
    by_version = eng[(eng["date"] == "2024-03-01") & (eng["version"] == "v1")]
    assert by_version.set_index("segment").loc["all=all", "impressions"] == 4
    # week ending day 6: u1, u2, u3 active; next 7 days: only u1 (u3 returns on day 10)
    wk = eng[(eng["date"] == "2024-03-07") & (eng["version"] == "*")].set_index("segment")
    assert wk.loc["all=all", "active_users"] == 3
    assert wk.loc["all=all", "churn7"] == pytest.approx(1 / 3)  # u2 gone; u3 back on day 10
    assert wk.loc["all=all", "churn14"] == pytest.approx(1 / 3)
    assert wk.loc["country=FR", "churn7"] == pytest.approx(0.0)
    late = eng[(eng["date"] == "2024-03-18") & (eng["version"] == "*")].set_index("segment")
    assert late.loc["all=all"].isna()["churn14"]  # the following 14 days run past the data


def test_wilson_interval() -> None:
    lo, hi = wilson([5, 0], [10, 0])
    assert lo[0] == pytest.approx(0.2366, abs=1e-3) and hi[0] == pytest.approx(0.7634, abs=1e-3)
    assert str(lo[1]) == "nan"
