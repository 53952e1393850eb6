"""The event log the feature job works on: integer-coded, sorted once by (user, time).

The lake is read file by file (two at a time) and only the needed columns are kept; strings
(user keys, artist and track ids) are read as Arrow dictionaries, unified once into global
sorted vocabularies and kept as int32 codes, so no Python object per event ever exists. The
(user, time) sort and every later group/unique step are packed integer sorts
(:mod:`data.features.sort`). About 37 bytes per event stay in memory (10 M events: ~0.4 GB).

Per-stream listening depth is computed here, once, point in time: a stream's ratio is its
``ms_played`` over the mean ``ms_played`` of all *earlier* streams of the same track (any
user); the first stream of a track has no reference and gives no ratio. Because nothing
later is used, truncating the log at any time leaves every earlier value unchanged — the
property the leakage and parity tests rely on.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.constants import DAY_MS
from data.features.sort import (
    before_index,
    exclusive_cumsum,
    first_rows,
    group_starts,
    stable_order,
)
from data.lake import event_files
from data.schemas import ARTISTS, EVENT_TYPES, USERS

log = logging.getLogger("tastemaker.data")

ET = {name: np.int8(i) for i, name in enumerate(EVENT_TYPES)}
LR_SCALE = 1 << 16  # log-ratios are summed as integers in 1/65536 units: exact, order-free
LR_CLIP = 2.0  # listen log2-ratio clipped to [-2, 2] (a quarter to four times the norm)
_EVENT_COLS: tuple[str, ...] = ("event_type", "user_key", "artist_id", "track_id", "ms_played")
_EVENT_COLS += ("track_duration_ms", "event_ts")
LR_COLS = ("lr_q", "lr_ok")  # optional event columns: listen ratios computed beforehand
_DICT_COLS = ["event_type", "user_key", "artist_id", "track_id"]  # read as Arrow dictionaries


@dataclass
class EventLog:
    """Events as parallel numpy arrays sorted by (user, event_ts), plus the user/artist views.

    ``u``/``a``/``tr`` index ``user_ids``/``artist_ids``/``track_ids`` (``tr`` is -1 when the
    event has no track); ``ms``/``dur`` are float64 with NaN for unknown; ``lr_q`` is the
    quantised listen log-ratio of a stream (0 where ``lr_ok`` is False).
    """

    user_ids: pa.StringArray
    artist_ids: pa.StringArray
    track_ids: pa.StringArray
    u: np.ndarray  # (N,) int32
    a: np.ndarray  # (N,) int32
    tr: np.ndarray  # (N,) int32, -1 = no track
    et: np.ndarray  # (N,) int8 index into EVENT_TYPES
    ts: np.ndarray  # (N,) int64 epoch ms, non-decreasing within a user
    ms: np.ndarray  # (N,) float64, NaN = unknown
    dur: np.ndarray  # (N,) float64, NaN = unknown or <= 0
    lr_q: np.ndarray  # (N,) int64
    lr_ok: np.ndarray  # (N,) bool
    new_day: np.ndarray  # (N,) bool: first event of this user on this UTC day
    positive: np.ndarray  # (N,) bool: click, follow, or stream of >= stream_min_ms
    first_pos: np.ndarray  # (N,) bool: the user's first positive event with this artist
    stream_min_ms: int
    users: pa.Table  # USERS aligned to user_ids ("unknown" where the account view lacks one)
    known_user: np.ndarray  # (U,) bool: present in the account view
    signup_ms: np.ndarray  # (U,) int64, INT64_MIN = unknown
    artists: pa.Table  # ARTISTS aligned to artist_ids (empty tags where the catalogue lacks one)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_artists(self) -> int:
        return len(self.artist_ids)

    def truncate(self, before_ms: int) -> EventLog:
        """The same log without events at or after ``before_ms`` (vocabularies unchanged)."""
        keep = self.ts < before_ms
        fields = {k: getattr(self, k)[keep] for k in _ROW_FIELDS}
        return EventLog(**{**self.__dict__, **fields})


_ROW_FIELDS = (
    "u",
    "a",
    "tr",
    "et",
    "ts",
    "ms",
    "dur",
    "lr_q",
    "lr_ok",
    "new_day",
    "positive",
    "first_pos",
)
_NO_TS = np.iinfo(np.int64).min


_DICT_TYPE = pa.dictionary(pa.int32(), pa.string())


def _dict_chunks(col: pa.ChunkedArray | pa.Array) -> list[pa.DictionaryArray]:
    """A string column as dictionary chunks (Arrow encodes the ones read as plain strings)."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    out = []
    for chunk in chunks:
        enc = chunk if pa.types.is_dictionary(chunk.type) else pc.dictionary_encode(chunk)
        out.append(enc if enc.type == _DICT_TYPE else enc.cast(_DICT_TYPE))
    return out


