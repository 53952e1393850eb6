"""User features as of any time: the one function behind offline rows and the online store.

``user_features_at(events, users, as_of)`` sees only events with ``event_ts < as_of``. The
formulas that turn counts into segment and dense values live here once and are used both by
it and by the per-event prefix sums of :mod:`data.features.examples`, so a training example at time t
carries exactly the values ``user_features_at(..., as_of=t)`` gives.

Dense fields (float32):
* ``listen_ratio``: mean over the user's streams of log2(ms_played / mean ms_played of all
  earlier streams of the track), each clipped to [-2, 2]; 0 with no such stream. A user who
  listens 4 minutes where others listened 2 scores 1.0.
* ``ctr_per_100``: clicks per 100 impressions, divided by 100 and clipped to [0, 1] (so the
  stored value is the click-through rate); 0 with no impressions.
* ``ctr_relative``: log2 of the recent (last ``recent_days``) over the all-time CTR, both
  Laplace-smoothed ((clicks + 1) / (impressions + 2)), clipped to [-2, 2]; 0 without recent
  impressions.
* ``log_streams``: log1p(streams) / log(1001) (1.0 at 1000 streams).

Segments: ``age_group``, ``gender``, ``country`` (and ``region``) from the account view;
``tenure_bucket`` "new" (< ``new_user_days`` since signup at ``as_of``) or "long";
``activity_level`` "none" (no events), "low" / "mid" / "high" by events per active UTC day.
A user missing from the account view gets "unknown" everywhere.
"""

from __future__ import annotations

import logging
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.constants import DAY_MS
from data.features.config import FeatureConfig
from data.features.events import ET, LR_SCALE, EventLog, build_event_log
from data.schemas import ARTISTS, TS, USER_DENSE_FIELDS, USER_FEATURES

log = logging.getLogger("tastemaker.data")

_LOG_STREAMS_NORM = float(np.log(1001.0))
ET_COUNTED = ("impression", "click", "stream")


def to_ms(t: datetime | int | np.integer) -> int:
    if isinstance(t, datetime):
        if t.tzinfo is None:
            raise ValueError(f"as_of {t!r} is naive; pass a UTC-aware datetime")
        return int(round(t.timestamp() * 1000))
    return int(t)


def dense_values(
    n_impr: np.ndarray,
    n_clicks: np.ndarray,
    recent_impr: np.ndarray,
    recent_clicks: np.ndarray,
    lr_sum_q: np.ndarray,
    lr_n: np.ndarray,
    n_streams: np.ndarray,
) -> dict[str, np.ndarray]:
    """Counts as of a time -> the ``USER_DENSE_FIELDS`` (float32), one formula for all callers."""
    n_impr, n_clicks = n_impr.astype(np.float64), n_clicks.astype(np.float64)
    r_impr, r_clicks = recent_impr.astype(np.float64), recent_clicks.astype(np.float64)
    listen = np.where(lr_n > 0, lr_sum_q / np.maximum(lr_n, 1) / LR_SCALE, 0.0)
    ctr = np.where(n_impr > 0, np.minimum(n_clicks / np.maximum(n_impr, 1), 1.0), 0.0)
    rel = np.log2(((r_clicks + 1) / (r_impr + 2)) / ((n_clicks + 1) / (n_impr + 2)))
    rel = np.where(r_impr > 0, np.clip(rel, -2.0, 2.0), 0.0)
    out = {
        "listen_ratio": listen,
        "ctr_per_100": ctr,
        "ctr_relative": rel,
        "log_streams": np.log1p(n_streams.astype(np.float64)) / _LOG_STREAMS_NORM,
    }
    return {k: out[k].astype(np.float32) for k in USER_DENSE_FIELDS}


TENURES = ("unknown", "new", "long")
LEVELS = ("none", "low", "mid", "high")
_TENURE = pa.array(TENURES, pa.string())
_LEVELS = pa.array(LEVELS, pa.string())


def tenure_code(signup_ms: np.ndarray, at_ms: np.ndarray | int, new_user_days: int) -> np.ndarray:
    """Index into ``TENURES`` per user (the streamed row takes the same codes)."""
    unknown = signup_ms == np.iinfo(np.int64).min
    new = (np.asarray(at_ms) - signup_ms) < new_user_days * DAY_MS
    return np.where(unknown, 0, np.where(new, 1, 2)).astype(np.int8)


