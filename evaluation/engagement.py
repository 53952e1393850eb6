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
from the PII-free user view (the ``lake/users`` Delta table); ``all`` is everyone. Intervals are Wilson score
intervals on the underlying proportions (impressions, clicks or cohort users are the trials).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.constants import DAY_MS
from core.workspace import Workspace
from data.lake import event_files, events_dataset, open_events, read_users
from data.schemas import LAKE_EVENTS, LAKE_PARTITION
from evaluation.segments import collapse_rare
from evaluation.stats import wilson

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

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


SLATE_TYPES = ("impression", "click", "stream", "follow")  # the types slate metrics use


@dataclass(frozen=True)
class ReadPlan:
    """What an engagement table over ``days`` reads from the events table.

    ``read`` (first, last day number, inclusive) is ``days`` widened by the churn windows
    (6 days before: the week ending the first day; 14 after: the 14-day churn of the last)
    and clipped to the table's days; ``files`` the table's files of those partitions only
    (pruned from the Delta log); ``data`` the table's first and last day (churn is complete
    only where its window ends inside the data, whatever range is read)."""

    days: tuple[int, int] | None
    read: tuple[int, int]
    data: tuple[int, int]
    files: list[Path]
    version: int

    @property
    def filter(self) -> pc.Expression:
        """The row filter pushed into the scan: the partition range and the event time."""
        lo, hi = (_iso_day(d) for d in self.read)
        start = pa.scalar(self.read[0] * DAY_MS, pa.int64()).cast(pa.timestamp("ms", "UTC"))
        end = pa.scalar((self.read[1] + 1) * DAY_MS, pa.int64()).cast(pa.timestamp("ms", "UTC"))
        return (
            (pc.field(LAKE_PARTITION) >= lo)
            & (pc.field(LAKE_PARTITION) <= hi)
            & (pc.field("event_ts") >= start)
            & (pc.field("event_ts") < end)
        )


def _iso_day(day: int) -> str:
    return pd.Timestamp(day * DAY_MS, unit="ms", tz="UTC").strftime("%Y-%m-%d")


