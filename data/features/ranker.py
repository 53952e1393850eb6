"""Ranker features and labels: one row per (user, candidate artist), the same offline and online.

The ranking stage re-orders the two-tower's candidates with a gradient-boosted model
(``models.ranker``). Its inputs are computed here once, from what both sides have:

* the user's ``USER_FEATURES`` / ``EVAL_USERS`` row (history, segments, dense fields) as of a
  time, which the online store serves and the feature job computes point in time;
* a :class:`RankerContext` built from ``ARTIST_FEATURES`` rows and the trending lists as of
  the same time (the bundle's ``artists.parquet`` and ``trending.json`` when serving, the
  feature functions at the start of the impression's day offline);
* the retrieval score and rank of each candidate, and the slate position it was shown at.
  Position is a feature in training, to absorb the position bias of the logged slates, and
  is fixed at :data:`SERVING_POSITION` (the top slot) when serving, the usual de-biasing.

Labels come from what was shown: :func:`label_impressions` joins every logged impression to
the clicks of its slate by ``request_id`` and artist; a slate without a click gives negatives
only, a click without its impression is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

log = logging.getLogger("tastemaker.data")

# The feature spec: names in the column order of the matrix. A bundle's ranker records the
# names it was trained on; serving refuses a ranker whose names differ from these.
RANKER_FEATURES: tuple[str, ...] = (
    "retrieval_score",  # two-tower cosine of user and artist vectors
    "retrieval_log_rank",  # log1p(rank among the user's unseen artists), rank 1 = best
    "position",  # 1-based slate slot in training; SERVING_POSITION when serving
    "tag_share",  # mean over the artist's tags of the share of the user's history on that tag
    "tag_max_share",  # the largest such share: the user's listening depth on the artist's genre
    "artist_popularity",  # log1p(streams_28d) / max
    "artist_trending",  # 1 / trending_rank (growth against its own past)
    "artist_growth",  # log2 of (streams_7d + 1) / (weekly mean of the 21 days before + 1)
    "artist_log_followers",
    "artist_log_listeners_7d",
    "artist_log_days_active",
    "artist_completion",
    "country_trending",  # 1 / rank in the user's country trending list, 0 when absent
    "age_trending",  # 1 / rank in the user's age-group trending list
    "global_trending",  # 1 / rank in the global trending list
    "user_listen_ratio",
    "user_ctr",
    "user_ctr_relative",
    "user_log_streams",
    "user_activity",  # activity_level as 0 none, 1 low, 2 mid, 3 high
    "user_new",  # tenure_bucket == "new"
    "user_log_history",  # log1p(history length)
)
SERVING_POSITION = 1
# The user-row fields candidate_features reads (USER_FEATURES and EVAL_USERS both have them).
RANKER_USER_FIELDS = (
    "history",
    "country",
    "age_group",
    "activity_level",
    "tenure_bucket",
    "listen_ratio",
    "ctr_per_100",
    "ctr_relative",
    "log_streams",
)
N_FEATURES = len(RANKER_FEATURES)
_COL = {name: i for i, name in enumerate(RANKER_FEATURES)}
ACTIVITY_CODES = {"low": 1.0, "mid": 2.0, "high": 3.0}
_ARTIST_NUMERIC = (
    "artist_popularity",
    "artist_trending",
    "artist_growth",
    "artist_log_followers",
    "artist_log_listeners_7d",
    "artist_log_days_active",
    "artist_completion",
)
_USER_COLS = (
    "user_listen_ratio",
    "user_ctr",
    "user_ctr_relative",
    "user_log_streams",
    "user_activity",
    "user_new",
    "user_log_history",
)
# the artist and user blocks are contiguous in the spec: filled with one slice each
_ARTIST_SLICE = slice(_COL[_ARTIST_NUMERIC[0]], _COL[_ARTIST_NUMERIC[-1]] + 1)
_USER_SLICE = slice(_COL[_USER_COLS[0]], _COL[_USER_COLS[-1]] + 1)
assert [RANKER_FEATURES[i] for i in range(N_FEATURES)[_ARTIST_SLICE]] == list(_ARTIST_NUMERIC)
assert [RANKER_FEATURES[i] for i in range(N_FEATURES)[_USER_SLICE]] == list(_USER_COLS)


class RankerSpecError(ValueError):
    """A ranker's feature spec does not match the features this code computes."""