def _codes(chunks: list[pa.DictionaryArray]) -> tuple[pa.Array, np.ndarray]:
    """Dictionary chunks -> (sorted vocabulary of their values, int32 code per row, -1 null).

    One Arrow dictionary unification over all chunks (a single hash table), then one sort of
    the (small) vocabulary; no string is hashed twice or turned into a Python object.
    """
    if not chunks:
        return pa.array([], pa.string()), np.zeros(0, np.int32)
    unified = pa.chunked_array(chunks, _DICT_TYPE).unify_dictionaries()
    dictionary = unified.chunk(0).dictionary
    order = pc.array_sort_indices(dictionary, null_placement="at_end").to_numpy()
    n_valid = len(dictionary) - dictionary.null_count
    rank = np.full(len(dictionary) + 1, -1, np.int32)  # last slot: null index (-1) -> -1
    rank[order[:n_valid]] = np.arange(n_valid, dtype=np.int32)
    idx = [c.indices.fill_null(-1).to_numpy(zero_copy_only=False) for c in unified.chunks]
    return dictionary.take(pa.array(order[:n_valid])), rank[np.concatenate(idx)]


def _ms(col: pa.ChunkedArray) -> np.ndarray:
    return (
        col.cast(pa.int64()).to_numpy().astype(np.float64)
        if col.null_count == 0
        else (col.cast(pa.float64()).fill_null(np.nan).to_numpy())
    )


def _event_types(col: pa.ChunkedArray) -> np.ndarray:
    """event_type -> index into EVENT_TYPES (-1 unknown or null), mapped per dictionary."""
    out = []
    for chunk in _dict_chunks(col):
        known = pc.index_in(chunk.dictionary, value_set=pa.array(EVENT_TYPES)).fill_null(-1)
        mapping = np.append(known.to_numpy().astype(np.int8), np.int8(-1))
        out.append(mapping[chunk.indices.fill_null(-1).to_numpy(zero_copy_only=False)])
    return np.concatenate(out) if out else np.zeros(0, np.int8)


def _lake_files(events_dir: Path, version: int | None = None) -> list[Path]:
    """The events table's live files (never a glob: an optimize leaves replaced files behind)."""
    return event_files(events_dir, version)


def _read_part(path: Path) -> dict[str, list]:
    t = pq.read_table(
        path, columns=list(_EVENT_COLS), read_dictionary=_DICT_COLS, use_threads=False
    )
    return _prepare(t)


def _prepare(t: pa.Table) -> dict[str, list]:
    """One events table -> its string columns as dictionary chunks and numeric numpy arrays."""
    missing = [c for c in _EVENT_COLS if c not in t.column_names]
    if missing:
        raise ValueError(f"events table lacks columns {missing}; found {t.column_names}")
    out = {k: _dict_chunks(t[n]) for k, n in (("u", "user_key"), ("a", "artist_id"))}
    out["tr"] = _dict_chunks(t["track_id"])
    out["et"] = [_event_types(t["event_type"])]
    ts = t["event_ts"].cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    out["ts"] = [ts.fill_null(_NO_TS).to_numpy()]
    out["ms"] = [_ms(t["ms_played"])]
    dur = _ms(t["track_duration_ms"])
    out["dur"] = [np.where(dur > 0, dur, np.nan)]
    if LR_COLS[0] in t.column_names:  # computed beforehand over every user (the Spark engine)
        out["lr_q"] = [t[LR_COLS[0]].fill_null(0).to_numpy()]
        out["lr_ok"] = [t[LR_COLS[1]].fill_null(False).to_numpy(zero_copy_only=False)]
    return out


