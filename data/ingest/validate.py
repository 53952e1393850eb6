"""Row rules for parsed raw events, vectorised with ``pyarrow.compute``.

Every row gets at most one reason: the FIRST rule in :data:`ROW_REASONS` order that it
breaks (structure, then time, then values, then references), so a line's reason is stable.

Rules (documented here, enforced here only):

* ``missing_field:<name>``: a required field is absent, null or an empty string;
  ``ms_played`` is required on ``stream`` events.
* ``unknown_event_type``: not one of ``data.schemas.EVENT_TYPES``.
* ``bad_timestamp``: ``client_ts`` is not ISO-8601 with a UTC offset (a naive local time is
  ambiguous, so it is rejected, not guessed).
* Clock skew: ``event_ts`` is ``client_ts`` in UTC, except when the client claims the event
  happened more than ``max_client_ahead_ms`` (5 min) AFTER the server received it, which is
  impossible, so the client's clock is wrong and ``server_ts`` is used instead. A client_ts
  BEFORE server_ts is a legitimate late event (buffered offline) and is kept: it lands in the
  partition of its event time.
* ``future_timestamp``: ``server_ts`` more than ``future_tolerance_ms`` after the run's clock.
* ``before_service_start``: ``event_ts`` or ``server_ts`` before ``service_start``.
* ``negative_ms_played`` / ``absurd_ms_played``: below 0; above 6 h, or above 4x a known
  ``track_duration_ms`` (a few replays of one track fit; more is a broken counter).
* ``bad_track_duration``: ``track_duration_ms`` present but <= 0 or above 6 h.
* ``bad_position``: ``position`` below 0.
* ``deleted_user`` / ``unknown_user`` / ``unknown_artist``: in the account table but deleted (their events are not kept: erasure wins over analytics), not in it, not in the catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data.schemas import EVENT_TYPES, RAW_REQUIRED_FIELDS

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class IngestRules:
    service_start: datetime = datetime(2010, 1, 1, tzinfo=timezone.utc)
    max_client_ahead_ms: int = 5 * 60_000
    future_tolerance_ms: int = 5 * 60_000
    max_ms_played: int = 6 * HOUR_MS
    max_duration_factor: int = 4
    max_track_duration_ms: int = 6 * HOUR_MS

    @property
    def service_start_ms(self) -> int:
        return int(self.service_start.timestamp() * 1000)


ROW_REASONS = (
    *(f"missing_field:{f}" for f in RAW_REQUIRED_FIELDS),
    "unknown_event_type",
    "missing_field:ms_played",
    "bad_timestamp",
    "future_timestamp",
    "before_service_start",
    "negative_ms_played",
    "absurd_ms_played",
    "bad_track_duration",
    "bad_position",
    "deleted_user",
    "unknown_user",
    "unknown_artist",
)
_REASON_CODE = {r: i + 1 for i, r in enumerate(ROW_REASONS)}  # 0 = valid


@dataclass(frozen=True)
class Lookups:
    """Known ids the references are checked against (None: that check is skipped)."""

    users: pa.Array | None = None
    deleted_users: pa.Array | None = None
    artists: pa.Array | None = None


def as_mask(mask: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean Arrow result as a numpy mask, null = False."""
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def parse_client_ts(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(epoch ms int64, bad mask) for ISO-8601 strings with an offset; nulls are not bad.

    The whole column is cast at once; only a column with a bad value is bisected (with the
    same cast) to find which ones, so valid values are always converted the same way.
    """
    n = len(values)
    out = np.zeros(n, dtype=np.int64)
    bad = np.zeros(n, dtype=bool)
    ns_type = pa.timestamp("ns", tz="UTC")

    def convert(lo: int, hi: int) -> None:
        chunk = values.slice(lo, hi - lo)
        try:
            ts = pc.cast(chunk, ns_type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            if hi - lo == 1:
                bad[lo] = True
                return
            mid = (lo + hi) // 2
            convert(lo, mid)
            convert(mid, hi)
            return
        ms = pc.divide(pc.cast(ts, pa.int64()), 1_000_000)
        out[lo:hi] = pc.fill_null(ms, 0).to_numpy(zero_copy_only=False)

    if n:
        convert(0, n)
    return out, bad


def _user_mask(
    users: pa.DictionaryArray | None, column: pa.ChunkedArray, value_set: pa.Array
) -> np.ndarray:
    """(R,) bool: user id in ``value_set``. With ``users`` (the column dictionary-encoded) only
    the distinct ids are looked up, then spread back to rows; null ids are False."""
    if users is None:
        return as_mask(pc.is_in(column, value_set=value_set))
    per_id = np.append(as_mask(pc.is_in(users.dictionary, value_set=value_set)), False)
    idx = pc.fill_null(users.indices, len(users.dictionary)).to_numpy(zero_copy_only=False)
    return per_id[idx]


def validate_rows(
    table: pa.Table,
    rules: IngestRules,
    lookups: Lookups,
    now_ms: int,
    users: pa.DictionaryArray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(reason codes (R,) int8 with 0 = valid, event_ts epoch ms (R,) int64).

    ``users``: optionally ``table["user_id"]`` already dictionary-encoded (ingest needs that
    encoding for pseudonyms anyway); the account checks then look up each distinct id once.
    """
    n = table.num_rows
    code = np.zeros(n, dtype=np.int8)

    def flag(reason: str, mask: np.ndarray) -> None:
        code[(code == 0) & mask] = _REASON_CODE[reason]

    for name in RAW_REQUIRED_FIELDS:
        col = table[name]
        missing = pc.is_null(col)
        if pa.types.is_string(col.type):
            missing = pc.or_kleene(missing, pc.equal(col, ""))
        flag(f"missing_field:{name}", as_mask(missing))
    event_type = table["event_type"]
    flag("unknown_event_type", ~as_mask(pc.is_in(event_type, value_set=pa.array(EVENT_TYPES))))
    is_stream = as_mask(pc.equal(event_type, "stream"))
    ms_played = table["ms_played"]
    flag("missing_field:ms_played", is_stream & as_mask(pc.is_null(ms_played)))

    client_ms, bad_ts = parse_client_ts(table["client_ts"].combine_chunks())
    flag("bad_timestamp", bad_ts)
    server_ms = pc.fill_null(table["server_ts"], 0).to_numpy(zero_copy_only=False)
    skewed = client_ms > server_ms + rules.max_client_ahead_ms
    event_ms = np.where(skewed, server_ms, client_ms)
    flag("future_timestamp", server_ms > now_ms + rules.future_tolerance_ms)
    start = rules.service_start_ms
    flag("before_service_start", (event_ms < start) | (server_ms < start))

    flag("negative_ms_played", as_mask(pc.less(ms_played, 0)))
    duration = table["track_duration_ms"]
    too_long = pc.greater(ms_played, rules.max_ms_played)
    over_track = pc.and_kleene(
        pc.greater(duration, 0),
        pc.greater(ms_played, pc.multiply(duration, rules.max_duration_factor)),
    )
    flag("absurd_ms_played", as_mask(too_long) | as_mask(over_track))
    bad_duration = pc.or_kleene(
        pc.less_equal(duration, 0), pc.greater(duration, rules.max_track_duration_ms)
    )
    flag("bad_track_duration", as_mask(bad_duration))
    flag("bad_position", as_mask(pc.less(table["position"], 0)))

    user_id = table["user_id"]
    if lookups.deleted_users is not None and len(lookups.deleted_users):
        flag("deleted_user", _user_mask(users, user_id, lookups.deleted_users))
    if lookups.users is not None:
        flag("unknown_user", ~_user_mask(users, user_id, lookups.users))
    if lookups.artists is not None:
        flag("unknown_artist", ~as_mask(pc.is_in(table["artist_id"], value_set=lookups.artists)))
    return code, event_ms


def reason_name(code: int) -> str:
    return ROW_REASONS[code - 1]


def reason_detail(reason: str, row: dict) -> str:
    """A human-readable detail for a row-level reason (built only for rejected rows)."""
    field = reason.split(":", 1)[1] if ":" in reason else None
    if field:
        return f"{field} is missing or empty"
    key = {
        "unknown_event_type": "event_type",
        "bad_timestamp": "client_ts",
        "future_timestamp": "server_ts",
        "before_service_start": "client_ts",
        "negative_ms_played": "ms_played",
        "absurd_ms_played": "ms_played",
        "bad_track_duration": "track_duration_ms",
        "bad_position": "position",
        "unknown_user": "user_id",
        "deleted_user": "user_id",
        "unknown_artist": "artist_id",
    }[reason]
    return f"{key}={row.get(key)!r}"