def _day_number(iso: str) -> int:
    return int(pd.Timestamp(iso, tz="UTC").value // (DAY_MS * 1_000_000))


def read_plan(
    ws: Workspace, days: tuple[str, str] | None = None, version: int | None = None
) -> ReadPlan:
    """The partitions and files an engagement table over ``days`` (``YYYY-MM-DD`` first and
    last, inclusive; None: every day) needs, from the Delta log alone (no file opened)."""
    table = open_events(ws.lake_events, version)
    present = sorted({a[LAKE_PARTITION] for a in table.partitions()})
    if not present:
        raise ValueError("the lake holds no events; nothing to measure engagement on")
    data = (_day_number(present[0]), _day_number(present[-1]))
    if days is None:
        read = data
        wanted = None
    else:
        first, last = _day_number(days[0]), _day_number(days[1])
        if first > last:
            raise ValueError(f"empty date range {days[0]} .. {days[1]}")
        read = (max(first - 6, data[0]), min(last + 14, data[1]))
        wanted = (first, last)
    files = event_files(ws.lake_events, table.version(), (_iso_day(read[0]), _iso_day(read[1])))
    return ReadPlan(wanted, read, data, files, table.version())


@dataclass
class EngagementInput:
    """The two inputs every engagement number comes from, whichever engine read them:
    ``slate`` the events of :data:`SLATE_TYPES` (engagement columns, ``event_ms``, ``day``)
    and ``active`` the distinct (``user_key``, ``day``) pairs (churn)."""

    slate: pd.DataFrame
    active: pd.DataFrame


def _finish_frame(table: pa.Table) -> pd.DataFrame:
    event_ms = pc.cast(pc.cast(table["event_ts"], pa.timestamp("ms", "UTC")), pa.int64())
    frame = table.drop_columns(["event_ts"]).to_pandas()
    for c in set(_EVENT_COLUMNS) - set(table.column_names) - {"event_ts"}:
        frame[c] = None
    frame["event_ms"] = event_ms.to_numpy()
    frame["day"] = (frame["event_ms"] // DAY_MS).astype("int64")
    return frame[[c for c in _EVENT_COLUMNS if c != "event_ts"] + ["event_ms", "day"]]


def read_local(ws: Workspace, plan: ReadPlan) -> EngagementInput:
    """:class:`EngagementInput` of ``plan`` read by pyarrow: only ``plan.files``, with the
    partition and ``event_ts`` filter pushed into the scan (row groups outside are skipped)."""
    dataset = events_dataset(
        ws.lake_events, plan.version, (_iso_day(plan.read[0]), _iso_day(plan.read[1]))
    )
    present = [c for c in _EVENT_COLUMNS if c in dataset.schema.names]
    table = dataset.to_table(columns=present, filter=plan.filter)
    day = pc.divide(
        pc.cast(pc.cast(table["event_ts"], pa.timestamp("ms", "UTC")), pa.int64()), DAY_MS
    )
    active = (
        pa.table({"user_key": table["user_key"], "day": day})
        .group_by(["user_key", "day"], use_threads=False)
        .aggregate([])
        .to_pandas()
    )
    slate = table.filter(pc.is_in(table["event_type"], pa.array(SLATE_TYPES)))
    return EngagementInput(_finish_frame(slate), active)


def read_spark(spark: SparkSession, ws: Workspace, plan: ReadPlan) -> EngagementInput:
    """:class:`EngagementInput` of ``plan`` read by Spark: the same Delta file list (no
    delta-spark; :mod:`data.features.spark` reads the features the same way), the
    ``event_ts`` range pushed into the Parquet scan, the distinct (user, day) pairs and the
    slate events reduced in Spark; the driver gets only those."""
    from pyspark.sql import functions as F

    if not plan.files:
        return read_local(ws, plan)
    start, end = plan.read[0] * DAY_MS, (plan.read[1] + 1) * DAY_MS
    raw = spark.read.parquet(*(str(f) for f in plan.files))
    present = [c for c in _EVENT_COLUMNS if c in raw.columns]
    ts = F.unix_millis("event_ts")
    events = raw.select(*present).where(
        (F.col("event_ts") >= F.timestamp_millis(F.lit(start)))
        & (F.col("event_ts") < F.timestamp_millis(F.lit(end)))
    )
    active = (
        events.select("user_key", F.floor(ts / DAY_MS).cast("long").alias("day"))
        .distinct()
        .toArrow()
    )
    slate = events.where(F.col("event_type").isin(*SLATE_TYPES)).toArrow()
    return EngagementInput(_finish_frame(slate.cast(_arrow_schema(slate))), active.to_pandas())


def _arrow_schema(table: pa.Table) -> pa.Schema:
    """Spark's Arrow types mapped onto the lake's (timestamps in ms, UTC)."""
    fields = []
    for f in table.schema:
        lake_type = LAKE_EVENTS.field(f.name).type if f.name in LAKE_EVENTS.names else f.type
        fields.append(pa.field(f.name, lake_type))
    return pa.schema(fields)


def user_segments(ws: Workspace) -> pd.DataFrame:
    users = read_users(ws.lake_users).to_pandas()
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


def engagement_table(
    ws: Workspace,
    config: EngagementConfig | None = None,
    days: tuple[str, str] | None = None,
    spark: SparkSession | None = None,
) -> pd.DataFrame:
    """One row per (day, bundle_version, segment): impressions, clicks, ``ctr`` (per 100) with
    ``ctr_lo``/``ctr_hi``, ``stream_through`` (+ interval), ``depth``, ``follow_rate`` (per 100),
    ``active_users``, ``churn7``/``churn14`` (+ intervals). ``bundle_version`` is ``"*"`` for
    rows over every version (churn is per user, so only those rows carry it).

    ``days`` (``YYYY-MM-DD`` first and last, inclusive): only those days' rows, reading only
    the partitions they need (:func:`read_plan`): the same rows as the whole table's for
    those days, except that a slate's clicks and streams count only when they come by the
    end of the 14th day after the range. ``spark``: read on that session
    (:func:`read_spark`); the numbers are computed by the same code either way."""
    config = config or EngagementConfig()
    plan = read_plan(ws, days)
    data = read_spark(spark, ws, plan) if spark is not None else read_local(ws, plan)
    events = data.slate
    segs = user_segments(ws)
    rows = _slate_rows(events, config)
    if plan.days is not None:
        rows = rows[(rows["day"] >= plan.days[0]) & (rows["day"] <= plan.days[1])]
    rows = _with_segments(rows, segs, config)
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
    churn = churn_table(data.active, segs, config, plan)
    star = eng["version"] == "*"
    merged = eng[star].merge(churn, how="outer", on=["day", "segment"])
    merged["version"] = "*"
    for c in ("impressions", "clicks", "streamed", "follows"):
        merged[c] = merged[c].fillna(0).astype("int64")
    eng = pd.concat([merged, eng[~star]], ignore_index=True)
    eng["date"] = pd.to_datetime(eng["day"] * DAY_MS, unit="ms", utc=True).dt.strftime("%Y-%m-%d")
    return eng.sort_values(["day", "version", "segment"]).reset_index(drop=True)


def churn_table(
    active: pd.DataFrame, segs: pd.DataFrame, config: EngagementConfig, plan: ReadPlan
) -> pd.DataFrame:
    """Per (day, segment): ``active_users`` in the week ending that day, ``churn7``/``churn14``
    with Wilson intervals (NaN where the following window runs past the data). ``active``:
    the distinct (``user_key``, ``day``) pairs of the days ``plan.read``."""
    active = active[["user_key", "day"]].drop_duplicates()
    if active.empty:
        return pd.DataFrame(columns=["day", "segment", "active_users", "churn7", "churn14"])
    first_day, last_day = plan.read
    data_first, data_last = plan.data
    out_first, out_last = plan.days if plan.days is not None else plan.read
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
    for i in range(max(out_first, data_first + 6) - first_day, out_last - first_day + 1):
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
                complete = d + h <= data_last
                rate = t[col] / t["active_users"]
                lo, hi = wilson(t[col].to_numpy(), t["active_users"].to_numpy(), config.z)
                t[f"churn{h}"] = rate if complete else np.nan
                t[f"churn{h}_lo"] = lo if complete else np.nan
                t[f"churn{h}_hi"] = hi if complete else np.nan
            out.append(t.drop(columns=["gone7", "gone14"]))
    if not out:
        return pd.DataFrame(columns=["day", "segment", "active_users", "churn7", "churn14"])
    return pd.concat(out, ignore_index=True)