def check_names(
    names: Sequence[str],
    expected: Sequence[str],
    where: str,
    what: str,
    spec: str,
    retrain: str,
) -> None:
    """Refuse a booster trained on other features than ``expected`` (named ``spec`` in this
    code; ``what``: the booster in the message, ``retrain``: the command that fits it again)."""
    if tuple(names) != tuple(expected):
        missing = [n for n in expected if n not in names]
        extra = [n for n in names if n not in expected]
        raise RankerSpecError(
            f"{where}: the {what}'s feature spec ({len(names)} features) does not match this "
            f"code's {spec} ({len(expected)}); missing {missing}, unknown {extra}"
            + ("" if missing or extra else ", same names in another order")
            + f"; retrain it with `{retrain}` and re-export the bundle"
        )


def check_spec(names: Sequence[str], where: str) -> None:
    """Refuse a ranker trained on other features than :data:`RANKER_FEATURES`."""
    check_names(
        names, RANKER_FEATURES, where, "ranker", "RANKER_FEATURES", "tastemaker train ranker"
    )


def _num(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name).cast(pa.float64()).fill_null(0.0)
    return np.asarray(col.to_numpy(), dtype=np.float64)


@dataclass(frozen=True)
class RankerContext:
    """The artist side of the features as of one time: numeric features, tags, trending."""

    index: pd.Index  # artist_id -> row
    numeric: np.ndarray  # (A, len(_ARTIST_NUMERIC)) float32
    tag_ptr: np.ndarray  # (A + 1,) CSR offsets of each artist's tag ids
    tag_ids: np.ndarray  # (nnz,) int64 tag ids
    n_tags: int
    trending: Mapping[str, np.ndarray]  # "global" / "country=DE" ... -> (A,) float32 1/rank
    # the same, laid out for one gather per request (row A: an unknown artist, all zeros):
    artist_block: np.ndarray = field(repr=False)  # (A + 1, 7) ``numeric``, zero row appended
    tag_pad: np.ndarray = field(repr=False)  # (A + 1, L) each artist's tag ids, padded n_tags
    tag_count: np.ndarray = field(repr=False)  # (A + 1,) float64 tags per artist
    trending_pad: Mapping[str, np.ndarray] = field(repr=False)  # key -> (A + 1,) float32

    @classmethod
    def build(
        cls, artists: pa.Table, trending: Mapping[str, Sequence[str]] | None = None
    ) -> RankerContext:
        """``artists``: ``ARTIST_FEATURES`` rows (nulls read as 0); ``trending``: the bundle's
        ``trending.json`` layout flattened, ``{"global": [...], "country=DE": [...], ...}``."""
        ids = artists.column("artist_id").to_pylist()
        index = pd.Index(ids)
        if not index.is_unique:
            raise ValueError("ranker context: artist_id values are not unique")
        s7, s28 = _num(artists, "streams_7d"), _num(artists, "streams_28d")
        rank = _num(artists, "trending_rank")
        numeric = np.stack(
            [
                _num(artists, "popularity"),
                np.where(rank > 0, 1.0 / np.maximum(rank, 1.0), 0.0),
                np.log2((s7 + 1.0) / ((s28 - s7) / 3.0 + 1.0)),
                np.log1p(_num(artists, "followers")),
                np.log1p(_num(artists, "listeners_7d")),
                np.log1p(_num(artists, "days_active")),
                _num(artists, "completion_rate"),
            ],
            axis=1,
        ).astype(np.float32)  # (A, 7)
        tags = artists.column("tags").to_pylist()
        vocab: dict[str, int] = {}
        flat = [vocab.setdefault(t, len(vocab)) for ts in tags for t in (ts or ())]
        lengths = np.array([len(ts or ()) for ts in tags], dtype=np.int64)
        ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        lists: dict[str, np.ndarray] = {}
        for key, members in (trending or {}).items():
            arr = np.zeros(len(ids), np.float32)
            rows = index.get_indexer(list(members))
            for r, row in enumerate(rows):
                if row >= 0 and arr[row] == 0:
                    arr[row] = 1.0 / (r + 1)
            lists[key] = arr
        n_tags = len(vocab)
        tag_pad = np.full((len(ids) + 1, max(int(lengths.max(initial=0)), 1)), n_tags, np.int64)
        owner = np.repeat(np.arange(len(ids)), lengths)
        tag_pad[owner, np.arange(len(flat)) - np.repeat(ptr[:-1], lengths)] = flat
        return cls(
            index,
            numeric,
            ptr,
            np.asarray(flat, np.int64),
            n_tags,
            lists,
            artist_block=np.vstack([numeric, np.zeros((1, numeric.shape[1]), np.float32)]),
            tag_pad=tag_pad,
            tag_count=np.append(lengths, 0).astype(np.float64),
            trending_pad={k: np.append(v, np.float32(0)) for k, v in lists.items()},
        )

    def rows(self, artist_ids: Sequence[str]) -> np.ndarray:
        """Context row of each artist, -1 when the context does not know it."""
        return np.asarray(self.index.get_indexer(list(artist_ids)), dtype=np.int64)

    def _tag_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(flat tag ids, owner position) of the artists at ``rows`` (-1 rows have none)."""
        ok = rows >= 0
        starts = np.where(ok, self.tag_ptr[np.maximum(rows, 0)], 0)
        lengths = np.where(ok, self.tag_ptr[np.maximum(rows, 0) + 1] - starts, 0)
        owner = np.repeat(np.arange(len(rows)), lengths)
        offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return self.tag_ids[np.repeat(starts, lengths) + offsets], owner

    def tag_profile(self, history: Sequence[str]) -> np.ndarray:
        """(T,) share of the history's streams (repeats count) on each tag."""
        return self.tag_profile_rows(self.rows(history))

    def tag_profile_rows(self, rows: np.ndarray) -> np.ndarray:
        """:meth:`tag_profile` of a history given as context rows (-1 = unknown artist)."""
        if not len(rows):
            return np.zeros(self.n_tags, np.float64)
        tags, _ = self._tag_rows(rows)
        return np.bincount(tags, minlength=self.n_tags) / float(len(rows))


