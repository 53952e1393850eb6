"""The Spark feature engine: the local engine's functions, run per range of users and artists.

Nothing here computes a feature. Spark moves rows so that each task holds whole groups, and
the task calls the functions the local engine calls on its whole log:

1. **Read** the events table's snapshot: the exact Parquet files deltalake lists for the
   version (:func:`data.lake.event_files`; delta-spark's Maven jars are not needed, and a
   version's file list is a snapshot-consistent read by the Delta protocol). Each row gets
   ``lake_pos`` = (file's place in that list, row in file): the local engine's read order,
   which breaks ties between events of one user at the same millisecond.
2. **Listen ratios** (a stream against earlier streams of its track by anyone): streams are
   hash-partitioned by track; each task runs :func:`~data.features.events.track_listen_ratios`
   on its whole tracks; the values join back to the events by ``lake_pos``.
3. **Users**: events and the account view are range-partitioned by ``user_key``; each task
   builds an :class:`~data.features.events.EventLog` of its users (listen ratios given) and
   writes its part of sequences, examples, eval sets and user features
   (``build_sequences``, ``build_examples``, ``build_eval``, ``user_features_at``) and its
   trending counts (``trending_counts``, summed on the driver, ranked by ``rank_trending``).
4. **Artists**: events and the catalogue range-partitioned by ``artist_id``; each task writes
   ``artist_stats`` of its artists; the driver ranks them once (``rank_artists``).
5. **Assemble**: the parts of each table, in range order (so rows come out in the local
   engine's order), stream into one Parquet file written atomically. Parts live in a staging
   folder inside the feature folder that is removed whatever happens: a job that dies leaves
   the previous tables untouched.

The session (:func:`spark_session`): UTC session time zone, the project's interpreter for
Python workers, logs at ERROR and no console progress (the job draws one bar of its stages).
Tasks write their parts straight to the feature folder, so on a cluster that folder must be
on storage every executor sees.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.atomic import write_batches, write_table
from core.constants import DAY_MS
from core.memory import peak_rss_mb
from core.progress import progress_bar
from core.workspace import Workspace
from data.features.artist import (
    ARTIST_STATS,
    TREND_COUNTS,
    artist_stats,
    rank_artists,
    rank_trending,
    trending_counts,
)
from data.features.config import FeatureConfig, split_cutoffs
from data.features.events import LR_COLS, build_event_log, track_listen_ratios
from data.features.example_parts import part_name, write_days
from data.features.examples import build_eval, build_examples, build_sequences
from data.features.user import user_features_at
from data.lake import USERS_TABLE, event_files, is_table, table_files
from data.schemas import (
    ARTISTS,
    EVAL_USERS,
    EVENT_TYPES,
    EXAMPLES,
    USER_FEATURES,
    USER_SEQUENCES,
    USERS,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from core.settings import Settings

log = logging.getLogger("tastemaker.data")

SPARK_VERSIONS = ((3, 5), (5, 0))  # mapInArrow and Parquet's _metadata.row_index: 3.5 on
JAVA_HINT = "install Java 17 (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)"
_LOG4J = Path(__file__).with_name("log4j2-spark.properties")
_EVENT_COLS: tuple[str, ...] = ("event_type", "user_key", "artist_id", "track_id")
_EVENT_COLS += ("ms_played", "track_duration_ms", "event_ts")
_ROWS_PER_TASK = 2_000_000  # events per user/artist range: ~0.2 GB of EventLog per task
_ASSEMBLE_ROWS = 1 << 16  # rows per batch when the driver joins the parts
_KIND = "_kind"  # 0 = an event, 1 = a row of the account view or the catalogue


class SparkUnavailable(RuntimeError):
    """Spark cannot run here (no Java, a pyspark or server of an unsupported version)."""


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def check_spark(found: str, what: str = "pyspark") -> None:
    """Raise :class:`SparkUnavailable` unless ``found`` (a version) is supported."""
    low, high = SPARK_VERSIONS
    if not low <= _version(found) < high:
        raise SparkUnavailable(
            f"{what} {found} is not supported; the Spark engine needs Spark "
            f">={low[0]}.{low[1]},<{high[0]} (pip install 'tastemaker[spark]')"
        )


def check_java() -> None:
    if shutil.which("java") is None:
        raise SparkUnavailable(f"no `java` on PATH; the Spark engine needs it: {JAVA_HINT}")


def spark_session(settings: Settings, master: str | None = None) -> SparkSession:
    """A session for the feature job. ``master`` (default ``settings.spark_master``):
    ``local[N]``, ``spark://host:port`` or a Spark Connect ``sc://host:port`` (no local Java
    then). Workers run ``settings.spark_python_path``."""
    master = master or settings.spark_master
    python = settings.spark_python_path
    try:
        import pyspark
    except ImportError as exc:
        raise SparkUnavailable(
            "pyspark is not installed; the Spark engine needs it: pip install 'tastemaker[spark]'"
        ) from exc
    check_spark(pyspark.__version__)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("tastemaker-features")
    builder = builder.config("spark.sql.session.timeZone", "UTC")
    if master.startswith("sc://"):
        spark = builder.remote(master).getOrCreate()
    else:
        check_java()
        settings.export_spark_env()
        for key, value in {
            "spark.pyspark.python": python,
            "spark.pyspark.driver.python": python,
            # the workers import this checkout's packages, as the driver does
            "spark.executorEnv.PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{_LOG4J}",
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            **({"spark.driver.memory": memory} if (memory := settings.spark_driver_memory) else {}),
        }.items():
            builder = builder.config(key, value)
        spark = builder.master(master).getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
    check_spark(spark.version, "the Spark server")
    return spark


def _part(stage: Path, table: str, part: int) -> Path:
    return stage / table / f"part-{part:05d}.parquet"


def _task_id() -> int:
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:
        raise RuntimeError("a Spark task function ran outside a Spark task")
    return context.partitionId()


def _ms_to_ts(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Spark hands timestamps over as epoch-ms integers (no time zone on the way)."""
    return table.select(schema.names).cast(schema)


