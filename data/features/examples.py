"""Training examples, user sequences and evaluation sets, point in time by construction.

Every example's user state is a prefix sum over the user's events *strictly before* the
event: the log is sorted by (user, event_ts) once, and each row looks up the first row of its
(user, event_ts) tie block, so events at the same millisecond never see each other. The
counts go through the same formulas as :func:`data.features.user.user_features_at`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from core.constants import DAY_MS
from data.features.config import FeatureConfig
from data.features.events import ET, EventLog
from data.features.sort import exclusive_cumsum, stable_order
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


_SPLITS = pa.array(["train", "valid", "test"], pa.string())


def split_of(ts: np.ndarray, valid_cut: int, test_cut: int) -> pa.Array:
    """ "train" before ``valid_cut``, "valid" before ``test_cut``, else "test"."""
    return _SPLITS.take(pa.array((ts >= valid_cut).astype(np.int8) + (ts >= test_cut)))


@dataclass
class _Follows:
    """A log's follows, each with the row of its (user, artist) pair's next action (follow or
    unfollow; ``len(ev.ts)`` for none): what :func:`followed_before` looks states up in."""

    acts: np.ndarray  # rows of follows and unfollows (by user, time)
    rows: np.ndarray  # rows of the follows among them
    until: np.ndarray  # each follow's pair's next action
    who: np.ndarray  # each follow's user


def log_follows(ev: EventLog) -> _Follows:
    acts = np.flatnonzero((ev.et == ET["follow"]) | (ev.et == ET["unfollow"]))  # by user, time
    pair = ev.u[acts].astype(np.int64) * max(ev.n_artists, 1) + ev.a[acts]
    order = stable_order(pair)  # by pair, then row
    later = np.r_[pair[order][1:] == pair[order][:-1], False]
    next_act = np.empty(len(acts), np.int64)
    next_act[order] = np.where(later, np.r_[acts[order][1:], 0], len(ev.ts))
    follow = ev.et[acts] == ET["follow"]
    return _Follows(acts, acts[follow], next_act[follow], ev.u[acts[follow]])


def followed_before(
    ev: EventLog,
    users: np.ndarray,
    bi: np.ndarray,
    follows: _Follows | None = None,
    limit: int | None = None,
) -> pa.ChunkedArray:
    """Per (user, row end ``bi``: rows ``[user's first row, bi)`` are its events before a time): the
    artists that user follows then, most recent follow first, as :func:`followed_pairs` gives
    for ``user_features_at``. A follow is in force from its row until its pair's next action
    (follow or unfollow), so a user's list at ``bi`` is its follows before ``bi`` whose next
    action is not. A list only changes at a follow or unfollow: each distinct state asked for
    is found once, by array arithmetic over its user's follows, and every example takes its
    own (the cost follows the states asked for, not every state of every user). ``follows``:
    the log's, found once for many calls (default: found here). ``limit``: each list keeps
    its newest ``limit`` artists (the prefix of the whole list)."""
    f = log_follows(ev) if follows is None else follows
    acts, rows, until, who = f.acts, f.rows, f.until, f.who
    # the state after a user's j-th action is number (that user's first action + user + j)
    state = np.searchsorted(acts, bi) + users.astype(np.int64)
    wanted, first = np.unique(state, return_index=True)
    lo = np.searchsorted(who, users[first], side="left")  # the user's follows: rows[lo:hi]
    hi = np.searchsorted(rows, bi[first], side="left")  # ... before bi
    n = np.maximum(hi - lo, 0)
    cum = np.cumsum(n)
    total = int(cum[-1]) if len(cum) else 0
    cuts = np.searchsorted(cum, np.arange(1, total // _CANDIDATES + 1) * _CANDIDATES)
    lists = []
    for s, e in zip(np.r_[0, cuts], np.r_[cuts, len(n)], strict=True):  # bounded memory
        n_i = n[s:e]
        k = np.arange(int(n_i.sum())) - np.repeat(np.cumsum(n_i) - n_i, n_i)
        cand = np.repeat(hi[s:e] - 1, n_i) - k  # each state's follows, newest first
        alive = until[cand] >= np.repeat(bi[first][s:e], n_i)
        if limit is not None:  # an alive follow's place in its list: alive ones before it
            before = np.concatenate([[0], np.cumsum(alive)])
            place = before[1:] - np.repeat(before[np.cumsum(n_i) - n_i], n_i) - 1
            alive &= place < limit
        lengths = np.bincount(np.repeat(np.arange(e - s), n_i)[alive], minlength=e - s)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        codes = pa.array(ev.a[rows[cand[alive]]].astype(np.int32))
        lists.append(pa.ListArray.from_arrays(pa.array(offsets), codes))
    states = pa.concat_arrays(lists) if lists else pa.array([], pa.list_(pa.int32()))
    at = np.searchsorted(wanted, state)
    # artist codes are taken per example, and turned into strings once, in slices: one take
    # of millions of lists can pass the 2 GiB of a string array's offsets
    out = []
    for i in range(0, len(at), _TAKE_ROWS):
        mine = states.take(pa.array(at[i : i + _TAKE_ROWS]))
        values = ev.artist_ids.take(mine.flatten())
        out.append(pa.ListArray.from_arrays(_rebased(mine.offsets), values))
    return pa.chunked_array(out, pa.list_(ev.artist_ids.type))


def _rebased(offsets: pa.Array) -> pa.Array:
    """A list array's offsets starting at 0 (``flatten`` drops what precedes the first)."""
    o = offsets.to_numpy()
    return pa.array(o - o[0])


_CANDIDATES = 1 << 22  # (state, follow) pairs looked at per slice
_TAKE_ROWS = 1 << 18  # examples per slice of the followed lists
_COUNTS = ("impr", "click", "recent_impr", "recent_click", "lr_sum", "lr_n", "streams", "days")


@dataclass
class ExampleState:
    """The user state just before each of some positive log ``rows``, as the counts
    :func:`build_examples` turns into columns: found with whole-log prefix sums, once for
    many rows (the sums cost the same for one row as for all), then sliced per batch."""

    rows: np.ndarray
    bi: np.ndarray  # rows [user's first row, bi) are the user's events before the event
    n_before: np.ndarray  # bi - the user's first row: events before it
    counts: dict[str, np.ndarray]  # the ``_COUNTS``, per row
    follows: _Follows

    def slice(self, lo: int, hi: int) -> ExampleState:
        counts = {k: v[lo:hi] for k, v in self.counts.items()}
        return ExampleState(
            self.rows[lo:hi], self.bi[lo:hi], self.n_before[lo:hi], counts, self.follows
        )


def example_state(
    ev: EventLog,
    config: FeatureConfig,
    rows: np.ndarray | None = None,
    follows: _Follows | None = None,
) -> ExampleState:
    """:class:`ExampleState` of the positive log ``rows`` (default: every positive row);
    ``follows``: the log's (:func:`log_follows`), when found already.

    A count before a row is the number of flagged log rows in ``[lo, bi)`` (``lo`` the
    user's first row, or the first row of the recent window): two binary searches in the
    flagged rows' positions, so the cost follows the rows asked for and the flags, with no
    whole-log prefix sum per count (the daily build asks for a few days' rows only)."""
    p = np.nonzero(positive_mask(ev, config))[0] if rows is None else np.asarray(rows, np.int64)
    gs, bi, ws = _bounds(ev, p, config.recent_days * DAY_MS)

    def flagged(mask: np.ndarray) -> np.ndarray:
        return np.flatnonzero(mask)

    def before(at: np.ndarray, lo: np.ndarray = gs) -> np.ndarray:
        return np.searchsorted(at, bi) - np.searchsorted(at, lo)

    impr, click = flagged(ev.et == ET["impression"]), flagged(ev.et == ET["click"])
    listened = flagged(ev.lr_ok)
    lr_cs = exclusive_cumsum(ev.lr_q[listened].astype(np.int64))  # lr_q is 0 where not lr_ok
    counts = {
        "impr": before(impr),
        "click": before(click),
        "recent_impr": before(impr, ws),
        "recent_click": before(click, ws),
        "lr_sum": lr_cs[np.searchsorted(listened, bi)] - lr_cs[np.searchsorted(listened, gs)],
        "lr_n": before(listened),
        "streams": before(flagged(ev.et == ET["stream"])),
        "days": before(flagged(ev.new_day)),
    }
    return ExampleState(p, bi, bi - gs, counts, log_follows(ev) if follows is None else follows)


def _bounds(
    ev: EventLog, rows: np.ndarray, window_ms: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: its user's first row, the first row of its (user, time) tie block (the
    user's rows before it end there), and its user's first row at or after ``ts -
    window_ms``; binary searches in the log's packed (user, time) key."""
    if not len(rows):
        return rows, rows, rows
    t0 = int(ev.ts.min())
    span = int(ev.ts.max()) - t0 + 1
    if ev.n_users * span >= 2**62:
        raise ValueError(f"time span {span} ms x {ev.n_users} users overflows the composite key")
    key = ev.u.astype(np.int64) * span + (ev.ts - t0)  # non-decreasing: log is sorted
    base = ev.u[rows].astype(np.int64) * span
    gs = np.searchsorted(key, base, side="left")
    bi = np.searchsorted(key, key[rows], side="left")
    start = base + np.maximum(ev.ts[rows] - window_ms - t0, 0)
    return gs, bi, np.maximum(np.searchsorted(key, start, side="left"), gs)


def build_examples(
    ev: EventLog,
    config: FeatureConfig,
    valid_cut: int,
    test_cut: int,
    rows: np.ndarray | None = None,
    state: ExampleState | None = None,
) -> pa.Table:
    """``EXAMPLES``: one row per positive event with the user's state just before it; of the
    positive log rows ``rows`` only, in that order, when given (every row's value depends on
    the log, not on which other rows are built); ``state``: those rows' state found
    beforehand (:func:`example_state`; then ``rows`` is not used)."""
    st = example_state(ev, config, rows) if state is None else state
    p, c = st.rows, st.counts
    n_streams = c["streams"]
    dense = dense_values(
        c["impr"],
        c["click"],
        c["recent_impr"],
        c["recent_click"],
        c["lr_sum"],
        c["lr_n"],
        n_streams,
    )
    up = ev.u[p]
    segments = {f: ev.users[f].take(pa.array(up)) for f in ("age_group", "gender", "country")}
    segments["tenure_bucket"] = tenure_bucket(ev.signup_ms[up], ev.ts[p], config.new_user_days)
    segments["activity_level"] = activity_level(st.n_before, c["days"], config.activity_thresholds)
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
        "followed": followed_before(ev, up, st.bi, st.follows, config.followed_len),
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
    state = user_features_at(ev, None, cutoff, config, only=users)
    cols = {n: state[n] for n in EVAL_USERS.names if n in state.column_names}
    cols["split"] = pa.array([split] * len(users), pa.string())
    cols["targets"] = targets.take(pa.array(users))
    return pa.table({n: cols[n] for n in EVAL_USERS.names}).cast(EVAL_USERS)