def candidate_features(
    ctx: RankerContext,
    user: Mapping[str, Any],
    rows: np.ndarray,
    scores: np.ndarray,
    ranks: np.ndarray,
    positions: np.ndarray | int,
    profile: np.ndarray | None = None,
) -> np.ndarray:
    """``(n, N_FEATURES)`` float32 for one user's candidates.

    ``user`` is a ``USER_FEATURES`` / ``EVAL_USERS`` row as a dict (history, segment and dense
    fields; missing ones read as empty / 0); ``rows`` the candidates' context rows
    (:meth:`RankerContext.rows`, -1 = unknown artist: its artist features are 0); ``scores``
    and ``ranks`` (1 = best) come from retrieval; ``positions`` the 1-based slate slots, or
    :data:`SERVING_POSITION` when serving. ``profile`` (:meth:`RankerContext.tag_profile` of
    the user's history) may be passed when the caller already has it.
    """
    n = len(rows)
    x = np.empty((n, N_FEATURES), np.float32)
    x[:, _COL["retrieval_score"]] = scores
    x[:, _COL["retrieval_log_rank"]] = np.log1p(np.asarray(ranks, np.float64))
    x[:, _COL["position"]] = positions
    history = list(user.get("history") or [])
    if profile is None:
        profile = ctx.tag_profile(history)
    # one gather per block: row A of the padded tables is the unknown artist (all zeros)
    safe = np.where(rows >= 0, rows, len(ctx.index))
    # each candidate's tags' shares of the user's history (pad tag id n_tags -> share 0)
    vals = np.append(profile, 0.0)[ctx.tag_pad[safe]]  # (n, L)
    x[:, _COL["tag_share"]] = vals.sum(axis=1) / np.maximum(ctx.tag_count[safe], 1.0)
    x[:, _COL["tag_max_share"]] = vals.max(axis=1, initial=0.0)
    x[:, _ARTIST_SLICE] = ctx.artist_block[safe]
    for name, key in (
        ("country_trending", _trending_key(user, "country")),
        ("age_trending", _trending_key(user, "age_group")),
        ("global_trending", "global"),
    ):
        lst = ctx.trending_pad.get(key) if key is not None else None
        x[:, _COL[name]] = lst[safe] if lst is not None else 0.0
    x[:, _USER_SLICE] = _user_values(user, len(history))
    return x


