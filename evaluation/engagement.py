"""Engagement from served slates, per day, per model version and per segment, from the lake.

Definitions (the seed's, stated once here):

* **CTR** — slate clicks per 100 impressions. An impression is an ``impression`` event (one
  artist at one position of a slate, ``request_id``); a slate click is a ``click`` carrying
  the ``request_id`` of an impression of the same user and artist.
* **stream-through** — the share of slate clicks followed by a ``stream`` of that artist by that
  user with the same ``request_id`` and at least ``stream_min_ms`` played; **listening depth**
  is the mean ``ms_played / track_duration_ms`` (clipped to [0, 1]) of those streams.
* **follow rate** — follows per 100 impressions: a ``follow`` of an artist the user was shown
  earlier the same UTC day.
* **7- / 14-day churn** — of the users active (any event) in the 7 days ending on day ``d``,
  the share with no event in the next 7 / 14 days. Defined only for days whose following
  window is inside the data (NaN otherwise).

Segments: ``age_group``, ``gender``, ``country`` (rare ones collapsed to ``other``) and
``tenure`` (``new`` when signed up less than ``new_user_days`` before the day, else ``long``),
from the PII-free ``lake/users.parquet``; ``all`` is everyone. Intervals are Wilson score
intervals on the underlying proportions (impressions, clicks or cohort users are the trials).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.constants import DAY_MS
from core.workspace import Workspace
from data.lake import events_dataset
from evaluation.segments import collapse_rare
from evaluation.stats import wilson

log = logging.getLogger("tastemaker.evaluation")

SEGMENT_FIELDS = ("age_group", "gender", "country", "tenure")
_EVENT_COLUMNS = [
    "event_type",
    "user_key",
    "artist_id",
    "request_id",
    "ms_played",
    "track_duration_ms",
    "event_ts",
    "bundle_version",
]


@dataclass(frozen=True)
class EngagementConfig:
    stream_min_ms: int = 30_000
    new_user_days: int = 30
    z: float = 1.96  # Wilson interval (95 %)


def load_events(ws: Workspace) -> pd.DataFrame:
    """The lake's events with the columns engagement needs (missing columns read as null)."""
    dataset = events_dataset(ws.lake_events)
    present = [c for c in _EVENT_COLUMNS if c in dataset.schema.names]
    table = dataset.to_table(columns=present)
    event_ms = pc.cast(pc.cast(table["event_ts"], pa.timestamp("ms", "UTC")), pa.int64())
    frame = table.drop_columns(["event_ts"]).to_pandas()
    for c in set(_EVENT_COLUMNS) - set(present):
        frame[c] = None
    frame["event_ms"] = event_ms.to_numpy()
    frame["day"] = (frame["event_ms"] // DAY_MS).astype("int64")
    return frame


def user_segments(ws: Workspace) -> pd.DataFrame:
    users = pd.read_parquet(ws.lake_users)
    out = users[["user_key", "age_group", "gender", "country"]].copy()
    out["country"] = collapse_rare(out["country"].fillna("unknown").to_numpy())
    out["signup_day"] = pd.to_datetime(users["signup_ts"], utc=True).astype("int64") // (
        DAY_MS * 1_000_000
    )
    return out.set_index("user_key")


