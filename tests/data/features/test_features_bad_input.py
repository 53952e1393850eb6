"""Each documented bad-input rule of data.features.build, on a lake that breaks it on purpose."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from core.workspace import Workspace
from data.features.build import FeatureConfig, build_features, user_features_at
from data.features.events import build_event_log
from tests.data.features.features_lake import (
    artists_table,
    at,
    ev,
    events_table,
    users_table,
    write_lake,
)

USERS = users_table(
    [("u1", "18-24", "m", "SE", "Stockholm", at(-60)), ("idle", "55+", "f", "FR", "IDF", at(-90))]
)
ROWS = [
    ev("stream", "u1", "a1", at(0), "t1", 100_000, 200_000),
    ev("stream", "ghost", "a1", at(1), "t1", 50_000, None),  # user missing from the view
    ev("stream", "u1", "nocat", at(2), "tx", 60_000, 0),  # artist missing, duration unknown
    ev("stream", "u1", "a1", at(3), None, 40_000, None),  # no track at all
    *[ev("impression", "u1", "a1", at(4, i)) for i in range(6)],  # never clicked
    ev("stream", "u1", "a1", at(20), "t1", 200_000, 200_000),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("ws"))
    write_lake(ws, events_table(ROWS), USERS, artists_table(["a1", "unused"]))
    build_features(ws, FeatureConfig())
    return ws, {
        n: pq.read_table(ws.features / f"{n}.parquet").to_pylist()
        for n in ("user_features", "artist_features", "sequences", "examples")
    }


def _row(rows, key, value):
    return next(r for r in rows if r.get("user_key", r.get("artist_id")) == value)


def test_user_without_events_gets_empty_lists_zeros_and_account_segments(built):
    idle = _row(built[1]["user_features"], "user_key", "idle")
    assert idle["history"] == idle["followed"] == idle["seen"] == idle["recent_tracks"] == []
    assert (idle["n_streams"], idle["n_impressions"], idle["listen_ratio"]) == (0, 0, 0.0)
    assert (idle["age_group"], idle["country"], idle["region"]) == ("55+", "FR", "IDF")
    assert (idle["activity_level"], idle["tenure_bucket"]) == ("none", "long")


def test_events_of_users_missing_from_the_view_are_kept_as_unknown(built):
    ghost = _row(built[1]["user_features"], "user_key", "ghost")
    assert ghost["history"] == ["a1"]
    segs = [ghost[f] for f in ("age_group", "gender", "country", "region", "tenure_bucket")]
    assert segs == ["unknown"] * 5
    assert any(r["user_key"] == "ghost" for r in built[1]["examples"])


def test_artists_missing_from_the_catalogue_are_kept(built):
    seq = _row(built[1]["sequences"], "user_key", "u1")
    assert seq["artists"] == ["a1", "nocat", "a1", "a1"]
    nocat = _row(built[1]["artist_features"], "artist_id", "nocat")
    assert (nocat["name"], nocat["tags"], nocat["days_active"]) == ("nocat", [], 19)
    unused = _row(built[1]["artist_features"], "artist_id", "unused")
    assert (unused["streams_28d"], unused["popularity"], unused["top_tracks"]) == (0, 0.0, [])


def test_unknown_durations_are_left_out_of_completion(built):
    a1 = _row(built[1]["artist_features"], "artist_id", "a1")
    assert a1["completion_rate"] == pytest.approx((0.5 + 1.0) / 2)
    assert _row(built[1]["artist_features"], "artist_id", "nocat")["completion_rate"] == 0.0
    u1 = _row(built[1]["user_features"], "user_key", "u1")
    assert u1["recent_tracks"] == ["t1", "tx", "t1"]  # the track-less stream has none


def test_impressions_without_clicks_give_zero_ctr(built):
    u1 = _row(built[1]["user_features"], "user_key", "u1")
    assert (u1["n_impressions"], u1["n_clicks"], u1["ctr_per_100"]) == (6, 0, 0.0)
    assert u1["ctr_relative"] == 0.0  # no impressions in the last 7 days


def test_rows_without_ids_or_known_type_are_dropped_not_fatal():
    rows = [*ROWS, ev("teleport", "u1", "a1", at(5)), ev("stream", "u1", None, at(5))]
    table = user_features_at(events_table(rows), USERS, at(30))
    assert _row(table.to_pylist(), "user_key", "u1")["n_streams"] == 4


def test_missing_inputs_raise_actionable_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `tastemaker ingest`"):
        build_features(Workspace(tmp_path), FeatureConfig())
    with pytest.raises(ValueError, match="ms_played"):
        build_event_log(events_table(ROWS).drop_columns(["ms_played"]), USERS, artists_table([]))
    with pytest.raises(ValueError, match="naive"):
        from datetime import datetime

        user_features_at(events_table(ROWS), USERS, datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="no usable events"):
        ws = Workspace(tmp_path / "empty")
        write_lake(ws, events_table(ROWS[:0]), USERS, artists_table([]))
        build_features(ws, FeatureConfig(), online="")
    with pytest.raises(ValueError, match="activity_thresholds"):
        FeatureConfig(activity_thresholds=(10.0, 5.0))
