"""Training examples, user sequences and evaluation sets, point in time by construction.

Every example's user state is a prefix sum over the user's events *strictly before* the
event: the log is sorted by (user, event_ts) once, and each row looks up the first row of its
(user, event_ts) tie block, so events at the same millisecond never see each other. The
counts go through the same formulas as :func:`data.features.user.user_features_at`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from core.constants import DAY_MS
from data.features.config import FeatureConfig
from data.features.events import ET, EventLog
from data.features.sort import before_index, exclusive_cumsum, group_starts
from data.features.user import (
    activity_level,
    dense_values,
    list_column,
    positive_mask,
    tenure_bucket,
    user_features_at,
)
from data.schemas import EVAL_USERS, EVENT_TYPES, EXAMPLES, TS, USER_SEGMENT_FIELDS, USER_SEQUENCES


def build_sequences(ev: EventLog) -> pa.Table:
    """``USER_SEQUENCES``: one row per user (empty lists without streams), oldest first."""
    s = np.nonzero(ev.et == ET["stream"])[0]
    g = ev.u[s]
    return pa.table(
        {
            "user_key": ev.user_ids,
            "artists": list_column(g, ev.artist_ids.take(pa.array(ev.a[s])), ev.n_users),
            "event_ts": list_column(g, pa.array(ev.ts[s]).cast(TS), ev.n_users),
        }
    ).cast(USER_SEQUENCES)


def _window_start(ev: EventLog, rows: np.ndarray, window_ms: int) -> np.ndarray:
    """Index of each row's user's first event at or after ``ts - window_ms``."""
    if not len(ev.ts):
        return rows
    t0 = int(ev.ts.min())
    span = int(ev.ts.max()) - t0 + 1
    if ev.n_users * span >= 2**62:
        raise ValueError(f"time span {span} ms x {ev.n_users} users overflows the composite key")
    key = ev.u.astype(np.int64) * span + (ev.ts - t0)  # non-decreasing: log is sorted
    start = np.maximum(ev.ts[rows] - window_ms - t0, 0)
    return np.searchsorted(key, ev.u[rows].astype(np.int64) * span + start, side="left")


_SPLITS = pa.array(["train", "valid", "test"], pa.string())


def split_of(ts: np.ndarray, valid_cut: int, test_cut: int) -> pa.Array:
    """ "train" before ``valid_cut``, "valid" before ``test_cut``, else "test"."""
    return _SPLITS.take(pa.array((ts >= valid_cut).astype(np.int8) + (ts >= test_cut)))


def followed_before(ev: EventLog, users: np.ndarray, bi: np.ndarray) -> pa.ChunkedArray:
    """Per (user, row end ``bi``: rows ``[user's first row, bi)`` are its events before a time): the
    artists that user follows then, most recent follow first, as :func:`followed_pairs` gives
    for ``user_features_at``. A user's followed set only changes at a follow or unfollow, so
    each state is built once (one pass over those actions) and every example takes its own."""
    acts = np.flatnonzero((ev.et == ET["follow"]) | (ev.et == ET["unfollow"]))  # by user, time
    # the state after a user's j-th action is number (that user's first action + user + j):
    # one more state per user than it has actions (the empty one before its first)
    n_states = len(acts) + ev.n_users
    lengths = np.zeros(n_states, np.int64)
    flat: list[int] = []
    user, current = -1, dict[int, int]()  # artist -> follow row, in follow order
    for i, r in enumerate(acts.tolist()):
        if ev.u[r] != user:
            user, current = int(ev.u[r]), {}
        a = int(ev.a[r])
        current.pop(a, None)
        if ev.et[r] == ET["follow"]:
            current[a] = r
        lengths[i + user + 1] = len(current)
        flat.extend(reversed(current))  # newest follow first
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    states = pa.ListArray.from_arrays(
        pa.array(offsets), ev.artist_ids.take(pa.array(flat, pa.int64()))
    )
    at = np.searchsorted(acts, bi) + users
    # in slices: one take of millions of lists can pass the 2 GiB of a string array's offsets
    step = _TAKE_ROWS
    return pa.chunked_array(
        [states.take(pa.array(at[i : i + step])) for i in range(0, len(at), step)],
        states.type,
    )


_TAKE_ROWS = 1 << 18  # examples per slice of the followed lists


def build_examples(ev: EventLog, config: FeatureConfig, valid_cut: int, test_cut: int) -> pa.Table:
    """``EXAMPLES``: one row per positive event with the user's state just before it."""
    p = np.nonzero(positive_mask(ev, config))[0]
    gs = group_starts(ev.u)[p]
    bi = before_index(ev.u, ev.ts)[p]  # rows [gs, bi) are this user's events before the event
    ws = np.maximum(_window_start(ev, p, config.recent_days * DAY_MS), gs)

    def before(flag: np.ndarray, lo: np.ndarray = gs) -> np.ndarray:
        cs = exclusive_cumsum(flag.astype(np.int64))
        return cs[bi] - cs[lo]

    impr, click = ev.et == ET["impression"], ev.et == ET["click"]
    n_streams = before(ev.et == ET["stream"])
    dense = dense_values(
        before(impr),
        before(click),
        before(impr, ws),
        before(click, ws),
        before(ev.lr_q),
        before(ev.lr_ok),
        n_streams,
    )
    up = ev.u[p]
    segments = {f: ev.users[f].take(pa.array(up)) for f in ("age_group", "gender", "country")}
    segments["tenure_bucket"] = tenure_bucket(ev.signup_ms[up], ev.ts[p], config.new_user_days)
    segments["activity_level"] = activity_level(
        bi - gs, before(ev.new_day), config.activity_thresholds
    )
    weights = np.zeros(len(EVENT_TYPES), np.float32)
    for name, w in config.positive_weights().items():
        weights[ET[name]] = w
    cols = {
        "split": split_of(ev.ts[p], valid_cut, test_cut),
        "user_key": ev.user_ids.take(pa.array(up)),
        "artist_id": ev.artist_ids.take(pa.array(ev.a[p])),
        "event_type": pa.array(EVENT_TYPES, pa.string()).take(pa.array(ev.et[p])),
        "event_ts": pa.array(ev.ts[p]).cast(TS),
        "weight": pa.array(weights[ev.et[p]], pa.float32()),
        "hist_end": pa.array(n_streams.astype(np.int32)),
        **{f: segments[f] for f in USER_SEGMENT_FIELDS},
        **{k: pa.array(v, pa.float32()) for k, v in dense.items()},
        "followed": followed_before(ev, up, bi),
    }
    return pa.table(cols).cast(EXAMPLES)


def build_eval(
    ev: EventLog, config: FeatureConfig, split: str, cutoff: int, until: int
) -> pa.Table:
    """``EVAL_USERS`` rows for one split: state at ``cutoff``, new positives in [cutoff, until).

    Targets are artists with a positive event in the window that the user had no positive
    event with before ``cutoff``, in order of first engagement; users without one are left out.
    """
    new = positive_mask(ev, config) & ev.first_pos  # a pair's first positive ever
    rows = np.nonzero(new & (ev.ts >= cutoff) & (ev.ts < until))[0]  # ... is in the window
    targets = list_column(ev.u[rows], ev.artist_ids.take(pa.array(ev.a[rows])), ev.n_users)
    users = np.unique(ev.u[rows])
    state = user_features_at(ev, None, cutoff, config).take(pa.array(users))
    cols = {n: state[n] for n in EVAL_USERS.names if n in state.column_names}
    cols["split"] = pa.array([split] * len(users), pa.string())
    cols["targets"] = targets.take(pa.array(users))
    return pa.table({n: cols[n] for n in EVAL_USERS.names}).cast(EVAL_USERS)
