"""Feature values on a hand-built lake where every answer is worked out by hand."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from core.workspace import Workspace
from data.features.build import FeatureConfig, build_features, user_features_at
from tests.data.features.features_lake import (
    artists_table,
    at,
    ev,
    events_table,
    users_table,
    write_lake,
)

USERS = users_table(
    [
        ("u1", "25-34", "f", "DE", "Berlin", at(-100)),
        ("u2", "<18", "m", "US", "CA", at(-5)),
        ("u3", "35-44", "m", "DE", "Hamburg", at(-400)),
    ]
)
ROWS = [
    # u2 and u3 listen to track t1 for 2 minutes first; u1 then listens 4 minutes
    ev("stream", "u2", "a1", at(0, 10), "t1", 120_000, 300_000),
    ev("stream", "u3", "a1", at(0, 20), "t1", 120_000, 300_000),
    ev("stream", "u1", "a1", at(1), "t1", 240_000, 300_000),
    # 10 impressions, 2 clicks for u1 on day 2, then 10 impressions and 5 clicks on day 15
    *[ev("impression", "u1", "a2", at(2, i)) for i in range(10)],
    *[ev("click", "u1", "a2", at(2, 20 + i)) for i in range(2)],
    *[ev("impression", "u1", "a3", at(15, i)) for i in range(10)],
    *[ev("click", "u1", "a3", at(15, 20 + i)) for i in range(5)],
    # follows: a2 followed then unfollowed, a4 then a5 followed
    ev("follow", "u1", "a2", at(3)),
    ev("unfollow", "u1", "a2", at(4)),
    ev("follow", "u1", "a4", at(5)),
    ev("follow", "u1", "a5", at(6)),
    # a stream under the 30 s threshold is history but not a positive
    ev("stream", "u3", "a5", at(9), "t5", 10_000, 200_000),
    # two events at the same millisecond must not see each other
    ev("stream", "u3", "a4", at(12), "t4", 60_000, 200_000),
    ev("click", "u3", "a6", at(12)),
    ev("stream", "u2", "a6", at(20), "t6", 90_000, None),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("ws"))
    write_lake(ws, events_table(ROWS), USERS, artists_table([f"a{i}" for i in range(1, 7)]))
    summary = build_features(ws, FeatureConfig())
    tables = {
        n: pq.read_table(ws.features / f"{n}.parquet").to_pylist()
        for n in ("examples", "eval", "user_features", "artist_features", "sequences", "trending")
    }
    return ws, summary, tables


def _user(rows, key):
    return next(r for r in rows if r["user_key"] == key)


def test_cutoffs_are_midnights_before_the_end(built):
    _, summary, _ = built
    assert summary["cutoffs"]["end"].startswith("2024-03-22T00:00:00")
    assert summary["cutoffs"]["test"].startswith("2024-03-15T00:00:00")
    assert summary["cutoffs"]["valid"].startswith("2024-03-08T00:00:00")


def test_listen_ratio_four_minutes_where_others_listen_two(built):
    u1 = _user(built[2]["user_features"], "u1")
    assert u1["listen_ratio"] == pytest.approx(1.0)  # log2(4 / 2)
    assert _user(built[2]["user_features"], "u2")["listen_ratio"] == 0.0  # first on t1


def test_ctr_per_100_and_relative(built):
    u1 = _user(built[2]["user_features"], "u1")
    assert (u1["n_impressions"], u1["n_clicks"]) == (20, 7)
    assert u1["ctr_per_100"] == pytest.approx(7 / 20)
    # recent (last 7 days) 5/10 against all-time 7/20, both Laplace-smoothed
    expected = np.log2((6 / 12) / (8 / 22))
    assert u1["ctr_relative"] == pytest.approx(expected, rel=1e-6)


def test_follows_history_seen_and_segments(built):
    u1 = _user(built[2]["user_features"], "u1")
    assert u1["followed"] == ["a5", "a4"]  # newest first; a2 was unfollowed
    assert u1["history"] == ["a1"] and u1["recent_tracks"] == ["t1"]
    assert u1["history_age_s"] == [pytest.approx(20 * 86400.0)]
    assert u1["seen"] == ["a1", "a2", "a4", "a5", "a3"]  # in order of first engagement
    u3 = _user(built[2]["user_features"], "u3")
    assert u3["history"] == ["a4", "a5", "a1"]  # the short stream is history too
    assert "a5" not in u3["seen"]  # ... but not a positive
    assert (u3["tenure_bucket"], u3["region"], u3["age_group"]) == ("long", "Hamburg", "35-44")
    assert _user(built[2]["user_features"], "u2")["tenure_bucket"] == "new"  # 26 days at end


def test_examples_are_strictly_before_their_event(built):
    ex = built[2]["examples"]
    click = next(r for r in ex if r["user_key"] == "u3" and r["event_type"] == "click")
    assert click["hist_end"] == 2  # the stream at the same millisecond is not counted
    stream = next(r for r in ex if r["user_key"] == "u3" and r["artist_id"] == "a4")
    assert stream["hist_end"] == 2 and stream["split"] == "valid"
    first = next(r for r in ex if r["user_key"] == "u1" and r["event_type"] == "click")
    assert first["ctr_per_100"] == pytest.approx(0.0)  # impressions before, no click yet
    assert not any(r["artist_id"] == "a5" and r["user_key"] == "u3" for r in ex)
    weights = {r["event_type"]: r["weight"] for r in ex}
    assert weights == {"stream": 1.0, "click": 1.0, "follow": 2.0}
    assert {r["split"] for r in ex} == {"train", "valid", "test"}


def test_eval_targets_are_new_artists_after_the_cutoff(built):
    ev_rows = built[2]["eval"]
    test = {r["user_key"]: r for r in ev_rows if r["split"] == "test"}
    assert set(test) == {"u1", "u2"}
    assert test["u1"]["targets"] == ["a3"]  # clicked on day 15; a2 was seen before
    assert test["u2"]["targets"] == ["a6"]
    valid = {r["user_key"]: r for r in ev_rows if r["split"] == "valid"}
    assert valid["u3"]["targets"] == ["a4", "a6"] and valid["u3"]["history"] == ["a1"]


def test_artist_features(built):
    arts = {r["artist_id"]: r for r in built[2]["artist_features"]}
    assert arts["a1"]["completion_rate"] == pytest.approx((0.4 + 0.4 + 0.8) / 3)
    assert arts["a6"]["completion_rate"] == 0.0  # only stream has no known duration
    assert arts["a4"]["followers"] == 1 and arts["a2"]["followers"] == 0
    assert (arts["a1"]["streams_28d"], arts["a1"]["listeners_28d"]) == (3, 3)
    assert arts["a6"]["streams_7d"] == 1 and arts["a1"]["streams_7d"] == 0
    assert arts["a1"]["top_tracks"] == ["t1"] and arts["a1"]["popularity"] == pytest.approx(1.0)
    assert arts["a6"]["trending_rank"] == 1  # the only artist growing in the last week
    assert arts["a1"]["days_active"] == 31


def test_trending_lists(built):
    trend = built[2]["trending"]
    glob = [r["artist_id"] for r in trend if r["segment"] == "global"]
    assert glob[0] == "a6" and set(glob) == {"a1", "a4", "a5", "a6"}
    us = [r["artist_id"] for r in trend if r["segment"] == "country=US"]
    assert us == ["a6", "a1"]


def test_user_features_at_takes_a_raw_table(built):
    table = user_features_at(events_table(ROWS), USERS, at(1, 1))
    u1 = _user(table.to_pylist(), "u1")
    assert u1["history"] == ["a1"] and u1["listen_ratio"] == pytest.approx(1.0)
    assert u1["n_impressions"] == 0