def build_event_log(
    events,
    users: pa.Table,
    artists: pa.Table,
    stream_min_ms: int = 30_000,
    version: int | None = None,
    trace: dict | None = None,
) -> EventLog:
    """Encode events (a ``LAKE_EVENTS`` table, an iterable of them, or the lake's events
    table folder, read at its latest version or at ``version``).

    ``stream_min_ms`` fixes which streams are positives (``FeatureConfig.stream_min_ms``).
    The events table is read file by file, two files at a time (Arrow releases the GIL).

    ``trace`` (a dict, filled in): what the incremental build carries
    (:mod:`data.features.incremental`): ``files`` (the lake files read, in read order),
    ``part_rows`` (rows read per part), ``read_pos`` (each log row's place in the read
    order) and ``seen`` (per vocabulary, which entries occur in the events, not only in the
    user or artist view).
    """
    users = _conform_view(users, USERS, "users")
    artists = _conform_view(artists, ARTISTS, "artists")
    strings: dict[str, list] = {"u": _dict_chunks(users["user_key"])}
    strings["a"] = _dict_chunks(artists["artist_id"])
    strings["tr"] = []
    n_view = {"u": len(users), "a": len(artists), "tr": 0}
    cols: dict[str, list] = {k: [] for k in ("et", "ts", "ms", "dur", *LR_COLS)}
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="features-read") as pool:
        if isinstance(events, (str, Path)):
            files = _lake_files(Path(events), version)
            parts = pool.map(_read_part, files)
            if trace is not None:
                trace["files"] = files
        else:
            parts = map(_prepare, [events] if isinstance(events, pa.Table) else events)
        part_rows = []
        for part in parts:
            part_rows.append(len(part["ts"][0]))
            for k, v in part.items():
                (strings if k in strings else cols)[k] += v
        coded = dict(zip(strings, pool.map(_codes, strings.values()), strict=True))
    del strings
    vocab, code = {}, {}
    for k in ("u", "a", "tr"):
        vocab[k], codes = coded.pop(k)
        code[k] = codes[n_view[k] :]  # the view's own keys only join the vocabulary
    user_ids, artist_ids, track_ids = vocab["u"], vocab["a"], vocab["tr"]
    u, a, tr = code["u"], code["a"], code["tr"]
    if trace is not None:
        trace["part_rows"] = part_rows
        trace["seen"] = {k: _seen(code[k], len(vocab[k])) for k in ("u", "a", "tr")}
    read_pos = np.arange(len(u), dtype=np.int64) if trace is not None else None
    et, ts, ms, dur = (
        np.concatenate(cols[k]) if cols[k] else np.zeros(0) for k in ("et", "ts", "ms", "dur")
    )
    given = len(cols["lr_q"]) > 0
    if given and len(cols["lr_q"]) != len(cols["et"]):
        raise ValueError(f"events tables disagree: some carry {LR_COLS}, some do not")
    lr = [np.concatenate(cols[k]) for k in LR_COLS] if given else []
    del cols, code
    ok = valid_events(u >= 0, a >= 0, et, ts)
    if not ok.all():
        log.warning(
            "dropping %d events without user_key, artist_id, known type or time", (~ok).sum()
        )
        u, a, tr, et, ts, ms, dur = (x[ok] for x in (u, a, tr, et, ts, ms, dur))
        lr = [x[ok] for x in lr]
        read_pos = read_pos[ok] if read_pos is not None else None
    by_ts = np.argsort(ts, kind="stable")  # lake order is nearly by time: cheap
    pos = stable_order(u[by_ts])  # (user, time), ties in lake order = lexsort((ts, u))
    order = by_ts[pos]
    u, a, tr, et, ts, ms, dur = (x[order] for x in (u, a, tr, et, ts, ms, dur))
    if trace is not None and read_pos is not None:
        trace["read_pos"] = read_pos[order]
    if given:
        lr_q, lr_ok = (x[order] for x in lr)
    else:
        by_time = np.empty(len(pos), np.int64)
        by_time[pos] = np.arange(len(pos))  # row of the log at each place in time order
        lr_q, lr_ok = _listen_log_ratios(tr, et, ts, ms, by_time)
        del by_time
    del order, by_ts, pos, lr
    return assemble_log(
        (user_ids, artist_ids, track_ids),
        {"u": u, "a": a, "tr": tr, "et": et, "ts": ts, "ms": ms, "dur": dur},
        lr_q,
        lr_ok,
        stream_min_ms,
        users,
        artists,
    )