def tenure_bucket(signup_ms: np.ndarray, at_ms: np.ndarray | int, new_user_days: int) -> pa.Array:
    """ "new" / "long" / "unknown" per user (strings built by one Arrow take, no objects)."""
    return _TENURE.take(pa.array(tenure_code(signup_ms, at_ms, new_user_days)))


def activity_code(
    n_events: np.ndarray, n_days: np.ndarray, thresholds: tuple[float, float]
) -> np.ndarray:
    """Index into ``LEVELS``: events per active UTC day against the thresholds."""
    rate = n_events / np.maximum(n_days, 1)
    level = np.where(rate < thresholds[0], 1, np.where(rate < thresholds[1], 2, 3))
    return np.where(n_events == 0, 0, level).astype(np.int8)


def activity_level(
    n_events: np.ndarray, n_days: np.ndarray, thresholds: tuple[float, float]
) -> pa.Array:
    return _LEVELS.take(pa.array(activity_code(n_events, n_days, thresholds)))


def positive_mask(ev: EventLog, config: FeatureConfig) -> np.ndarray:
    if ev.stream_min_ms != config.stream_min_ms:
        raise ValueError(
            f"EventLog built with stream_min_ms={ev.stream_min_ms}, config has "
            f"{config.stream_min_ms}; build the log with the same FeatureConfig"
        )
    return ev.positive


def list_column(groups: np.ndarray, values: pa.Array, n_groups: int) -> pa.ListArray:
    """Rows already ordered by ``groups`` (ascending) -> one list per group 0..n_groups-1."""
    counts = np.bincount(groups, minlength=n_groups) if len(groups) else np.zeros(n_groups, int)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def last_per_user(ev: EventLog, rows: np.ndarray, k: int) -> np.ndarray:
    """Of ``rows`` (ascending, so by user then time): each user's last ``k``, newest first."""
    if not len(rows):
        return rows
    g = ev.u[rows]
    ends = np.cumsum(np.bincount(g, minlength=ev.n_users))  # one past each user's last row
    rank = ends[g] - 1 - np.arange(len(rows))  # 0 = newest
    keep = rank < k
    rows, g, rank = rows[keep], g[keep], rank[keep]
    kept = np.bincount(g, minlength=ev.n_users)
    out = np.empty_like(rows)
    out[(np.cumsum(kept) - kept)[g] + rank] = rows  # place by (user, rank): no sort needed
    return out


def followed_pairs(ev: EventLog, rows: np.ndarray) -> np.ndarray:
    """Of follow/unfollow ``rows``: the rows whose (user, artist) is followed after them,
    i.e. each pair's last action is a follow. Ordered by user, newest follow first."""
    if not len(rows):
        return rows
    order = rows[np.lexsort((rows, ev.a[rows], ev.u[rows]))]  # by user, artist, time
    key = ev.u[order].astype(np.int64) * ev.n_artists + ev.a[order]
    last = np.r_[key[1:] != key[:-1], True]
    kept = order[last & (ev.et[order] == ET["follow"])]
    return kept[np.lexsort((-kept, ev.u[kept]))]


