"""Every table tastemaker writes, declared once.

Readers and writers import these schemas and the column-name constants below; no column
name is typed twice anywhere else. Timestamps are UTC, millisecond resolution.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("ms", tz="UTC")

# --- raw event contract (JSON lines in raw/events/dt=YYYY-MM-DD/*.jsonl.gz) -----------------
EVENT_TYPES = ("impression", "click", "stream", "follow", "unfollow")
RAW_REQUIRED_FIELDS = ("event_id", "event_type", "user_id", "artist_id", "client_ts", "server_ts")
RAW_OPTIONAL_FIELDS = (
    "track_id",
    "request_id",
    "position",
    "ms_played",
    "track_duration_ms",
    "country",
    "device",
    "bundle_version",  # impressions the service logs: which bundle served the slate
    "source",  # ... and how: precomputed | model | trending | backfill
)

# The raw contract as Arrow parses it: ids are strings, epoch/int fields integers, client_ts
# an ISO-8601 string normalised later (data.ingest.validate). Unknown fields are ignored here.
RAW_PARSE_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("user_id", pa.string()),
        ("artist_id", pa.string()),
        ("track_id", pa.string()),
        ("request_id", pa.string()),
        ("position", pa.int32()),
        ("ms_played", pa.int64()),
        ("track_duration_ms", pa.int64()),
        ("client_ts", pa.string()),
        ("server_ts", pa.int64()),
        ("country", pa.string()),
        ("device", pa.string()),
        ("bundle_version", pa.string()),
        ("source", pa.string()),
    ]
)

# --- lake: every accepted event once, user ids pseudonymised ---------------------------------
LAKE_EVENTS = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("user_key", pa.string()),  # HMAC-SHA256 pseudonym of the account id (data.pii)
        ("artist_id", pa.string()),
        ("track_id", pa.string()),
        ("request_id", pa.string()),
        ("position", pa.int32()),
        ("ms_played", pa.int64()),
        ("track_duration_ms", pa.int64()),
        ("event_ts", TS),  # event time in UTC (client_ts normalised; see data.ingest.job skew rule)
        ("server_ts", TS),
        ("country", pa.string()),
        ("device", pa.string()),
        ("bundle_version", pa.string()),  # served slates only (impressions the service logs)
        ("source", pa.string()),  # served slates only: precomputed | model | trending | backfill
    ]
)
LAKE_PARTITION = "dt"  # YYYY-MM-DD of event_ts, hive-style folder lake/events/dt=.../

QUARANTINE = pa.schema(
    [
        ("source", pa.string()),  # object path the line came from
        ("line_no", pa.int64()),
        ("reason", pa.string()),  # machine-readable reason code, e.g. "not_json"
        ("detail", pa.string()),  # human-readable detail
        ("line", pa.string()),  # the raw line, verbatim (may hold raw ids: quarantine is PII-zone)
    ]
)

# --- catalogue and PII-safe user view ----------------------------------------------------------
ARTISTS = pa.schema(
    [
        ("artist_id", pa.string()),
        ("name", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("created_ts", TS),  # when the artist joined the service
    ]
)

AGE_GROUPS = ("<18", "18-24", "25-34", "35-44", "45-54", "55+", "unknown")
GENDERS = ("m", "f", "n", "unknown")
USERS = pa.schema(
    [
        ("user_key", pa.string()),
        ("age_group", pa.string()),  # one of AGE_GROUPS; impossible ages -> "unknown"
        ("gender", pa.string()),  # one of GENDERS
        ("country", pa.string()),  # ISO-3166 alpha-2 or "unknown"
        ("region", pa.string()),
        ("city", pa.string()),
        ("signup_ts", TS),
    ]
)

# --- interactions table (what a user of the system may bring instead of an event log) ----------
INTERACTIONS = pa.schema(
    [
        ("user_id", pa.string()),
        ("artist_id", pa.string()),
        ("weight", pa.float32()),
        ("timestamp", TS),
    ]
)
# ... and its optional companions (HetRec): who is friends with whom (one row per direction),
# and which tag a user put on which artist (one row per assignment, the tag by its name)
FRIENDS = pa.schema([("user_id", pa.string()), ("friend_id", pa.string())])
USER_TAGS = pa.schema([("user_id", pa.string()), ("artist_id", pa.string()), ("tag", pa.string())])

# --- features -----------------------------------------------------------------------------------
HISTORY_LEN = 100
# Categorical user features the user tower embeds (values are strings; "unknown" when missing).
USER_SEGMENT_FIELDS = ("age_group", "gender", "country", "tenure_bucket", "activity_level")
# Numeric user features the user tower reads (float32, already scaled to roughly unit range).
USER_DENSE_FIELDS = ("listen_ratio", "ctr_per_100", "ctr_relative", "log_streams")

_SEGMENT_COLS = [(f, pa.string()) for f in USER_SEGMENT_FIELDS]
_DENSE_COLS = [(f, pa.float32()) for f in USER_DENSE_FIELDS]

USER_FEATURES = pa.schema(
    [
        ("user_key", pa.string()),
        ("as_of", TS),  # features see only events with event_ts < as_of
        ("history", pa.list_(pa.string())),  # last HISTORY_LEN artists streamed, most recent first
        ("history_age_s", pa.list_(pa.float32())),  # seconds between each history event and as_of
        ("recent_tracks", pa.list_(pa.string())),  # last HISTORY_LEN tracks, most recent first
        ("followed", pa.list_(pa.string())),  # currently followed artists, most recent first
        ("seen", pa.list_(pa.string())),  # every artist with a positive event before as_of
        *_SEGMENT_COLS,
        *_DENSE_COLS,
        ("region", pa.string()),
        ("n_impressions", pa.int64()),
        ("n_clicks", pa.int64()),
        ("n_streams", pa.int64()),
    ]
)

ARTIST_FEATURES = pa.schema(
    [
        ("artist_id", pa.string()),
        ("as_of", TS),
        ("name", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("followers", pa.int64()),
        ("days_active", pa.int32()),
        ("streams_7d", pa.int64()),
        ("streams_28d", pa.int64()),
        ("listeners_7d", pa.int64()),
        ("listeners_28d", pa.int64()),
        ("trending_rank", pa.int32()),  # 1 = fastest growing against its own past
        ("popularity", pa.float32()),  # log1p(streams_28d) / max, in [0, 1]
        ("top_tracks", pa.list_(pa.string())),
        ("completion_rate", pa.float32()),
    ]
)

SPLITS = ("train", "valid", "test")

# Every user's stream sequence, oldest first. Training examples point into it by offset, so a
# history is never materialised per example and is point-in-time by construction.
USER_SEQUENCES = pa.schema(
    [
        ("user_key", pa.string()),
        ("artists", pa.list_(pa.string())),  # streamed artist per stream event, oldest first
        ("event_ts", pa.list_(TS)),  # same length, non-decreasing
    ]
)

# One row per positive event, joined with the user's features as of just before it.
EXAMPLES = pa.schema(
    [
        ("split", pa.string()),  # one of SPLITS, by event_ts against the cutoffs
        ("user_key", pa.string()),
        ("artist_id", pa.string()),  # the positive
        ("event_type", pa.string()),
        ("event_ts", TS),
        ("weight", pa.float32()),
        # number of the user's USER_SEQUENCES entries strictly before event_ts: the history of
        # this example is artists[max(0, hist_end - HISTORY_LEN):hist_end], most recent last
        ("hist_end", pa.int32()),
        *_SEGMENT_COLS,
        *_DENSE_COLS,
        # artists followed strictly before event_ts, most recent follow first (as USER_FEATURES),
        # the newest FeatureConfig.followed_len of them
        ("followed", pa.list_(pa.string())),
    ]
)

# Cold-start fallback: the most trending artists overall and per segment value.
TRENDING = pa.schema(
    [
        ("segment", pa.string()),  # "global" or "<field>=<value>", e.g. "country=DE"
        ("artist_id", pa.string()),
        ("rank", pa.int32()),  # 1 = first
        ("score", pa.float32()),
    ]
)

# A benchmark peer served through precomputed slates (index.PEER_SLATES_FILE in its bundle):
# one slate per listener, in the slate codec of serving.slates (artist vocab indices of the
# bundle, the bundle's version inside).
PEER_SLATES = pa.schema([("user_key", pa.string()), ("slate", pa.binary())])

# Evaluation sets: user state frozen at a cutoff, and what the user discovered after it.
EVAL_USERS = pa.schema(
    [
        ("split", pa.string()),  # "valid" or "test"
        ("user_key", pa.string()),
        ("as_of", TS),
        ("history", pa.list_(pa.string())),
        ("followed", pa.list_(pa.string())),
        ("seen", pa.list_(pa.string())),  # excluded from recommendations
        *_SEGMENT_COLS,
        *_DENSE_COLS,
        ("targets", pa.list_(pa.string())),  # positives in the window, not in `seen`
    ]
)


def empty_table(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast ``table`` to ``schema``; a missing column is a caller error."""
    missing = [n for n in schema.names if n not in table.column_names]
    if missing:
        raise ValueError(
            f"table is missing columns {missing}; found: {', '.join(table.column_names)}"
        )
    return table.select(schema.names).cast(schema)