def _seen(codes: np.ndarray, n: int) -> np.ndarray:
    seen = np.zeros(n, bool)
    seen[codes[codes >= 0]] = True
    return seen


def assemble_log(
    vocab: tuple[pa.Array, pa.Array, pa.Array],
    rows: dict[str, np.ndarray],
    lr_q: np.ndarray,
    lr_ok: np.ndarray,
    stream_min_ms: int,
    users: pa.Table,
    artists: pa.Table,
) -> EventLog:
    """The :class:`EventLog` of valid events already sorted by (user, event_ts, read order),
    coded against ``vocab`` (users, artists, tracks; sorted), with their listen ratios: the
    per-row flags (new day, positive, first positive per artist) and the aligned views are
    derived here, for the full and the incremental build alike."""
    user_ids, artist_ids, track_ids = vocab
    u, a, tr, et, ts, ms, dur = (rows[k] for k in ("u", "a", "tr", "et", "ts", "ms", "dur"))
    day = ts // DAY_MS
    new_day = (
        np.r_[True, (u[1:] != u[:-1]) | (day[1:] != day[:-1])] if len(u) else np.zeros(0, bool)
    )
    positive = (et == ET["click"]) | (et == ET["follow"])
    with np.errstate(invalid="ignore"):  # NaN (unknown ms_played) is never >=
        positive |= (et == ET["stream"]) & (ms >= stream_min_ms)
    first_pos = np.zeros(len(u), bool)
    p = np.nonzero(positive)[0]
    first_pos[p[first_rows(u[p].astype(np.int64) * len(artist_ids) + a[p])]] = True
    users = _conform_view(users, USERS, "users")
    artists = _conform_view(artists, ARTISTS, "artists")
    uview, known, signup = _align_users(users, user_ids)
    return EventLog(
        user_ids=user_ids,
        artist_ids=artist_ids,
        track_ids=track_ids,
        u=u.astype(np.int32, copy=False),  # the rows are the log's own: no copy needed
        a=a.astype(np.int32, copy=False),
        tr=tr.astype(np.int32, copy=False),
        et=et.astype(np.int8, copy=False),
        ts=ts.astype(np.int64, copy=False),
        ms=ms,
        dur=dur,
        lr_q=lr_q,
        lr_ok=lr_ok,
        new_day=new_day,
        positive=positive,
        first_pos=first_pos,
        stream_min_ms=stream_min_ms,
        users=uview,
        known_user=known,
        signup_ms=signup,
        artists=_align_artists(artists, artist_ids),
    )


def valid_events(
    has_user: np.ndarray, has_artist: np.ndarray, et: np.ndarray, ts: np.ndarray
) -> np.ndarray:
    """The events the features use: with a user, an artist, a known type and a time."""
    return has_user & has_artist & (et >= 0) & (ts != _NO_TS)


def _conform_view(table: pa.Table, schema: pa.Schema, name: str) -> pa.Table:
    missing = [c for c in schema.names if c not in table.column_names]
    if missing:
        raise ValueError(f"{name} table lacks columns {missing}; found {table.column_names}")
    return table.select(schema.names).cast(schema)