def _trending_key(user: Mapping[str, Any], name: str) -> str | None:
    value = user.get(name)
    return f"{name}={value}" if isinstance(value, str) else None


def _user_values(user: Mapping[str, Any], n_history: int) -> np.ndarray:
    """The user block (``user_listen_ratio`` ... ``user_log_history``) of every row."""
    out = np.zeros(len(_USER_COLS), np.float32)
    for j, name in enumerate(("listen_ratio", "ctr_per_100", "ctr_relative", "log_streams")):
        v = user.get(name)
        out[j] = float(v) if v is not None and np.isfinite(v) else 0.0
    out[4] = ACTIVITY_CODES.get(str(user.get("activity_level")), 0.0)
    out[5] = float(user.get("tenure_bucket") == "new")
    out[6] = np.log1p(n_history)
    return out


def trending_lists(trending: Mapping[str, Any]) -> dict[str, list[str]]:
    """The bundle's ``trending.json`` (``{"global": [...], "by_segment": {...}}``) flattened."""
    out = {"global": list(trending.get("global", []))}
    out.update({k: list(v) for k, v in trending.get("by_segment", {}).items()})
    return out


def trending_from_table(table: pa.Table) -> dict[str, list[str]]:
    """A ``TRENDING`` table as ``{"global": [...], "country=DE": [...]}`` in rank order."""
    t = table.sort_by([("segment", "ascending"), ("rank", "ascending")])
    out: dict[str, list[str]] = {}
    for seg, artist in zip(
        t.column("segment").to_pylist(), t.column("artist_id").to_pylist(), strict=True
    ):
        out.setdefault(seg, []).append(artist)
    return out


LABELLED = pa.schema(
    [
        ("request_id", pa.string()),
        ("user_key", pa.string()),
        ("artist_id", pa.string()),
        ("position", pa.int32()),
        ("ts_ms", pa.int64()),  # the impression's event_ts, epoch ms
        ("label", pa.int8()),  # 1 = clicked from this slate
    ]
)


def label_impressions(events: pa.Table) -> pa.Table:
    """``LABELLED``: every logged impression with a ``request_id``, label 1 when a click of the
    same user on the same artist carries the same ``request_id``.

    ``events`` has the ``LAKE_EVENTS`` columns event_type, user_key, artist_id, request_id,
    position and event_ts (other columns are ignored). An impression logged twice counts once;
    a slate whose artists were all ignored gives negatives only; a click whose impression is
    not in ``events`` joins nothing and is dropped (counted in the log).
    """
    cols = ["event_type", "user_key", "artist_id", "request_id", "position", "event_ts"]
    missing = [c for c in cols if c not in events.column_names]
    if missing:
        raise ValueError(f"events lack columns {missing}; found {events.column_names}")
    ts_ms = events.column("event_ts").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    df = events.select(cols[:-1]).append_column("ts_ms", ts_ms).to_pandas()
    df = df[df["request_id"].notna() & df["user_key"].notna() & df["artist_id"].notna()]
    keys = ["request_id", "user_key", "artist_id"]
    shown = df[df["event_type"] == "impression"].sort_values("ts_ms", kind="stable")
    shown = shown.drop_duplicates(keys, keep="first")
    clicks = df[df["event_type"] == "click"].drop_duplicates(keys)[keys]
    clicks = clicks.assign(label=np.int8(1))
    out = shown.merge(clicks, on=keys, how="left")
    orphans = len(clicks) - int(out["label"].notna().sum())
    if orphans:
        log.info("ranker labels: %d clicks without a logged impression dropped", orphans)
    table = pa.table(
        {
            "request_id": out["request_id"].astype(str).to_numpy(),
            "user_key": out["user_key"].astype(str).to_numpy(),
            "artist_id": out["artist_id"].astype(str).to_numpy(),
            "position": out["position"].fillna(0).astype(np.int32).to_numpy(),
            "ts_ms": out["ts_ms"].astype(np.int64).to_numpy(),
            "label": out["label"].fillna(0).astype(np.int8).to_numpy(),
        }
    )
    return table.cast(LABELLED)
