"""Hand-built lake tables for the feature tests: every value chosen so answers are known."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa

from core.atomic import write_table
from core.workspace import Workspace
from data.lake import append_events, publish_users
from data.schemas import ARTISTS, LAKE_EVENTS, USERS

T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)  # day 0, midnight UTC


def at(day: float, minutes: float = 0) -> datetime:
    return T0 + timedelta(days=day, minutes=minutes)


def ev(
    kind: str,
    user: str,
    artist: str,
    when: datetime,
    track: str | None = None,
    ms: int | None = None,
    dur: int | None = None,
) -> dict:
    return {
        "event_type": kind,
        "user_key": user,
        "artist_id": artist,
        "event_ts": when,
        "track_id": track,
        "ms_played": ms,
        "track_duration_ms": dur,
    }


def events_table(rows: list[dict]) -> pa.Table:
    cols = {f.name: [r.get(f.name) for r in rows] for f in LAKE_EVENTS}
    cols["event_id"] = [f"e{i}" for i in range(len(rows))]
    cols["server_ts"] = cols["event_ts"]
    return pa.table(cols, schema=LAKE_EVENTS)


def users_table(rows: list[tuple]) -> pa.Table:
    """rows: (user_key, age_group, gender, country, region, signup datetime)."""
    names = ("user_key", "age_group", "gender", "country", "region", "signup_ts")
    cols = {n: [r[i] for r in rows] for i, n in enumerate(names)}
    cols["city"] = ["c"] * len(rows)
    return pa.table({n: cols[n] for n in USERS.names}, schema=USERS)


def artists_table(ids: list[str]) -> pa.Table:
    return pa.table(
        {
            "artist_id": ids,
            "name": [f"Name {i}" for i in ids],
            "tags": [[f"tag-{i}"] for i in ids],
            "created_ts": [T0 - timedelta(days=10)] * len(ids),
        },
        schema=ARTISTS,
    )


def write_lake(ws: Workspace, events: pa.Table, users: pa.Table, artists: pa.Table) -> None:
    append_events(ws.lake_events, events, "part-0", {})
    publish_users(ws.lake_users, users, "test")
    write_table(ws.lake_artists, artists)
