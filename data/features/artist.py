"""Artist features and trending lists, as of one time (the end of data).

* ``followers``: users whose last follow/unfollow of the artist is a follow.
* ``days_active``: whole days since ``created_ts``; since the artist's first event when the
  catalogue lacks it (artists missing from the catalogue are kept: name = id, tags empty).
* ``streams_7d``/``streams_28d``/``listeners_*``: streams and distinct users in the windows.
* ``trending_rank``: 1 = highest growth (streams_7d + s) / (weekly mean of the 21 days
  before + s), s = ``trending_smoothing``; ties by streams_7d. ``popularity``:
  log1p(streams_28d) / max. ``top_tracks``: most streamed tracks (all time).
* ``completion_rate``: mean of min(ms_played / track_duration_ms, 1) over streams whose
  duration is known (> 0); 0.0 when none is.

Trending lists (``TRENDING``): score = streams_7d x growth, per "global" and per
"<field>=<value>" of ``age_group``, ``gender`` and ``country`` (streams by that segment's
users only); artists without recent streams backfill by 28-day and then all-time streams.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.constants import DAY_MS
from data.features.config import FeatureConfig
from data.features.events import ET, EventLog
from data.features.sort import distinct_per_group, stable_order, unique_counts
from data.features.user import followed_pairs, list_column
from data.schemas import ARTIST_FEATURES, TRENDING, TS

_TREND_SEGMENTS = ("age_group", "gender", "country")


def _window_counts(ev: EventLog, rows: np.ndarray, as_of: int, config: FeatureConfig):
    ts = ev.ts[rows]
    recent = ts >= as_of - config.recent_days * DAY_MS
    long = ts >= as_of - config.long_days * DAY_MS
    return recent, long


def _growth(s7: np.ndarray, s28: np.ndarray, config: FeatureConfig) -> np.ndarray:
    weeks_before = max(config.long_days - config.recent_days, 1) / config.recent_days
    past = (s28 - s7) / weeks_before
    sm = config.trending_smoothing
    return (s7 + sm) / (past + sm)


def artist_features(ev: EventLog, as_of: int, config: FeatureConfig) -> pa.Table:
    """``ARTIST_FEATURES`` for every artist of the catalogue and of the events."""
    n_a = ev.n_artists
    idx = np.nonzero(ev.ts < as_of)[0]
    s = idx[ev.et[idx] == ET["stream"]]
    recent, long = _window_counts(ev, s, as_of, config)
    a = ev.a[s]
    s7 = np.bincount(a[recent], minlength=n_a)
    s28 = np.bincount(a[long], minlength=n_a)
    l7 = distinct_per_group(a[recent], ev.u[s][recent], n_a, ev.n_users)
    l28 = distinct_per_group(a[long], ev.u[s][long], n_a, ev.n_users)
    growth = _growth(s7, s28, config)
    rank = np.empty(n_a, np.int32)
    rank[np.lexsort((-s7, -growth))] = np.arange(1, n_a + 1, dtype=np.int32)
    pop = np.log1p(s28)
    pop = pop / pop.max() if n_a and pop.max() > 0 else np.zeros(n_a)

    fol = followed_pairs(ev, idx[(ev.et[idx] == ET["follow"]) | (ev.et[idx] == ET["unfollow"])])
    followers = np.bincount(ev.a[fol], minlength=n_a)

    first_ms = np.full(n_a, as_of, np.int64)
    np.minimum.at(first_ms, ev.a[idx], ev.ts[idx])
    created = ev.artists["created_ts"].cast(pa.int64()).fill_null(-1).to_numpy()
    start = np.where(created >= 0, created, first_ms)
    days = np.maximum((as_of - start) // DAY_MS, 0).astype(np.int32)

    known = s[~np.isnan(ev.dur[s]) & ~np.isnan(ev.ms[s])]
    frac = np.minimum(ev.ms[known] / ev.dur[known], 1.0)
    done_n = np.bincount(ev.a[known], minlength=n_a)
    done = np.bincount(ev.a[known], weights=frac, minlength=n_a)
    completion = np.where(done_n > 0, done / np.maximum(done_n, 1), 0.0)

    return pa.table(
        {
            "artist_id": ev.artist_ids,
            "as_of": pa.array(np.full(n_a, as_of, np.int64)).cast(TS),
            "name": ev.artists["name"],
            "tags": ev.artists["tags"],
            "followers": pa.array(followers.astype(np.int64)),
            "days_active": pa.array(days),
            "streams_7d": pa.array(s7.astype(np.int64)),
            "streams_28d": pa.array(s28.astype(np.int64)),
            "listeners_7d": pa.array(l7.astype(np.int64)),
            "listeners_28d": pa.array(l28.astype(np.int64)),
            "trending_rank": pa.array(rank),
            "popularity": pa.array(pop.astype(np.float32)),
            "top_tracks": _top_tracks(ev, s, config.top_tracks_k),
            "completion_rate": pa.array(completion.astype(np.float32)),
        }
    ).cast(ARTIST_FEATURES)


def _top_tracks(ev: EventLog, s: np.ndarray, k: int) -> pa.ListArray:
    s = s[ev.tr[s] >= 0]
    n_t = max(len(ev.track_ids), 1)
    key, counts = unique_counts(ev.a[s].astype(np.int64) * n_t + ev.tr[s])
    art, trk = key // n_t, key % n_t
    order = np.lexsort((trk, -counts, art))
    art, trk = art[order], trk[order]
    rank = np.arange(len(art)) - np.searchsorted(art, art, side="left")
    keep = rank < k
    return list_column(art[keep], ev.track_ids.take(pa.array(trk[keep])), ev.n_artists)


def _ranked(
    seg: str, a: np.ndarray, recent: np.ndarray, long: np.ndarray, n_a: int, config: FeatureConfig
) -> tuple[list, np.ndarray, np.ndarray]:
    s7 = np.bincount(a[recent], minlength=n_a)
    s28 = np.bincount(a[long], minlength=n_a)
    total = np.bincount(a, minlength=n_a)
    score = s7 * _growth(s7, s28, config)
    order = np.lexsort((-total, -s28, -score))
    order = order[total[order] > 0][: config.trending_k]
    return [seg] * len(order), order, score[order]


def trending(ev: EventLog, as_of: int, config: FeatureConfig) -> pa.Table:
    """``TRENDING``: the "global" list and one per segment value with recent streams."""
    n_a = ev.n_artists
    s = np.nonzero((ev.ts < as_of) & (ev.et == ET["stream"]))[0]
    recent, long = _window_counts(ev, s, as_of, config)
    segs, arts, scores = [], [], []

    def add(part: tuple[list, np.ndarray, np.ndarray]) -> None:
        segs.extend(part[0])
        arts.append(part[1])
        scores.append(part[2])

    add(_ranked("global", ev.a[s], recent, long, n_a, config))
    window = s[long]
    for field in _TREND_SEGMENTS:
        enc = ev.users[field].combine_chunks().dictionary_encode()
        rank = pc.array_sort_indices(enc.dictionary).to_numpy()
        codes = enc.dictionary.take(pa.array(rank)).to_pylist()
        inverse = np.argsort(rank)[enc.indices.to_numpy(zero_copy_only=False)]  # sorted codes
        of_row = inverse[ev.u[window]]
        order = stable_order(of_row)  # slice per segment value, no mask per value
        a_sorted, r_sorted = ev.a[window][order], recent[long][order]
        bounds = np.searchsorted(of_row[order], np.arange(len(codes) + 1))
        for c in range(len(codes)):
            lo, hi = bounds[c], bounds[c + 1]
            if hi > lo:
                add(
                    _ranked(
                        f"{field}={codes[c]}",
                        a_sorted[lo:hi],
                        r_sorted[lo:hi],
                        np.ones(hi - lo, bool),
                        n_a,
                        config,
                    )
                )
    ranks: np.ndarray | list[int] = (
        np.concatenate([np.arange(1, len(x) + 1) for x in arts]) if arts else []
    )
    return pa.table(
        {
            "segment": pa.array(segs, pa.string()),
            "artist_id": ev.artist_ids.take(pa.array(np.concatenate(arts).astype(np.int64))),
            "rank": pa.array(np.asarray(ranks, np.int32)),
            "score": pa.array(np.concatenate(scores).astype(np.float32)),
        }
    ).cast(TRENDING)
