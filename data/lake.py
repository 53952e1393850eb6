"""The lake's events as a Delta table (``deltalake``, the delta-rs binding; no JVM).

``lake/events`` is a Delta table partitioned by UTC date (``dt=YYYY-MM-DD``). Ingest writes
each raw object's Parquet files itself (deterministic names, ``dt=<day>/part-<object_id>
.parquet``) and then adds them in ONE commit whose custom metadata names the raw object
(:data:`SOURCE_KEY`), its checksum (:data:`CHECKSUM_KEY`) and its would-be ledger entry
(:data:`ENTRY_KEY`): the commit is the point where the object's events become visible, and a
killed run finds from the log which objects were committed (:func:`committed_objects`).

Every reader of the events goes through :func:`open_events` / :func:`events_dataset`: only
the files of the table's current (or a given) version are read, never a glob of the folder
(after an ``optimize`` the replaced files stay on disk until ``vacuum``).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable
from deltalake.transaction import AddAction, RemoveAction

from data.schemas import LAKE_EVENTS, LAKE_PARTITION

SOURCE_KEY = "tastemaker.source"
CHECKSUM_KEY = "tastemaker.sha256"
ENTRY_KEY = "tastemaker.entry"
# the table's schema: the lake's columns plus the partition column (a string, YYYY-MM-DD)
EVENTS_SCHEMA = pa.schema([*LAKE_EVENTS, pa.field(LAKE_PARTITION, pa.string())])


def is_events_table(path: Path) -> bool:
    return (Path(path) / "_delta_log").is_dir()


def open_events(path: Path, version: int | None = None) -> DeltaTable:
    """The events table at ``path`` (its latest version, or ``version``).

    A missing table raises FileNotFoundError naming ``tastemaker ingest``; a Parquet lake of
    the older layout (no ``_delta_log``) one naming ``tastemaker lake migrate``."""
    path = Path(path)
    if not is_events_table(path):
        if _has_parquet_partitions(path):
            raise FileNotFoundError(
                f"{path} is a Parquet lake without a Delta log; run `tastemaker lake migrate`"
            )
        raise FileNotFoundError(f"no lake events table at {path}; run `tastemaker ingest` first")
    table = DeltaTable(str(path), version=version)
    check_schema(table, path)
    return table


def check_schema(table: DeltaTable, path: Path) -> None:
    """A table with columns this code does not know was written by a newer tastemaker:
    refuse it (reading or appending would silently drop them)."""
    unknown = [f.name for f in table.schema().fields if f.name not in EVENTS_SCHEMA.names]
    if unknown:
        raise ValueError(
            f"the events table at {path} has columns {unknown} unknown to this version: it was "
            "written by a newer tastemaker; upgrade tastemaker to read it"
        )


def _has_parquet_partitions(path: Path) -> bool:
    return path.is_dir() and any(path.glob(f"{LAKE_PARTITION}=*/*.parquet"))


def create_events(path: Path, migrating: bool = False) -> DeltaTable:
    """Open the events table, creating an empty one first if there is none (refused over a
    Parquet lake of the older layout unless ``migrating``: its files would be left out)."""
    path = Path(path)
    if not is_events_table(path):
        if not migrating and _has_parquet_partitions(path):
            open_events(path)  # raises, naming `tastemaker lake migrate`
        DeltaTable.create(
            str(path), schema=EVENTS_SCHEMA, partition_by=[LAKE_PARTITION], mode="ignore"
        )
    return DeltaTable(str(path))


def events_dataset(
    path: Path, version: int | None = None, days: tuple[str, str] | None = None
) -> ds.Dataset:
    """The table's live files (those of its latest version, or of ``version``) as a pyarrow
    dataset with ``EVENTS_SCHEMA`` (timestamps in ms), files in :func:`event_files` order.

    ``days`` (``YYYY-MM-DD`` first and last, inclusive) reads a date range: the range is
    pushed down to the Delta log and whole partitions outside it are never opened (a ``dt``
    filter on the dataset prunes the same way)."""
    root = Path(path).resolve()
    files = [str(f) for f in event_files(root, version, days)]
    return ds.dataset(
        files,
        schema=EVENTS_SCHEMA,
        format="parquet",
        partitioning=ds.partitioning(
            pa.schema([EVENTS_SCHEMA.field(LAKE_PARTITION)]), flavor="hive"
        ),
        partition_base_dir=str(root),
    )


def event_files(
    path: Path, version: int | None = None, days: tuple[str, str] | None = None
) -> list[Path]:
    """The files of the table's latest (or ``version``) version, in (partition, file name)
    order: a deterministic read order (the feature build breaks (user, time) ties by it).
    ``days``: only the partitions from ``days[0]`` to ``days[1]`` (``YYYY-MM-DD``, inclusive),
    pruned from the log without opening a file."""
    uris = open_events(path, version).file_uris(partition_filters=_day_filters(days))
    return sorted(Path(unquote(u.removeprefix("file://"))) for u in uris)


def _day_filters(days: tuple[str, str] | None) -> list[tuple[str, str, Any]] | None:
    if days is None:
        return None
    return [(LAKE_PARTITION, ">=", days[0]), (LAKE_PARTITION, "<=", days[1])]


def partition_of(relpath: str) -> str:
    """``dt`` value of a table-relative file path ``dt=YYYY-MM-DD/part-....parquet``."""
    head = relpath.split("/", 1)[0]
    prefix = f"{LAKE_PARTITION}="
    if not head.startswith(prefix):
        raise ValueError(f"{relpath} is not inside a {LAKE_PARTITION}= partition")
    return head[len(prefix) :]


def commit_files(table: DeltaTable, root: Path, files: list[Path], metadata: dict[str, str]) -> int:
    """Add already written Parquet ``files`` (inside the table folder ``root``) in one commit
    carrying ``metadata``; returns the new version. Each file's row count goes into its stats."""
    root = Path(root).resolve()
    actions: list[AddAction | RemoveAction] = []
    for file in files:
        rel = file.resolve().relative_to(root).as_posix()
        stats = json.dumps({"numRecords": pq.read_metadata(file).num_rows})
        actions.append(
            AddAction(
                rel,
                file.stat().st_size,
                {LAKE_PARTITION: partition_of(rel)},
                int(file.stat().st_mtime * 1000),
                True,
                stats,
            )
        )
    table.create_write_transaction(
        actions,
        mode="append",
        schema=EVENTS_SCHEMA,
        partition_by=[LAKE_PARTITION],
        commit_properties=CommitProperties(custom_metadata=metadata),
    )
    table.update_incremental()
    return table.version()