def _split(batches: Iterable[pa.RecordBatch]) -> tuple[pa.Table, pa.Table] | None:
    """A task's rows -> (its events in lake order, its view rows), or None without rows."""
    kept = [b for b in batches if b.num_rows]
    if not kept:
        return None
    table = pa.Table.from_batches(kept)
    view = pc.equal(table[_KIND], 1)
    events = table.filter(pc.invert(view)).sort_by("lake_pos")
    return events.select([*_EVENT_COLS, *LR_COLS]), table.filter(view)


def _listen_task(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    kept = [b for b in batches if b.num_rows]
    if not kept:
        return
    t = pa.Table.from_batches(kept).sort_by([("track_id", "ascending"), ("event_ts", "ascending")])
    track = t["track_id"].combine_chunks().dictionary_encode().indices.to_numpy()
    ms = t["ms_played"].to_numpy().astype(np.float64)
    lr_q, ok = track_listen_ratios(track, t["event_ts"].to_numpy(), ms)
    yield pa.RecordBatch.from_pydict(
        {"lake_pos": t["lake_pos"].combine_chunks(), LR_COLS[0]: lr_q, LR_COLS[1]: ok}
    )


_USER_SUMMARY = "part long, events long, users long, examples long, train long, valid long, "
_USER_SUMMARY += "test long, eval_valid long, eval_test long"


def _user_task(stage: Path, config: FeatureConfig, cut: dict[str, int]):
    def run(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        rows = _split(batches)
        if rows is None:
            return
        events, view = rows
        users = _ms_to_ts(view, USERS)
        ev = build_event_log(events, users, ARTISTS.empty_table(), config.stream_min_ms)
        part = _task_id()
        write_table(_part(stage, "sequences", part), build_sequences(ev))
        examples = build_examples(ev, config, cut["valid"], cut["test"])
        for day, rows in _by_day(examples):
            write_table(_part(stage / "examples", str(day), part), rows)
        valid = build_eval(ev, config, "valid", cut["valid"], cut["test"])
        test = build_eval(ev, config, "test", cut["test"], cut["end"])
        write_table(_part(stage, "eval_valid", part), valid)
        write_table(_part(stage, "eval_test", part), test)
        write_table(_part(stage, "users", part), user_features_at(ev, None, cut["end"], config))
        write_table(_part(stage, "trend", part), trending_counts(ev, cut["end"], config))
        split = examples["split"].to_numpy(zero_copy_only=False)
        summary = {"part": [part], "events": [len(ev.ts)], "users": [ev.n_users]}
        summary["examples"] = [examples.num_rows]
        summary.update({s: [int((split == s).sum())] for s in ("train", "valid", "test")})
        summary.update({"eval_valid": [valid.num_rows], "eval_test": [test.num_rows]})
        yield pa.RecordBatch.from_pydict(summary)

    return run


def _artist_task(stage: Path, config: FeatureConfig, end: int):
    def run(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        rows = _split(batches)
        if rows is None:
            return
        events, view = rows
        artists = _ms_to_ts(view, ARTISTS)
        ev = build_event_log(events, USERS.empty_table(), artists, config.stream_min_ms)
        part = _task_id()
        write_table(_part(stage, "artists", part), artist_stats(ev, end, config))
        yield pa.RecordBatch.from_pydict({"part": [part], "artists": [ev.n_artists]})

    return run


def _read_events(spark: SparkSession, files: list[Path]) -> DataFrame:
    """The snapshot's files with the usable events' columns (timestamps as epoch ms) and
    ``lake_pos``; events the local engine drops (no user, artist, known type or time) are
    left out here too."""
    from pyspark.sql import functions as F

    raw = spark.read.parquet(*(str(f) for f in files))
    raw = raw.select(
        *(c for c in _EVENT_COLS if c != "event_ts"),
        F.unix_millis("event_ts").alias("event_ts"),
        F.col("_metadata.file_path").alias("_file"),
        F.col("_metadata.row_index").alias("_row"),
    )
    place = {f.resolve(): i for i, f in enumerate(files)}
    seen = [r[0] for r in raw.select("_file").distinct().collect()]
    index = spark.createDataFrame(
        [(uri, place[Path(unquote(urlparse(uri).path)).resolve()]) for uri in seen],
        "_file string, _file_i long",
    )
    events = raw.join(F.broadcast(index), "_file").withColumn(
        "lake_pos", F.col("_file_i") * (1 << 32) + F.col("_row")
    )
    usable = (
        F.col("user_key").isNotNull()
        & F.col("artist_id").isNotNull()
        & F.col("event_type").isin(*EVENT_TYPES)
        & F.col("event_ts").isNotNull()
    )
    return events.where(usable).drop("_file", "_file_i", "_row")


def _with_listen_ratios(events: DataFrame, n_parts: int) -> DataFrame:
    from pyspark.sql import functions as F

    streams = events.where(
        (F.col("event_type") == "stream")
        & F.col("track_id").isNotNull()
        & F.col("ms_played").isNotNull()
    ).select("track_id", "event_ts", "ms_played", "lake_pos")
    ratios = streams.repartition(n_parts, "track_id").mapInArrow(
        _listen_task, f"lake_pos long, {LR_COLS[0]} long, {LR_COLS[1]} boolean"
    )
    return events.join(ratios, "lake_pos", "left").fillna({LR_COLS[0]: 0, LR_COLS[1]: False})


def _ranges(events: DataFrame, view: DataFrame, key: str, n_parts: int) -> DataFrame:
    from pyspark.sql import functions as F

    tagged = events.withColumn(_KIND, F.lit(0)).unionByName(
        view.withColumn(_KIND, F.lit(1)), allowMissingColumns=True
    )
    return tagged.repartitionByRange(n_parts, key)


def _view(spark: SparkSession, path: Path, schema: pa.Schema) -> DataFrame:
    """A Parquet view (the catalogue), or a Delta table's live files (the user view: the
    same file-list read as the events, :func:`data.lake.table_files`)."""
    from pyspark.sql import functions as F

    if is_table(path):
        files = table_files(path, spec=USERS_TABLE)
        if not files:
            return spark.createDataFrame([], _spark_schema(schema))
        table = spark.read.parquet(*(str(f) for f in files))
    elif not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run `tastemaker ingest` first")
    else:
        table = spark.read.parquet(str(path))
    missing = [c for c in schema.names if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}")
    cols = [
        F.unix_millis(n).alias(n) if pa.types.is_timestamp(schema.field(n).type) else F.col(n)
        for n in schema.names
    ]
    return table.select(*cols)


def _spark_schema(schema: pa.Schema) -> str:
    """A DDL schema of ``schema`` with timestamps as epoch-ms longs (what :func:`_view` gives)."""
    kinds = {pa.string(): "string", pa.int64(): "long", pa.int32(): "int", pa.float64(): "double"}
    return ", ".join(
        f"{f.name} {'long' if pa.types.is_timestamp(f.type) else kinds[f.type]}" for f in schema
    )


def _batches(parts: list[Path]) -> Iterator[pa.RecordBatch]:
    """The parts' rows, in order, a batch at a time."""
    for part in parts:
        yield from pq.ParquetFile(part).iter_batches(_ASSEMBLE_ROWS)


def _assemble(parts: list[Path], target: Path, schema: pa.Schema) -> int:
    """Parts, in order, streamed into one Parquet file (atomic; the file the local engine
    writes for the same rows); returns its rows. The driver holds one row group at a time."""
    return write_batches(target, _batches(parts), schema)


def build_spark_tables(
    ws: Workspace, config: FeatureConfig, spark: SparkSession, version: int
) -> dict[str, Any]:
    """Write every feature table of the lake's events at ``version``; returns the cutoffs
    and counts ``build_features`` reports (its local counterpart: the local engine)."""
    from pyspark.sql import functions as F

    files = event_files(ws.lake_events, version)
    if not files:
        raise ValueError("the lake holds no usable events; nothing to build features from")
    n_rows = sum(pq.read_metadata(f).num_rows for f in files)
    n_parts = max(2, -(-n_rows // _ROWS_PER_TASK))
    out = ws.feature_dir
    stage = out.path / f".spark-{uuid.uuid4().hex[:12]}"
    stage.mkdir(parents=True)
    shuffle = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", str(n_parts))  # joins: one task per range
    try:
        with progress_bar(5, desc="features (spark)", unit="stage") as bar:
            events = _read_events(spark, files).cache()
            last = events.agg(F.max("event_ts")).collect()[0][0]
            if last is None:
                raise ValueError("the lake holds no usable events; nothing to build features from")
            cut = split_cutoffs(int(last), config)
            log_peak("events read")
            bar.update()
            scored = _with_listen_ratios(events, n_parts).cache()
            bar.update()
            users = _view(spark, ws.lake_users, USERS)
            per_user = (
                _ranges(scored, users, "user_key", n_parts)
                .mapInArrow(_user_task(stage, config, cut), _USER_SUMMARY)
                .collect()
            )
            bar.update()
            artists = _view(spark, ws.lake_artists, ARTISTS)
            per_artist = (
                _ranges(scored, artists, "artist_id", n_parts)
                .mapInArrow(_artist_task(stage, config, cut["end"]), "part long, artists long")
                .collect()
            )
            scored.unpersist()
            events.unpersist()
            bar.update()
            counts = _finish(stage, out, config, per_user, per_artist, cut["end"])
            bar.update()
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", str(shuffle))
        shutil.rmtree(stage, ignore_errors=True)
    if n_rows != counts["events"]:
        log.warning(
            "dropped %d events without user_key, artist_id, known type or time",
            n_rows - counts["events"],
        )
    return {"cutoffs": cut, "counts": counts}


def _by_day(examples: pa.Table) -> Iterator[tuple[int, pa.Table]]:
    """A part's examples (rows by user and time) split by UTC day of ``event_ts``, each
    day's rows in the part's order (one stable sort, then slices)."""
    day = examples["event_ts"].cast(pa.int64()).to_numpy() // DAY_MS
    order = np.argsort(day, kind="stable")
    day = day[order]
    table = examples.take(pa.array(order))
    starts = np.flatnonzero(np.diff(day, prepend=-1)).tolist()  # day >= 0: row 0 starts one
    for lo, hi in zip(starts, [*starts[1:], len(day)], strict=True):
        yield int(day[lo]), table.slice(lo, hi - lo)


def _assemble_days(folder: Path, stage: Path, end: int) -> None:
    """The tasks' examples, one file per (day, user range), -> the day files of
    :mod:`data.features.example_parts`: each day is its ranges' rows in range order (rows
    by user, then time, as the local engine orders a day), streamed into the file the local
    engine writes for it, byte for byte (:func:`core.atomic.write_batches`: the driver holds
    one row group, 128 Ki examples, per day being written, never a day; two days are written
    at once, Parquet encoding releases the GIL)."""
    parts = {int(d.name): sorted(d.glob("part-*.parquet")) for d in stage.glob("examples/*")}
    last = (end - 1) // DAY_MS
    names = {part_name(d) for d in parts} | {part_name(last)}
    write_days(folder, {}, names)  # the folder, without the days that have no examples now

    def write(day: int) -> None:
        write_batches(folder / part_name(day), _batches(parts[day]), EXAMPLES)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="example-days") as pool:
        list(pool.map(write, sorted(parts)))
    if last not in parts:
        write_days(folder, {part_name(last): EXAMPLES.empty_table()}, names)


def log_peak(step: str) -> None:
    """A debug line: the step done and the driver's memory peak so far (process and Arrow)."""
    if log.isEnabledFor(logging.DEBUG):
        peak = peak_rss_mb()
        arrow = pa.default_memory_pool().max_memory() >> 20
        log.debug(
            "features (spark): %s; driver peak %.0f MB, Arrow pool peak %d MB", step, peak, arrow
        )


def _sum_trend(parts: list[Path]) -> pa.Table:
    """The ranges' stream counts summed by (segment, artist), folded in one part at a time:
    the driver holds the running sums (one row a pair) and one part, not every range's rows
    (each range holds most pairs again). Groups keep their first appearance's order, as one
    ``group_by`` over all parts would give."""
    summed = TREND_COUNTS.empty_table()
    for part in parts:
        both = pa.concat_tables([summed, pq.read_table(part).cast(TREND_COUNTS)])
        out = both.group_by(["segment", "artist_id"], use_threads=False).aggregate(
            [(k, "sum") for k in ("s7", "s28", "total")]
        )
        out = out.rename_columns([c.removesuffix("_sum") for c in out.column_names])
        summed = out.select(TREND_COUNTS.names)
    return summed


def _finish(
    stage: Path, out, config: FeatureConfig, per_user: list, per_artist: list, end: int
) -> dict:
    def parts(name: str, summary: list) -> list[Path]:
        return [_part(stage, name, r["part"]) for r in sorted(summary, key=lambda r: r["part"])]

    log_peak("tasks done")
    _assemble(parts("sequences", per_user), out.sequences, USER_SEQUENCES)
    log_peak("sequences written")
    _assemble_days(out.examples, stage, end)
    log_peak("examples written")
    _assemble(
        parts("eval_valid", per_user) + parts("eval_test", per_user), out.eval_users, EVAL_USERS
    )
    log_peak("eval sets written")
    _assemble(parts("users", per_user), out.user_features, USER_FEATURES)
    log_peak("user features written")
    trending = rank_trending(_sum_trend(parts("trend", per_user)), config)
    write_table(out.trending, trending)
    log_peak("trending written")
    stats = pa.concat_tables(
        [pq.read_table(p).cast(ARTIST_STATS) for p in parts("artists", per_artist)]
        or [ARTIST_STATS.empty_table()]
    )
    write_table(out.artist_features, rank_artists(stats, config))
    log_peak("artist features written")

    def total(key: str) -> int:
        return int(sum(r[key] for r in per_user))

    return {
        "events": total("events"),
        "users": total("users"),
        "artists": stats.num_rows,
        "examples": total("examples"),
        "examples_by_split": {s: total(s) for s in ("test", "train", "valid") if total(s)},
        "eval_valid_users": total("eval_valid"),
        "eval_test_users": total("eval_test"),
        "trending_rows": trending.num_rows,
    }