def _slate_rows(events: pd.DataFrame, config: EngagementConfig) -> pd.DataFrame:
    """One row per impression with ``clicked``, ``streamed``, ``depth`` and ``followed``."""
    imp = events[events["event_type"] == "impression"]
    imp = imp[["user_key", "artist_id", "request_id", "day", "event_ms", "bundle_version"]]
    imp = imp.drop_duplicates(["user_key", "artist_id", "request_id"])
    clicks = events[(events["event_type"] == "click") & events["request_id"].notna()]
    clicks = clicks[["user_key", "artist_id", "request_id"]].drop_duplicates()
    clicks = clicks.assign(clicked=True)
    streams = events[(events["event_type"] == "stream") & events["request_id"].notna()].copy()
    streams["good"] = streams["ms_played"].fillna(0) >= config.stream_min_ms
    dur = streams["track_duration_ms"].astype("float64")
    streams["depth"] = np.clip(streams["ms_played"].astype("float64") / dur.where(dur > 0), 0, 1)
    per_stream = streams.groupby(["user_key", "artist_id", "request_id"]).agg(
        streamed=("good", "max"), depth=("depth", "mean")
    )
    follows = events[events["event_type"] == "follow"][["user_key", "artist_id", "day", "event_ms"]]
    rows = imp.merge(clicks, how="left", on=["user_key", "artist_id", "request_id"])
    rows["clicked"] = rows["clicked"].fillna(False).astype(bool)
    rows = rows.merge(
        per_stream, how="left", left_on=["user_key", "artist_id", "request_id"], right_index=True
    )
    rows["streamed"] = rows["streamed"].fillna(False).astype(bool) & rows["clicked"]
    first_follow = follows.groupby(["user_key", "artist_id", "day"])["event_ms"].min()
    rows = rows.merge(
        first_follow.rename("follow_ms"),
        how="left",
        left_on=["user_key", "artist_id", "day"],
        right_index=True,
    )
    rows["followed"] = rows["follow_ms"].notna() & (rows["follow_ms"] >= rows["event_ms"])
    # a user shown the same artist twice in a day counts one follow, on the first impression
    first = ~rows.sort_values("event_ms").duplicated(["user_key", "artist_id", "day"])
    rows["followed"] &= first.reindex(rows.index).fillna(False).astype(bool)
    return rows


def _with_segments(
    rows: pd.DataFrame, segs: pd.DataFrame, config: EngagementConfig
) -> pd.DataFrame:
    out = rows.join(segs, on="user_key")
    for f in ("age_group", "gender", "country"):
        out[f] = out[f].fillna("unknown")
    tenure_days = out["day"] - out["signup_day"].fillna(out["day"] - 10_000)
    out["tenure"] = np.where(tenure_days < config.new_user_days, "new", "long")
    out["all"] = "all"
    return out


def engagement_table(ws: Workspace, config: EngagementConfig | None = None) -> pd.DataFrame:
    """One row per (day, bundle_version, segment): impressions, clicks, ``ctr`` (per 100) with
    ``ctr_lo``/``ctr_hi``, ``stream_through`` (+ interval), ``depth``, ``follow_rate`` (per 100),
    ``active_users``, ``churn7``/``churn14`` (+ intervals). ``bundle_version`` is ``"*"`` for
    rows over every version (churn is per user, so only those rows carry it)."""
    config = config or EngagementConfig()
    events = load_events(ws)
    segs = user_segments(ws)
    rows = _with_segments(_slate_rows(events, config), segs, config)
    rows["bundle_version"] = rows["bundle_version"].fillna("unversioned")
    tables = []
    for version_key in ("*", "bundle_version"):
        frame = (
            rows.assign(version="*")
            if version_key == "*"
            else rows.assign(version=rows["bundle_version"])
        )
        for field in ("all", *SEGMENT_FIELDS):
            seg = field + "=" + frame[field].astype(str)
            g = frame.assign(segment=seg).groupby(["day", "version", "segment"])
            t = g.agg(
                impressions=("clicked", "size"),
                clicks=("clicked", "sum"),
                streamed=("streamed", "sum"),
                depth=("depth", "mean"),
                follows=("followed", "sum"),
            ).reset_index()
            tables.append(t)
    eng = pd.concat(tables, ignore_index=True)
    eng["ctr"] = 100 * eng["clicks"] / eng["impressions"]
    lo, hi = wilson(eng["clicks"].to_numpy(), eng["impressions"].to_numpy(), config.z)
    eng["ctr_lo"], eng["ctr_hi"] = 100 * lo, 100 * hi
    eng["stream_through"] = eng["streamed"] / eng["clicks"].where(eng["clicks"] > 0)
    lo, hi = wilson(eng["streamed"].to_numpy(), eng["clicks"].to_numpy(), config.z)
    eng["stream_through_lo"], eng["stream_through_hi"] = lo, hi
    eng["follow_rate"] = 100 * eng["follows"] / eng["impressions"]
    # churn is per user, so it joins the all-versions rows; a day without slates still has it
    churn = churn_table(events, segs, config)
    star = eng["version"] == "*"
    merged = eng[star].merge(churn, how="outer", on=["day", "segment"])
    merged["version"] = "*"
    for c in ("impressions", "clicks", "streamed", "follows"):
        merged[c] = merged[c].fillna(0).astype("int64")
    eng = pd.concat([merged, eng[~star]], ignore_index=True)
    eng["date"] = pd.to_datetime(eng["day"] * DAY_MS, unit="ms", utc=True).dt.strftime("%Y-%m-%d")
    return eng.sort_values(["day", "version", "segment"]).reset_index(drop=True)