def committed_objects(table: DeltaTable, after: int = -1) -> dict[str, dict[str, Any]]:
    """source -> {"version", "checksum", "entry"} of every object commit newer than ``after``."""
    newer = table.version() - after
    if newer <= 0:
        return {}
    found: dict[str, dict[str, Any]] = {}
    for commit in table.history(limit=newer):
        source = commit.get(SOURCE_KEY)
        if source is None or commit["version"] <= after:
            continue
        entry = json.loads(commit[ENTRY_KEY]) if ENTRY_KEY in commit else None
        found[source] = {
            "version": commit["version"],
            "checksum": commit.get(CHECKSUM_KEY),
            "entry": entry,
        }
    return found


def live_files(path: Path) -> set[Path]:
    """Absolute paths of the files of the table's latest version (none if there is no table)."""
    if not is_events_table(path):
        return set()
    return {Path(f.removeprefix("file://")) for f in DeltaTable(str(path)).file_uris()}


def partition_counts(path: Path, version: int | None = None) -> dict[str, int]:
    """Rows per ``dt`` partition of the table (read from the files' Parquet footers)."""
    counts: dict[str, int] = {}
    for file in event_files(path, version):
        day = partition_of(f"{file.parent.name}/{file.name}")
        counts[day] = counts.get(day, 0) + pq.read_metadata(file).num_rows
    return dict(sorted(counts.items()))