def user_features_at(
    events: pa.Table | EventLog,
    users: pa.Table | None,
    as_of: datetime | int,
    config: FeatureConfig | None = None,
    artists: pa.Table | None = None,
    only: np.ndarray | None = None,
) -> pa.Table:
    """``USER_FEATURES`` for every user (account view and events) as of ``as_of`` (UTC).

    ``events`` is a ``LAKE_EVENTS`` table (then ``users`` is the ``USERS`` table) or an
    :class:`EventLog` that already carries its users (then ``users`` must be None).
    ``as_of`` is a UTC datetime or epoch milliseconds; only events strictly before it count.
    ``only`` (ascending user codes of an :class:`EventLog`): the rows of those users alone,
    the very rows of the whole table (a user's row depends on its own events only), with
    their lists and strings built for them alone (the eval sets' users).
    """
    config = config or FeatureConfig()
    if isinstance(events, EventLog):
        if users is not None:
            raise ValueError("user_features_at: an EventLog carries its users; pass users=None")
        ev = events
    else:
        if users is None:
            raise ValueError("user_features_at: pass the USERS table with a raw events table")
        cat = artists if artists is not None else ARTISTS.empty_table()
        ev = build_event_log(events, users, cat, config.stream_min_ms)
    t = to_ms(as_of)
    n_u = ev.n_users
    before = ev.ts < t
    if before.all():  # the end of data (the usual call): every row, no gather needed
        idx = np.arange(len(before))

        def at(values: np.ndarray) -> np.ndarray:
            return values

    else:
        idx = np.flatnonzero(before)

        def at(values: np.ndarray) -> np.ndarray:
            return values[idx]

    del before
    u, et = at(ev.u), at(ev.et)

    def count(mask: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(u[mask], weights=weights, minlength=n_u)

    # one bincount of (user, event type, recent) gives every per-type count at once
    recent = at(ev.ts) >= t - config.recent_days * DAY_MS
    n_et = len(ET)
    by_type = np.bincount(
        u.astype(np.int64) * (2 * n_et) + et + recent * np.int8(n_et), minlength=n_u * 2 * n_et
    ).reshape(n_u, 2, n_et)
    n_impr, n_clicks, n_streams = (by_type[:, :, ET[k]].sum(axis=1) for k in ET_COUNTED)
    lr_ok = at(ev.lr_ok)
    dense = dense_values(
        n_impr,
        n_clicks,
        by_type[:, 1, ET["impression"]],
        by_type[:, 1, ET["click"]],
        count(lr_ok, at(ev.lr_q)[lr_ok].astype(np.float64)),
        count(lr_ok),
        n_streams,
    )
    stream = et == ET["stream"]

    hist = last_per_user(ev, idx[stream], config.history_len)
    tracks = last_per_user(ev, idx[stream & (at(ev.tr) >= 0)], config.history_len)
    follows = followed_pairs(ev, idx[(et == ET["follow"]) | (et == ET["unfollow"])])
    first = idx[at(positive_mask(ev, config)) & at(ev.first_pos)]  # seen, in time order
    n_out = n_u
    if only is not None:  # rows of those users only; list groups renumbered 0..len(only)-1
        place = np.full(n_u, -1, np.int64)
        place[only] = np.arange(len(only))
        hist, tracks, follows, first = (
            r[place[ev.u[r]] >= 0] for r in (hist, tracks, follows, first)
        )
        n_out = len(only)
    else:
        place = np.arange(n_u)

    def pick(values: np.ndarray) -> np.ndarray:
        return values if only is None else values[only]

    def group(rows: np.ndarray) -> np.ndarray:
        return place[ev.u[rows]]

    def strings(values: pa.Array) -> pa.Array:
        return values if only is None else values.take(pa.array(only))

    ages = ((t - ev.ts[hist]) / 1000.0).astype(np.float32)
    cols = {
        "user_key": strings(ev.user_ids),
        "as_of": pa.array(np.full(n_out, t, np.int64)).cast(TS),
        "history": list_column(group(hist), ev.artist_ids.take(pa.array(ev.a[hist])), n_out),
        "history_age_s": list_column(group(hist), pa.array(ages, pa.float32()), n_out),
        "recent_tracks": list_column(
            group(tracks), ev.track_ids.take(pa.array(ev.tr[tracks])), n_out
        ),
        "followed": list_column(group(follows), ev.artist_ids.take(pa.array(ev.a[follows])), n_out),
        "seen": list_column(group(first), ev.artist_ids.take(pa.array(ev.a[first])), n_out),
    }
    for f in ("age_group", "gender", "country"):
        cols[f] = strings(ev.users[f])
    cols["tenure_bucket"] = tenure_bucket(pick(ev.signup_ms), t, config.new_user_days)
    cols["activity_level"] = activity_level(
        pick(by_type.sum(axis=(1, 2))), pick(count(at(ev.new_day))), config.activity_thresholds
    )
    cols.update({k: pa.array(pick(v), pa.float32()) for k, v in dense.items()})
    cols["region"] = strings(ev.users["region"])
    cols["n_impressions"] = pa.array(pick(n_impr).astype(np.int64))
    cols["n_clicks"] = pa.array(pick(n_clicks).astype(np.int64))
    cols["n_streams"] = pa.array(pick(n_streams).astype(np.int64))
    return pa.table({k: cols[k] for k in USER_FEATURES.names}).cast(USER_FEATURES)


def only_users(table: pa.Table, keys: list[str]) -> pa.Table:
    """Rows of ``table`` for ``keys`` (in the table's order)."""
    return table.filter(pc.is_in(table["user_key"], value_set=pa.array(keys, pa.string())))
