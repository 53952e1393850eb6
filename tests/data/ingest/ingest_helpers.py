"""Tiny raw-event worlds for the ingest, fuzz, crash and subscriber tests (no world needed)."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa

from data.ingest.validate import Lookups

USERS = [f"user-{i}" for i in range(20)]
DELETED = ["user-gone"]
ARTISTS = [f"artist-{i}" for i in range(30)]
KEY = b"test-pseudonym-key-0123"
NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)
BASE = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def lookups() -> Lookups:
    return Lookups(
        users=pa.array(USERS + DELETED, pa.string()),
        deleted_users=pa.array(DELETED, pa.string()),
        artists=pa.array(ARTISTS, pa.string()),
    )


def iso(ts: datetime, offset_min: int = 0) -> str:
    """ISO-8601 local time of UTC ``ts`` at a UTC offset, e.g. 2025-03-01T14:00:00.000+02:00."""
    local = ts.astimezone(timezone(timedelta(minutes=offset_min)))
    return local.isoformat(timespec="milliseconds")


def good_event(i: int, when: datetime | None = None, **overrides: object) -> dict:
    """A valid stream event; ``i`` picks ids, user and artist deterministically."""
    when = when or BASE + timedelta(minutes=i)
    event = {
        "event_id": f"ev-{i:06d}",
        "event_type": "stream",
        "user_id": USERS[i % len(USERS)],
        "artist_id": ARTISTS[i % len(ARTISTS)],
        "track_id": f"track-{i % 50}",
        "request_id": f"req-{i // 10}",
        "position": i % 10,
        "ms_played": 60_000 + i % 1000,
        "track_duration_ms": 200_000,
        "client_ts": iso(when, offset_min=[0, 120, -300, 330][i % 4]),
        "server_ts": int(when.timestamp() * 1000) + 1500,
        "country": "DE",
        "device": "ios",
    }
    event.update(overrides)
    return event


def line(event: dict) -> str:
    return json.dumps(event)


def write_object(root: Path, name: str, lines: list[str] | list[bytes]) -> Path:
    """Write ``lines`` as one gzipped JSON-lines object at ``root/raw/events/name``."""
    path = root / "raw" / "events" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = [x.encode() if isinstance(x, str) else x for x in lines]
    path.write_bytes(gzip.compress(b"\n".join(raw) + b"\n"))
    return path


def _drop(event: dict, name: str) -> dict:
    return {k: v for k, v in event.items() if k != name}


def _raw(event: dict) -> bytes:
    return json.dumps(event).encode()


# kind -> (make broken line from a good event, expected quarantine reason)
BREAKERS = {
    "truncated": (lambda e: _raw(e)[:-7], "not_json"),
    "two_objects": (lambda e: _raw(e) + b" " + _raw(e), "not_json"),
    "array": (lambda e: json.dumps([e]).encode(), "not_object"),
    "number": (lambda e: b"42", "not_object"),
    "latin1": (lambda e: _raw(e).replace(b"DE", b"D\xe9"), "not_utf8"),
    "blank": (lambda e: b"   ", "empty_line"),
    "dup_key": (lambda e: b'{"event_id": "x", ' + _raw(e)[1:], "duplicate_field"),
    "no_event_id": (lambda e: _raw(_drop(e, "event_id")), "missing_field:event_id"),
    "no_user": (lambda e: _raw({**e, "user_id": None}), "missing_field:user_id"),
    "empty_artist": (lambda e: _raw({**e, "artist_id": ""}), "missing_field:artist_id"),
    "no_client_ts": (lambda e: _raw(_drop(e, "client_ts")), "missing_field:client_ts"),
    "no_server_ts": (lambda e: _raw(_drop(e, "server_ts")), "missing_field:server_ts"),
    "stream_no_ms": (lambda e: _raw(_drop(e, "ms_played")), "missing_field:ms_played"),
    "int_user": (lambda e: _raw({**e, "user_id": 7}), "wrong_type:user_id"),
    "str_server_ts": (
        lambda e: _raw({**e, "server_ts": str(e["server_ts"])}),
        "wrong_type:server_ts",
    ),
    "float_ms": (lambda e: _raw({**e, "ms_played": 1.5}), "wrong_type:ms_played"),
    "bool_position": (lambda e: _raw({**e, "position": True}), "wrong_type:position"),
    "huge_position": (lambda e: _raw({**e, "position": 2**40}), "wrong_type:position"),
    "obj_country": (lambda e: _raw({**e, "country": {"iso": "DE"}}), "wrong_type:country"),
    "bad_type": (lambda e: _raw({**e, "event_type": "purchase"}), "unknown_event_type"),
    "naive_ts": (lambda e: _raw({**e, "client_ts": e["client_ts"][:23]}), "bad_timestamp"),
    "garbage_ts": (lambda e: _raw({**e, "client_ts": "yesterday"}), "bad_timestamp"),
    "month13_ts": (lambda e: _raw({**e, "client_ts": "2025-13-01T00:00:00Z"}), "bad_timestamp"),
    "future": (
        lambda e: _raw({**e, "server_ts": int((NOW + timedelta(days=30)).timestamp() * 1000)}),
        "future_timestamp",
    ),
    "ancient_client": (
        lambda e: _raw({**e, "client_ts": "2001-01-01T00:00:00+01:00"}),
        "before_service_start",
    ),
    "ancient_server": (lambda e: _raw({**e, "server_ts": 1_000_000}), "before_service_start"),
    "negative_ms": (lambda e: _raw({**e, "ms_played": -5}), "negative_ms_played"),
    "seven_hours": (
        lambda e: _raw({**e, "ms_played": 7 * 3_600_000, "track_duration_ms": None}),
        "absurd_ms_played",
    ),
    "five_x_track": (
        lambda e: _raw({**e, "ms_played": 5 * e["track_duration_ms"]}),
        "absurd_ms_played",
    ),
    "zero_duration": (lambda e: _raw({**e, "track_duration_ms": 0}), "bad_track_duration"),
    "negative_position": (lambda e: _raw({**e, "position": -1}), "bad_position"),
    "unknown_user": (lambda e: _raw({**e, "user_id": "user-nobody"}), "unknown_user"),
    "deleted_user": (lambda e: _raw({**e, "user_id": DELETED[0]}), "deleted_user"),
    "unknown_artist": (lambda e: _raw({**e, "artist_id": "artist-nobody"}), "unknown_artist"),
}