def append_events(path: Path, events: pa.Table, name: str, metadata: dict[str, str]) -> int:
    """Write ``events`` (``LAKE_EVENTS`` columns) as ``dt=<UTC day>/<name>.parquet`` files and
    add them in one commit; returns the new version. (Migration and test lakes; ingest writes
    its own files and calls :func:`commit_files`.)"""
    import pyarrow.compute as pc

    from data.ingest.ops import write_lake_file

    table = create_events(path)
    events = events.select(LAKE_EVENTS.names).cast(LAKE_EVENTS)
    days = pc.strftime(events["event_ts"], format="%Y-%m-%d")
    files = []
    for day in sorted(set(days.to_pylist())):
        file = Path(path) / f"{LAKE_PARTITION}={day}" / f"{name}.parquet"
        write_lake_file(file, events.filter(pc.equal(days, day)))
        files.append(file)
    return commit_files(table, path, files, metadata)


def history(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The table's audit trail, newest first: version, UTC time, operation, raw object."""
    rows = []
    for commit in open_events(path).history(limit):
        when = datetime.fromtimestamp(commit["timestamp"] / 1000, tz=timezone.utc)
        rows.append(
            {
                "version": commit["version"],
                "time": when.isoformat(timespec="seconds"),
                "operation": commit.get("operation"),
                "source": commit.get(SOURCE_KEY),
                "sha256": commit.get(CHECKSUM_KEY),
            }
        )
    return rows


def optimize(path: Path, target_size: int | None = None) -> dict[str, Any]:
    """Compact each partition's small files into larger ones (``optimize.compact``). The
    replaced files stay on disk, out of the table, until :func:`vacuum` removes them."""
    metrics = open_events(path).optimize.compact(target_size=target_size)
    return {"version": open_events(path).version(), **metrics}


def vacuum(path: Path, retention_hours: int | None = None, dry_run: bool = True) -> list[str]:
    """Files out of the table for longer than ``retention_hours`` (default: the table's
    retention, 7 days), deleted unless ``dry_run``. A shorter retention than the table's is
    honoured when given (older versions then lose their files: no time travel to them)."""
    return open_events(path).vacuum(
        retention_hours=retention_hours,
        dry_run=dry_run,
        enforce_retention_duration=retention_hours is None,
    )


def migrate(path: Path) -> dict[str, Any]:
    """Convert a Parquet lake of the older layout (``dt=YYYY-MM-DD/*.parquet``, no Delta log)
    into the events table in place: one commit per partition adding its files as they are.

    Idempotent: partitions already in the table are skipped. Counts are checked: rows per
    partition in the table == rows in that partition's Parquet files, else ValueError (and
    nothing further is committed)."""
    path = Path(path)
    folders = sorted(p for p in path.glob(f"{LAKE_PARTITION}=*") if p.is_dir())
    expected = {
        partition_of(f"{d.name}/x"): sum(pq.read_metadata(f).num_rows for f in d.glob("*.parquet"))
        for d in folders
    }
    table = create_events(path, migrating=True)
    done = set(partition_counts(path))
    added = []
    for folder in folders:
        day = partition_of(f"{folder.name}/x")
        files = sorted(folder.glob("*.parquet"))
        if day in done or not files:
            continue
        for f in files:
            schema = pq.read_schema(f)
            missing = [n for n in LAKE_EVENTS.names if n not in schema.names]
            if missing:
                raise ValueError(f"{f} lacks lake columns {missing}; not migrated")
        commit_files(table, path, files, {"tastemaker.migrated": day})
        added.append(day)
    counts = partition_counts(path)
    wrong = {d: (n, counts.get(d, 0)) for d, n in expected.items() if counts.get(d, 0) != n}
    if wrong:
        raise ValueError(f"migrated counts differ (partition: Parquet rows, table rows): {wrong}")
    return {
        "version": open_events(path).version(),
        "partitions_added": added,
        "partitions": len(counts),
        "rows": sum(counts.values()),
        "rows_per_partition": counts,
    }


def files_between(path: Path, since: int, version: int | None = None) -> dict[str, list[Path]]:
    """The table's file changes from version ``since`` to ``version`` (default the latest):
    ``added`` (live at ``version``, not at ``since``) and ``removed`` (live at ``since``, not
    at ``version``: an optimize, a vacuumed or deleted file, an erasure's rewrite). Read from
    the Delta log only; no data file is opened. The incremental feature build reads exactly
    ``added`` and falls back to a full rebuild when anything was ``removed``."""
    before = set(event_files(path, since))
    after = set(event_files(path, version))
    return {"added": sorted(after - before), "removed": sorted(before - after)}
