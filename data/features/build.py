"""The feature job: lake -> point-in-time features, examples, eval sets, trending, online store.

``build_features(ws, config)`` reads ``lake/events`` partition by partition (only the needed
columns, strings dictionary-encoded to integers), sorts the log by (user, event_ts) once and
writes every table of the ``features`` stage (docs/CONTRACTS.md) atomically, then publishes the
latest user features to the online store (writes and publishing run on one background thread
while the next table is computed). Time: ``end`` is the midnight (UTC) after the last
event; ``test`` = [end - test_days, end), ``valid`` = the ``valid_days`` before; examples
before the valid cutoff are ``train``.

Point in time: an example's state uses only events strictly before it; an eval row's state
only events before its cutoff; ``user_features.parquet`` and the online store hold
``user_features_at(events, users, end)`` — the very function the eval sets use.

Bad input (none stops the job):
* a user with no events: a row with empty lists, zero counts and dense values, segments from
  the account view, ``activity_level`` "none";
* events of a user missing from the account view (deleted user): kept; segments, region and
  tenure "unknown";
* an artist missing from the catalogue: kept in sequences, examples and features; name = its
  id, tags empty, ``days_active`` counted from its first event;
* a track without a known duration (null or <= 0): left out of ``completion_rate``; without a
  ``track_id``: left out of ``recent_tracks``, ``top_tracks`` and ``listen_ratio``;
* impressions without clicks: ``ctr_per_100`` 0 and ``ctr_relative`` <= 0, no division error;
* events without user_key, artist_id, a known event_type or a time: dropped with a warning;
* a split window before the first event is simply empty (reported in meta.json).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from core.atomic import write_json, write_table
from core.urls import redact_url
from core.workspace import Workspace
from data.features.artist import artist_features, trending
from data.features.config import FeatureConfig, split_cutoffs
from data.features.events import EventLog, build_event_log
from data.features.example_parts import day_tables, examples_by_split, write_days
from data.features.examples import build_eval, build_sequences
from data.features.online_store import open_online_store, publish_file, publish_table
from data.features.user import user_features_at
from data.lake import open_events, read_users
from data.schemas import ARTISTS, USERS

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from data.features.incremental import Carried

__all__ = ["FeatureConfig", "EventLog", "build_features", "cutoffs", "load_event_log"]
__all__ += ["user_features_at"]

log = logging.getLogger("tastemaker.data")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()


def cutoffs(ev: EventLog, config: FeatureConfig) -> dict[str, int]:
    """Epoch-ms cutoffs: ``end`` (midnight after the last event), ``test`` and ``valid``."""
    if not len(ev.ts):
        raise ValueError("the lake holds no usable events; nothing to build features from")
    return split_cutoffs(int(ev.ts.max()), config)


def _read(path: Path, what: str):
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist; run `tastemaker ingest` first")
    return pq.read_table(path)


def _views(ws: Workspace) -> tuple[pa.Table, pa.Table]:
    if not ws.lake_users.exists():
        raise FileNotFoundError(
            f"user view {ws.lake_users} does not exist; run `tastemaker ingest` first"
        )
    users = read_users(ws.lake_users)  # the Delta table's live files only
    artists = _read(ws.lake_artists, "artist catalogue")
    missing = [c for c in USERS.names if c not in users.column_names]
    missing += [c for c in ARTISTS.names if c not in artists.column_names]
    if missing:
        raise ValueError(f"lake users/artists tables lack columns {missing}")
    return users, artists


def load_event_log(
    ws: Workspace,
    config: FeatureConfig | None = None,
    version: int | None = None,
    trace: dict | None = None,
) -> EventLog:
    """The event log of the lake's events table at ``version`` (default: the latest);
    ``trace``: see :func:`data.features.events.build_event_log`."""
    users, artists = _views(ws)
    min_ms = (config or FeatureConfig()).stream_min_ms
    return build_event_log(ws.lake_events, users, artists, min_ms, version, trace)


def _publish(target: str | Path, users: pa.Table | Path) -> int:
    """Publish the user rows (a table, or the Parquet file of them, read in batches)."""
    if not str(target):
        return 0
    store = open_online_store(target)
    try:
        if isinstance(users, Path):
            return publish_file(store, users)
        return publish_table(store, users)
    finally:
        store.close()


def build_features(
    ws: Workspace,
    config: FeatureConfig | None = None,
    online: str | Path | None = None,
    as_of_version: int | None = None,
    spark: SparkSession | None = None,
    incremental: bool = False,
) -> dict[str, Any]:
    """Build and write every feature table; publish to ``online`` (default the SQLite file,
    ``""`` to skip). Returns the summary also written to ``features/meta.json``, with the
    events table version read (``lake_version``; ``as_of_version`` rebuilds from that one).

    ``spark``: build on that session (:mod:`data.features.spark`, the same tables); without
    one, in this process. ``incremental``: read only the lake files added since the state
    the last local build carried (:mod:`data.features.incremental`); without a usable state,
    a full rebuild (one log line says why). Every local build writes that state; the
    incremental build is local-engine only (with ``spark`` it is a full Spark build)."""
    config = config or FeatureConfig()
    started = time.perf_counter()
    version = open_events(ws.lake_events, as_of_version).version()
    target = ws.online_users if online is None else online
    if spark is None:
        built = _build_local(ws, config, version, target, incremental)
        engine = "local"
    else:
        from data.features.spark import build_spark_tables, log_peak

        if incremental:
            log.warning("features: --incremental is local-engine only; a full Spark build")
        built = build_spark_tables(ws, config, spark, version)
        built["build"] = {"mode": "full", "reason": "the Spark engine builds in full"}
        built["counts"]["online_rows"] = _publish(target, ws.feature_dir.user_features)
        log_peak("published")
        engine = "spark"
    summary = {
        "cutoffs": {k: _iso(v) for k, v in built["cutoffs"].items()},
        "counts": built["counts"],
        "online_store": redact_url(str(target)),  # meta.json is no place for a password
        "lake_version": version,
        "engine": engine,
        "build": built["build"],
        "config": dataclasses.asdict(config),
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(ws.feature_dir.meta, summary)
    log.info("features: wrote %s in %.1fs", ws.feature_dir.path, summary["seconds"])
    return summary


def _build_local(
    ws: Workspace, config: FeatureConfig, version: int, target: str | Path, incremental: bool
) -> dict[str, Any]:
    from data.features import incremental as inc

    started = time.perf_counter()
    merged: inc.Merged | str = "full build asked for"
    if incremental:
        state = inc.load_state(ws, config)
        if isinstance(state, inc.State):
            users, artists = _views(ws)
            merged = inc.merge_new_files(ws, config, version, state, users, artists)
            del state
        else:
            merged = state
        if isinstance(merged, str):
            log.warning("features: %s; full rebuild", merged)
    if isinstance(merged, str):
        trace: dict[str, Any] = {}
        ev = load_event_log(ws, config, version, trace)
        mode: dict[str, Any] = {"mode": "full", "reason": merged}
        carried, delta = None, None
        carry = (trace["seen"], trace["files"], trace["part_rows"], trace["read_pos"])
    else:
        ev, mode, carried = merged.ev, merged.stats, merged.carried
        carry = (merged.seen, merged.files, merged.file_rows, merged.read_pos)
        delta = merged.delta
    del merged
    mode["log_s"] = round(time.perf_counter() - started, 3)  # lake (or state + new files) read
    # the state's files are written beside the tables; it becomes current after all of them
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="features-state") as pool:
        if delta is None:  # the whole log, as a base part
            state_files = pool.submit(inc.save_state, ws, config, version, ev, *carry)
        else:  # the day's rows only, beside the carried parts
            state_files = pool.submit(inc.save_delta, ws, config, version, delta)
        built = _write_tables(ws, config, ev, target, carried)
        inc.commit_state(ws, state_files.result(), built["cutoffs"]["end"])
    built["build"] = {**mode, "example_days_written": built.pop("example_days_written")}
    return built


def _write_tables(
    ws: Workspace,
    config: FeatureConfig,
    ev: EventLog,
    target: str | Path,
    carried: Carried | None = None,
) -> dict[str, Any]:
    """Compute and write every table of ``ev``; with ``carried`` (an incremental build), only
    the days of ``examples`` that can differ from the previous build's."""
    cut = cutoffs(ev, config)
    log.info(
        "features: %d events, %d users, %d artists; test from %s",
        len(ev.ts),
        ev.n_users,
        ev.n_artists,
        _iso(cut["test"]),
    )
    out = ws.feature_dir
    days = None if carried is None else carried.days(out.examples, ev, config, cut)
    # Parquet encoding and the online store's inserts release the GIL: one background thread
    # writes each finished table while the next one is computed (the tables are immutable);
    # so do numpy's array passes: the eval sets, artists and trending are computed (and
    # written) on a second thread beside the user rows and the last writes.
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="features-write") as pool,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="features-side") as side,
    ):
        pending = [pool.submit(write_table, out.sequences, build_sequences(ev))]
        batches, names = day_tables(ev, config, cut, days)
        n_days, writing = 0, None
        for tables in batches:  # the next batch is built while this one is written
            n_days += len(tables)
            if writing is not None:
                writing.result()  # at most one batch of examples waits to be written
            writing = pool.submit(write_days, out.examples, tables, names)
            del tables
        if writing is None:  # no day to write: the folder still loses the days now empty
            writing = pool.submit(write_days, out.examples, {}, names)
        pending.append(writing)
        # after the examples (whose batches are the build's largest tables): less memory
        beside = side.submit(_side_tables, ws, config, ev, cut)
        split_counts = examples_by_split(ev, config, cut)
        n_examples = sum(split_counts.values())
        users = user_features_at(ev, None, cut["end"], config)
        pending.append(pool.submit(write_table, out.user_features, users))
        published = pool.submit(_publish, target, users)
        side_counts = beside.result()  # re-raises a failed table or write here
        for job in pending:
            job.result()
        n_published = published.result()
    counts = {
        "events": len(ev.ts),
        "users": ev.n_users,
        "artists": ev.n_artists,
        "examples": n_examples,
        "examples_by_split": split_counts,
        **side_counts,
        "online_rows": n_published,
    }
    return {"cutoffs": cut, "counts": counts, "example_days_written": n_days}


def _side_tables(
    ws: Workspace, config: FeatureConfig, ev: EventLog, cut: dict[str, int]
) -> dict[str, int]:
    """The eval sets, artist features and trending of ``ev``, computed and written on their
    own thread (see :func:`_write_tables`); returns their counts for ``meta.json``."""
    out = ws.feature_dir
    valid = build_eval(ev, config, "valid", cut["valid"], cut["test"])
    test = build_eval(ev, config, "test", cut["test"], cut["end"])
    write_table(out.eval_users, pa.concat_tables([valid, test]))
    write_table(out.artist_features, artist_features(ev, cut["end"], config))
    trend = trending(ev, cut["end"], config)
    write_table(out.trending, trend)
    return {
        "eval_valid_users": valid.num_rows,
        "eval_test_users": test.num_rows,
        "trending_rows": trend.num_rows,
    }
