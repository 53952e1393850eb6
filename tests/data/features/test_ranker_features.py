"""Ranker labels and features (data.features.ranker): the slate join and known values."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

from data.features.ranker import (
    RANKER_FEATURES,
    RankerContext,
    RankerSpecError,
    candidate_features,
    check_spec,
    label_impressions,
)
from data.schemas import ARTIST_FEATURES, LAKE_EVENTS

T0 = datetime(2024, 3, 1, 12, tzinfo=timezone.utc)


def events(rows: list[tuple]) -> pa.Table:
    """(event_type, user_key, artist_id, request_id, position, seconds after T0) -> LAKE_EVENTS."""
    cols: dict[str, list] = {n: [] for n in LAKE_EVENTS.names}
    for i, (et, user, artist, req, pos, sec) in enumerate(rows):
        row = {n: None for n in LAKE_EVENTS.names}
        row.update(
            event_id=f"e{i}",
            event_type=et,
            user_key=user,
            artist_id=artist,
            request_id=req,
            position=pos,
            event_ts=datetime.fromtimestamp(T0.timestamp() + sec, timezone.utc),
        )
        for n in LAKE_EVENTS.names:
            cols[n].append(row[n])
    return pa.table(cols, schema=LAKE_EVENTS)


def by_key(table: pa.Table) -> dict[tuple[str, str], dict]:
    return {(r["request_id"], r["artist_id"]): r for r in table.to_pylist()}


def test_a_click_joins_its_impression_and_slate() -> None:
    out = label_impressions(
        events(
            [
                ("impression", "u1", "a1", "r1", 1, 0),
                ("impression", "u1", "a2", "r1", 2, 0),
                ("impression", "u1", "a3", "r1", 3, 0),
                ("click", "u1", "a2", "r1", 2, 10),
                # the same artist shown to the same user in another slate, not clicked there
                ("impression", "u1", "a2", "r2", 1, 100),
                ("impression", "u1", "a4", "r2", 2, 100),
            ]
        )
    )
    rows = by_key(out)
    assert rows[("r1", "a2")]["label"] == 1
    assert rows[("r1", "a2")]["position"] == 2
    assert [rows[("r1", a)]["label"] for a in ("a1", "a3")] == [0, 0]
    assert rows[("r2", "a2")]["label"] == 0  # a click belongs to its own slate only
    assert out.num_rows == 5
    assert rows[("r1", "a1")]["ts_ms"] == int(T0.timestamp() * 1000)


def test_a_slate_without_a_click_gives_negatives_only() -> None:
    out = label_impressions(
        events(
            [
                ("impression", "u1", "a1", "r1", 1, 0),
                ("impression", "u1", "a2", "r1", 2, 0),
                ("stream", "u1", "a1", "r1", 1, 30),  # a stream is not a click
            ]
        )
    )
    assert out.num_rows == 2
    assert out["label"].to_pylist() == [0, 0]


def test_orphan_clicks_and_repeated_impressions() -> None:
    out = label_impressions(
        events(
            [
                ("impression", "u1", "a1", "r1", 1, 0),
                ("impression", "u1", "a1", "r1", 1, 0),  # logged twice: counts once
                ("click", "u1", "a9", "r1", 5, 10),  # its impression was never logged: dropped
                ("click", "u2", "a1", "r1", 1, 10),  # another user's click does not label u1's row
                ("impression", "u1", "a5", None, 1, 0),  # no request id: not a slate
            ]
        )
    )
    assert out.num_rows == 1
    assert out["label"].to_pylist() == [0]


def context() -> RankerContext:
    arts = {n: [] for n in ARTIST_FEATURES.names}
    for aid, tags, pop, rank in (
        ("a1", ["rock", "indie"], 1.0, 1),
        ("a2", ["rock"], 0.5, 2),
        ("a3", ["jazz"], 0.0, 3),
    ):
        row = {n: None for n in ARTIST_FEATURES.names}
        row.update(artist_id=aid, tags=tags, popularity=pop, trending_rank=rank, followers=0)
        for n in ARTIST_FEATURES.names:
            arts[n].append(row[n])
    table = pa.table(arts, schema=ARTIST_FEATURES)
    return RankerContext.build(table, {"global": ["a3", "a1"], "country=DE": ["a2"]})


def test_candidate_features_known_values() -> None:
    ctx = context()
    # history: 3 streams of a2 (rock), 1 of a3 (jazz) -> rock 0.75, jazz 0.25, indie 0
    user = {
        "history": ["a2", "a2", "a3", "a2"],
        "country": "DE",
        "ctr_per_100": 0.2,
        "activity_level": "mid",
        "tenure_bucket": "new",
    }
    rows = ctx.rows(["a1", "a3", "zz"])
    x = candidate_features(ctx, user, rows, np.array([0.9, 0.5, 0.1]), np.array([1, 2, 3]), 4)
    col = {n: x[:, i] for i, n in enumerate(RANKER_FEATURES)}
    np.testing.assert_allclose(col["tag_share"], [0.375, 0.25, 0.0])  # a1: (0.75 + 0) / 2
    np.testing.assert_allclose(col["tag_max_share"], [0.75, 0.25, 0.0])
    np.testing.assert_allclose(col["global_trending"], [0.5, 1.0, 0.0])
    np.testing.assert_allclose(col["country_trending"], [0.0, 0.0, 0.0])  # a2 is DE's only
    np.testing.assert_allclose(col["artist_popularity"], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(col["artist_trending"], [1.0, 1 / 3, 0.0])
    np.testing.assert_allclose(col["position"], [4, 4, 4])
    np.testing.assert_allclose(col["retrieval_log_rank"], np.log1p([1, 2, 3]), rtol=1e-6)
    np.testing.assert_allclose(col["user_ctr"], 0.2, rtol=1e-6)
    assert col["user_activity"][0] == 2.0 and col["user_new"][0] == 1.0
    x2 = candidate_features(ctx, user, ctx.rows(["a2"]), np.array([0.0]), np.array([1]), 1)
    assert x2[0, RANKER_FEATURES.index("country_trending")] == 1.0


def test_an_empty_user_row_reads_as_zeros() -> None:
    ctx = context()
    x = candidate_features(ctx, {}, ctx.rows(["a1"]), np.array([0.3]), np.array([1]), 1)
    assert np.isfinite(x).all()
    assert x[0, RANKER_FEATURES.index("tag_share")] == 0.0


def test_spec_check_names_what_differs() -> None:
    check_spec(list(RANKER_FEATURES), "here")
    with pytest.raises(RankerSpecError, match=r"missing \['position'\], unknown \['slot'\]"):
        check_spec([("slot" if n == "position" else n) for n in RANKER_FEATURES], "bundle v1")
    with pytest.raises(RankerSpecError, match="another order"):
        check_spec(list(reversed(RANKER_FEATURES)), "bundle v1")