def _align_users(users: pa.Table, user_ids: pa.Array) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    users = users.filter(pc.invert(pc.is_null(users["user_key"])))
    pos = pc.index_in(user_ids, value_set=users["user_key"].combine_chunks())
    known = pc.is_valid(pos).to_numpy(zero_copy_only=False)
    view = users.take(pos)  # null rows where the account view has no such user
    cols = {"user_key": user_ids}
    for f in ("age_group", "gender", "country", "region", "city"):
        cols[f] = pc.fill_null(view[f].combine_chunks(), "unknown")
    cols["signup_ts"] = view["signup_ts"].combine_chunks()
    signup = cols["signup_ts"].cast(pa.int64()).fill_null(_NO_TS).to_numpy(zero_copy_only=False)
    return pa.table(cols, schema=USERS), known, signup


def _align_artists(artists: pa.Table, artist_ids: pa.Array) -> pa.Table:
    artists = artists.filter(pc.invert(pc.is_null(artists["artist_id"])))
    view = artists.take(pc.index_in(artist_ids, value_set=artists["artist_id"].combine_chunks()))
    name = pc.coalesce(view["name"].combine_chunks(), artist_ids)
    tags = view["tags"].combine_chunks().fill_null(pa.scalar([], ARTISTS.field("tags").type))
    cols = {"artist_id": artist_ids, "name": name, "tags": tags}
    cols["created_ts"] = view["created_ts"].combine_chunks()
    return pa.table(cols, schema=ARTISTS)


def _listen_log_ratios(tr, et, ts, ms, by_time) -> tuple[np.ndarray, np.ndarray]:
    """``by_time``: the log's rows in time order (so a track's streams come out in time
    order from one packed sort by track; rows with equal (track, ts) are a tie block and their
    order does not matter)."""
    rows = by_time[listen_usable(tr >= 0, et, ms)[by_time]]
    lr_q = np.zeros(len(tr), np.int64)
    lr_ok = np.zeros(len(tr), bool)
    if not len(rows):
        return lr_q, lr_ok
    order = rows[stable_order(tr[rows])]
    lr_q[order], lr_ok[order] = track_listen_ratios(tr[order], ts[order], ms[order])
    return lr_q, lr_ok


def listen_usable(has_track: np.ndarray, et: np.ndarray, ms: np.ndarray) -> np.ndarray:
    """The streams that take part in listen ratios: with a track and a known ``ms_played``."""
    return (et == ET["stream"]) & has_track & ~np.isnan(ms)


def track_listen_ratios(
    t: np.ndarray,
    tt: np.ndarray,
    m: np.ndarray,
    base_n: np.ndarray | None = None,
    base_sum: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Quantised listen log-ratio and its validity of usable streams sorted by (track ``t``,
    time ``tt``); ``m`` their ``ms_played``. Tracks are independent: any set of whole tracks
    gives the same values (the local engine passes all of them, Spark one partition's).
    ``base_n``/``base_sum`` (per row, default none): the count and ``ms_played`` sum of its
    track's streams before all of these rows, for the incremental build, which passes only a
    day's streams of tracks it carries (``ms_played`` is whole milliseconds, so the sums are
    exact and the values those of one pass over every stream)."""
    cs_ms, cs_n = exclusive_cumsum(m), np.arange(len(t) + 1)
    start, block = group_starts(t), before_index(t, tt)
    prior_n = cs_n[block] - cs_n[start]  # earlier streams of this track (any user)
    prior_sum = cs_ms[block] - cs_ms[start]
    if base_n is not None and base_sum is not None:
        prior_n, prior_sum = prior_n + base_n, prior_sum + base_sum
    ok = (prior_n > 0) & (prior_sum > 0)
    ratio = np.where(ok, m / np.where(ok, prior_sum / np.maximum(prior_n, 1), 1.0), 1.0)
    lr = np.clip(np.log2(np.maximum(ratio, 2.0**-LR_CLIP)), -LR_CLIP, LR_CLIP)
    return np.where(ok, np.round(lr * LR_SCALE), 0).astype(np.int64), ok
