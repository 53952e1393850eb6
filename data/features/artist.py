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
_RANKED = ("trending_rank", "popularity")  # the artist columns that compare artists


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
    return rank_artists(artist_stats(ev, as_of, config), config)


def artist_stats(ev: EventLog, as_of: int, config: FeatureConfig) -> pa.Table:
    """``ARTIST_FEATURES`` less ``trending_rank`` and ``popularity`` (which compare artists):
    every value is the artist's own, so any set of whole artists' events gives the same rows
    (the Spark engine runs this per range of artists, then :func:`rank_artists` once)."""
    n_a = ev.n_artists
    before = ev.ts < as_of
    if before.all():  # the end of data (the usual call): no gather of every row
        idx, et, a_idx = np.arange(len(before)), ev.et, ev.a
    else:
        idx = np.flatnonzero(before)
        et, a_idx = ev.et[idx], ev.a[idx]
    del before
    s = idx[et == ET["stream"]]
    recent, long = _window_counts(ev, s, as_of, config)
    a = ev.a[s]
    s7 = np.bincount(a[recent], minlength=n_a)
    s28 = np.bincount(a[long], minlength=n_a)
    u = ev.u[s]
    l7 = distinct_per_group(a[recent], u[recent], n_a, ev.n_users)
    l28 = distinct_per_group(a[long], u[long], n_a, ev.n_users)

    fol = followed_pairs(ev, idx[(et == ET["follow"]) | (et == ET["unfollow"])])
    followers = np.bincount(ev.a[fol], minlength=n_a)

    created = ev.artists["created_ts"].cast(pa.int64()).fill_null(-1).to_numpy()
    first_ms = np.full(n_a, as_of, np.int64)  # first event: of the artists without created_ts
    lacking = idx[(created < 0)[a_idx]]
    np.minimum.at(first_ms, ev.a[lacking], ev.ts[lacking])
    start = np.where(created >= 0, created, first_ms)
    days = np.maximum((as_of - start) // DAY_MS, 0).astype(np.int32)

    known = s[~np.isnan(ev.dur[s]) & ~np.isnan(ev.ms[s])]
    frac = np.minimum(ev.ms[known] / ev.dur[known], 1.0)
    done_n = np.bincount(ev.a[known], minlength=n_a)
    done = np.bincount(ev.a[known], weights=frac, minlength=n_a)
    completion = np.where(done_n > 0, done / np.maximum(done_n, 1), 0.0)

    cols = {
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
        "top_tracks": _top_tracks(ev, s, config.top_tracks_k),
        "completion_rate": pa.array(completion.astype(np.float32)),
    }
    return pa.table({f.name: cols[f.name] for f in ARTIST_STATS}).cast(ARTIST_STATS)


ARTIST_STATS = pa.schema([f for f in ARTIST_FEATURES if f.name not in _RANKED])


def rank_artists(stats: pa.Table, config: FeatureConfig) -> pa.Table:
    """:func:`artist_stats` rows of every artist -> ``ARTIST_FEATURES`` (sorted by artist_id):
    ``trending_rank`` by growth then ``streams_7d``, ties by artist_id; ``popularity``."""
    stats = stats.sort_by("artist_id")
    n_a = stats.num_rows
    s7 = stats["streams_7d"].to_numpy()
    s28 = stats["streams_28d"].to_numpy()
    growth = _growth(s7, s28, config)
    rank = np.empty(n_a, np.int32)
    rank[np.lexsort((-s7, -growth))] = np.arange(1, n_a + 1, dtype=np.int32)
    pop = np.log1p(s28)
    pop = pop / pop.max() if n_a and pop.max() > 0 else np.zeros(n_a)
    ranked = {"trending_rank": pa.array(rank), "popularity": pa.array(pop.astype(np.float32))}
    cols = {f.name: ranked[f.name] if f.name in ranked else stats[f.name] for f in ARTIST_FEATURES}
    return pa.table(cols).cast(ARTIST_FEATURES)


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


TREND_COUNTS = pa.schema(
    [
        ("segment", pa.string()),
        ("artist_id", pa.string()),
        ("s7", pa.int64()),  # streams in the last recent_days
        ("s28", pa.int64()),  # streams in the last long_days
        ("total", pa.int64()),  # the backfill order's last key: all time ("global"), else s28
    ]
)


def trending(ev: EventLog, as_of: int, config: FeatureConfig) -> pa.Table:
    """``TRENDING``: the "global" list and one per segment value with recent streams."""
    return rank_trending(trending_counts(ev, as_of, config), config)


def trending_counts(ev: EventLog, as_of: int, config: FeatureConfig) -> pa.Table:
    """``TREND_COUNTS``: per list and artist with streams, the counts it is ranked by. Sums over
    users, so the counts of disjoint sets of users add up (the Spark engine sums them)."""
    n_a = ev.n_artists
    s = np.nonzero((ev.ts < as_of) & (ev.et == ET["stream"]))[0]
    recent, long = _window_counts(ev, s, as_of, config)
    parts: list[pa.Table] = []

    def add(seg: str, a: np.ndarray, recent: np.ndarray, long: np.ndarray) -> None:
        s7 = np.bincount(a[recent], minlength=n_a)
        s28 = np.bincount(a[long], minlength=n_a)
        add_counts(seg, s7, s28, np.bincount(a, minlength=n_a))

    def add_counts(seg: str, s7: np.ndarray, s28: np.ndarray, total: np.ndarray) -> None:
        rows = np.flatnonzero(total)
        cols = {"segment": pa.array([seg] * len(rows), pa.string())}
        cols["artist_id"] = ev.artist_ids.take(pa.array(rows))
        cols.update({k: pa.array(v[rows]) for k, v in (("s7", s7), ("s28", s28), ("total", total))})
        parts.append(pa.table(cols, schema=TREND_COUNTS))

    add("global", ev.a[s], recent, long)
    window = s[long]
    for field in _TREND_SEGMENTS:
        enc = ev.users[field].combine_chunks().dictionary_encode()
        rank = pc.array_sort_indices(enc.dictionary).to_numpy()
        codes = enc.dictionary.take(pa.array(rank)).to_pylist()
        inverse = np.argsort(rank)[enc.indices.to_numpy(zero_copy_only=False)]  # sorted codes
        of_row = inverse[ev.u[window]]
        n_c = len(codes)
        if n_c * n_a <= _SEGMENT_CELLS:  # one count per (value, artist): no sort
            key = of_row.astype(np.int64) * n_a + ev.a[window]
            s28 = np.bincount(key, minlength=n_c * n_a).reshape(n_c, n_a)
            s7 = np.bincount(key[recent[long]], minlength=n_c * n_a).reshape(n_c, n_a)
            for c in range(n_c):  # in the window, every stream is in the 28 days
                if s28[c].any():
                    add_counts(f"{field}={codes[c]}", s7[c], s28[c], s28[c])
            continue
        order = stable_order(of_row)  # slice per segment value, no mask per value
        a_sorted, r_sorted = ev.a[window][order], recent[long][order]
        bounds = np.searchsorted(of_row[order], np.arange(len(codes) + 1))
        for c in range(len(codes)):
            lo, hi = bounds[c], bounds[c + 1]
            if hi > lo:
                add(f"{field}={codes[c]}", a_sorted[lo:hi], r_sorted[lo:hi], np.ones(hi - lo, bool))
    return pa.concat_tables(parts)


_SEGMENT_CELLS = 1 << 24  # (segment value, artist) counts held at once, else sorted


def _segment_order(segment: str) -> tuple[int, str]:
    field, _, value = segment.partition("=")
    return (0, "") if segment == "global" else (1 + _TREND_SEGMENTS.index(field), value)


def rank_trending(counts: pa.Table, config: FeatureConfig) -> pa.Table:
    """``TREND_COUNTS`` (one row per list and artist) -> ``TRENDING``: per list, the top
    ``trending_k`` by score = streams_7d x growth, then s28, then total, then artist_id; lists
    "global" first, then per segment field and value."""
    counts = counts.sort_by([("segment", "ascending"), ("artist_id", "ascending")])
    segs = counts["segment"].combine_chunks().dictionary_encode()
    names = segs.dictionary.to_pylist()
    code = segs.indices.to_numpy(zero_copy_only=False)
    s7, s28, total = (counts[k].to_numpy() for k in ("s7", "s28", "total"))
    score = s7 * _growth(s7, s28, config)
    out_segs: list[str] = []
    rows, ranks = [], []
    for c in sorted(range(len(names)), key=lambda c: _segment_order(names[c])):
        mine = np.flatnonzero(code == c)  # by artist_id: lexsort keeps that order for ties
        order = mine[np.lexsort((-total[mine], -s28[mine], -score[mine]))][: config.trending_k]
        out_segs += [names[c]] * len(order)
        rows.append(order)
        ranks.append(np.arange(1, len(order) + 1))
    take = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
    return pa.table(
        {
            "segment": pa.array(out_segs, pa.string()),
            "artist_id": counts["artist_id"].take(pa.array(take)),
            "rank": pa.array(np.concatenate(ranks).astype(np.int32) if ranks else [], pa.int32()),
            "score": pa.array(score[take].astype(np.float32)),
        }
    ).cast(TRENDING)