def churn_table(events: pd.DataFrame, segs: pd.DataFrame, config: EngagementConfig) -> pd.DataFrame:
    """Per (day, segment): ``active_users`` in the week ending that day, ``churn7``/``churn14``
    with Wilson intervals (NaN where the following window runs past the data)."""
    active = events[["user_key", "day"]].drop_duplicates()
    if active.empty:
        return pd.DataFrame(columns=["day", "segment", "active_users", "churn7", "churn14"])
    first_day, last_day = int(active["day"].min()), int(active["day"].max())
    keys, u = np.unique(active["user_key"].to_numpy(), return_inverse=True)
    n_days = last_day - first_day + 1
    grid = np.zeros((len(keys), n_days), dtype=np.int32)  # (U, D) active that day
    grid[u, active["day"].to_numpy() - first_day] = 1
    csum = np.concatenate([np.zeros((len(keys), 1), np.int32), grid.cumsum(axis=1)], axis=1)

    def active_between(lo: int, hi: int) -> np.ndarray:  # any activity on days lo..hi (grid idx)
        lo, hi = max(lo, 0), min(hi, n_days - 1)
        return (csum[:, hi + 1] - csum[:, lo]) > 0 if hi >= lo else np.zeros(len(keys), bool)

    base = _with_segments(pd.DataFrame({"user_key": keys, "day": 0}), segs, config)
    out = []
    for i in range(6, n_days):
        in_week = active_between(i - 6, i)
        if not in_week.any():
            continue
        d = first_day + i
        cohort = base[in_week].assign(
            day=d,
            gone7=~active_between(i + 1, i + 7)[in_week],
            gone14=~active_between(i + 1, i + 14)[in_week],
        )
        tenure_days = d - cohort["signup_day"].fillna(d - 10_000)
        cohort["tenure"] = np.where(tenure_days < config.new_user_days, "new", "long")
        for field in ("all", *SEGMENT_FIELDS):
            seg = field + "=" + cohort[field].astype(str)
            g = cohort.assign(segment=seg).groupby("segment")
            t = g.agg(
                active_users=("gone7", "size"), gone7=("gone7", "sum"), gone14=("gone14", "sum")
            ).reset_index()
            t["day"] = d
            for h, col in ((7, "gone7"), (14, "gone14")):
                complete = d + h <= last_day
                rate = t[col] / t["active_users"]
                lo, hi = wilson(t[col].to_numpy(), t["active_users"].to_numpy(), config.z)
                t[f"churn{h}"] = rate if complete else np.nan
                t[f"churn{h}_lo"] = lo if complete else np.nan
                t[f"churn{h}_hi"] = hi if complete else np.nan
            out.append(t.drop(columns=["gone7", "gone14"]))
    return pd.concat(out, ignore_index=True)
