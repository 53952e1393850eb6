"""The lake's Delta tables (``deltalake``, the delta-rs binding; no JVM).

Three tables, each partitioned by a UTC date (``dt=YYYY-MM-DD``) and described by a
:class:`TableSpec`: :data:`EVENTS` (``lake/events``, ``dt`` = day of ``event_ts``),
:data:`QUARANTINE_TABLE` (``pii/quarantine``, the PII zone; ``dt`` = day of the ingest run that
rejected the line) and :data:`USERS_TABLE` (``lake/users``, the PII-free user view; ``dt`` = day
of ``signup_ts``). The functions below take a spec (default: the events).

``lake/events``: Ingest writes
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

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.transaction import AddAction, RemoveAction

from core.atomic import write_table
from core.workspace import Workspace
from data.schemas import LAKE_EVENTS, LAKE_PARTITION, QUARANTINE, USERS

SOURCE_KEY = "tastemaker.source"
CHECKSUM_KEY = "tastemaker.sha256"
ENTRY_KEY = "tastemaker.entry"
FILES_KEY = "tastemaker.files"  # quarantine commits: the workspace-relative files added
MIGRATED_KEY = "tastemaker.migrated"
_DT = pa.field(LAKE_PARTITION, pa.string())
# the events table's schema: the lake's columns plus the partition column (YYYY-MM-DD)
EVENTS_SCHEMA = pa.schema([*LAKE_EVENTS, _DT])


@dataclass(frozen=True)
class TableSpec:
    """One of the lake's Delta tables: its name (``tastemaker lake --table``), its columns
    without the partition, and how a missing table is made (for the error message)."""

    name: str
    columns: pa.Schema
    made_by: str

    @property
    def schema(self) -> pa.Schema:
        """The table's schema: the columns plus ``dt`` (a string, YYYY-MM-DD)."""
        return pa.schema([*self.columns, _DT])


EVENTS = TableSpec("events", LAKE_EVENTS, "tastemaker ingest")
QUARANTINE_TABLE = TableSpec("quarantine", QUARANTINE, "tastemaker ingest")
USERS_TABLE = TableSpec("users", USERS, "tastemaker ingest")
TABLES = (EVENTS, QUARANTINE_TABLE, USERS_TABLE)


def table_path(ws: Workspace, spec: TableSpec) -> Path:
    return {"events": ws.lake_events, "quarantine": ws.quarantine, "users": ws.lake_users}[
        spec.name
    ]


def is_table(path: Path) -> bool:
    return (Path(path) / "_delta_log").is_dir()


is_events_table = is_table


def open_table(path: Path, version: int | None = None, spec: TableSpec = EVENTS) -> DeltaTable:
    """The ``spec`` table at ``path`` (its latest version, or ``version``).

    A missing table raises FileNotFoundError naming the command that makes it; files of the
    older layout (Parquet without a Delta log) one naming ``tastemaker lake migrate``."""
    path = Path(path)
    if not is_table(path):
        if _old_layout(path):
            raise FileNotFoundError(
                f"{path} holds Parquet files without a Delta log (the older layout); run "
                "`tastemaker lake migrate`"
            )
        raise FileNotFoundError(f"no lake {spec.name} table at {path}; run `{spec.made_by}` first")
    table = DeltaTable(str(path), version=version)
    check_schema(table, path, spec)
    return table


def open_events(path: Path, version: int | None = None) -> DeltaTable:
    """The events table at ``path`` (its latest version, or ``version``)."""
    return open_table(path, version, EVENTS)


def check_schema(table: DeltaTable, path: Path, spec: TableSpec = EVENTS) -> None:
    """A table with columns this code does not know was written by a newer tastemaker:
    refuse it (reading or appending would silently drop them)."""
    unknown = [f.name for f in table.schema().fields if f.name not in spec.schema.names]
    if unknown:
        raise ValueError(
            f"the {spec.name} table at {path} has columns {unknown} unknown to this version: it "
            "was written by a newer tastemaker; upgrade tastemaker to read it"
        )


def _old_layout(path: Path) -> bool:
    """Parquet files of the older layout: partition folders or flat files without a Delta
    log (events, quarantine), or the single ``<name>.parquet`` file beside (the user view)."""
    if path.with_name(path.name + ".parquet").is_file():
        return True
    return path.is_dir() and (
        any(path.glob(f"{LAKE_PARTITION}=*/*.parquet")) or any(path.glob("*.parquet"))
    )


def create_table(path: Path, spec: TableSpec = EVENTS, migrating: bool = False) -> DeltaTable:
    """Open the ``spec`` table, creating an empty one first if there is none (refused over
    files of the older layout unless ``migrating``: they would be left out)."""
    path = Path(path)
    if not is_table(path):
        if not migrating and _old_layout(path):
            open_table(path, spec=spec)  # raises, naming `tastemaker lake migrate`
        DeltaTable.create(
            str(path), schema=spec.schema, partition_by=[LAKE_PARTITION], mode="ignore"
        )
    return DeltaTable(str(path))


def create_events(path: Path, migrating: bool = False) -> DeltaTable:
    return create_table(path, EVENTS, migrating)


def table_dataset(
    path: Path,
    version: int | None = None,
    days: tuple[str, str] | None = None,
    spec: TableSpec = EVENTS,
) -> ds.Dataset:
    """The table's live files (those of its latest version, or of ``version``) as a pyarrow
    dataset with the spec's schema (timestamps in ms), files in :func:`table_files` order.

    ``days`` (``YYYY-MM-DD`` first and last, inclusive) reads a date range: the range is
    pushed down to the Delta log and whole partitions outside it are never opened (a ``dt``
    filter on the dataset prunes the same way)."""
    root = Path(path).resolve()
    files = [str(f) for f in table_files(root, version, days, spec)]
    return ds.dataset(
        files,
        schema=spec.schema,
        format="parquet",
        partitioning=ds.partitioning(pa.schema([_DT]), flavor="hive"),
        partition_base_dir=str(root),
    )


def events_dataset(
    path: Path, version: int | None = None, days: tuple[str, str] | None = None
) -> ds.Dataset:
    """:func:`table_dataset` of the events table."""
    return table_dataset(path, version, days, EVENTS)


def table_files(
    path: Path,
    version: int | None = None,
    days: tuple[str, str] | None = None,
    spec: TableSpec = EVENTS,
) -> list[Path]:
    """The files of the table's latest (or ``version``) version, in (partition, file name)
    order: a deterministic read order (the feature build breaks (user, time) ties by it).
    ``days``: only the partitions from ``days[0]`` to ``days[1]`` (``YYYY-MM-DD``, inclusive),
    pruned from the log without opening a file."""
    uris = open_table(path, version, spec).file_uris(partition_filters=_day_filters(days))
    return sorted(Path(unquote(u.removeprefix("file://"))) for u in uris)


def event_files(
    path: Path, version: int | None = None, days: tuple[str, str] | None = None
) -> list[Path]:
    """:func:`table_files` of the events table."""
    return table_files(path, version, days, EVENTS)


def read_table(
    path: Path,
    spec: TableSpec,
    version: int | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """The whole table (its latest version, or ``version``), the spec's columns without
    ``dt`` unless ``columns`` asks for it."""
    return table_dataset(path, version, spec=spec).to_table(columns=columns or spec.columns.names)


def read_users(path: Path, version: int | None = None) -> pa.Table:
    """The PII-free user view (``USERS`` rows) at its latest version, or ``version``."""
    return read_table(path, USERS_TABLE, version).cast(USERS)


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


def commit_files(
    table: DeltaTable,
    root: Path,
    files: list[Path],
    metadata: dict[str, str],
    spec: TableSpec = EVENTS,
) -> int:
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
        schema=spec.schema,
        partition_by=[LAKE_PARTITION],
        commit_properties=CommitProperties(custom_metadata=metadata),
    )
    table.update_incremental()
    return table.version()


def committed_objects(table: DeltaTable, after: int = -1) -> dict[str, dict[str, Any]]:
    """source -> {"version", "checksum", "entry", "files"} of every object commit newer than
    ``after`` (``entry``: the events table's ledger entry; ``files``: a quarantine commit's
    workspace-relative files)."""
    newer = table.version() - after
    if newer <= 0:
        return {}
    found: dict[str, dict[str, Any]] = {}
    for commit in table.history(limit=newer):
        source = commit.get(SOURCE_KEY)
        if source is None or commit["version"] <= after:
            continue
        entry = json.loads(commit[ENTRY_KEY]) if ENTRY_KEY in commit else None
        files = json.loads(commit[FILES_KEY]) if FILES_KEY in commit else None
        found.setdefault(
            source,
            {
                "version": commit["version"],
                "checksum": commit.get(CHECKSUM_KEY),
                "entry": entry,
                "files": files,
            },
        )
    return found


def live_files(path: Path) -> set[Path]:
    """Absolute paths of the files of the table's latest version (none if there is no table)."""
    if not is_table(path):
        return set()
    return {Path(unquote(f.removeprefix("file://"))) for f in DeltaTable(str(path)).file_uris()}


def partition_counts(
    path: Path, version: int | None = None, spec: TableSpec = EVENTS
) -> dict[str, int]:
    """Rows per ``dt`` partition of the table (read from the files' Parquet footers)."""
    counts: dict[str, int] = {}
    for file in table_files(path, version, spec=spec):
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


def _view_checksum(users: pa.Table) -> str:
    """SHA-256 of the view's rows in ``user_key`` order (Arrow IPC of contiguous arrays)."""
    sorted_view = users.sort_by("user_key").combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, sorted_view.schema) as out:
        out.write_table(sorted_view)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def publish_users(
    path: Path, users: pa.Table, source: str, migrating: bool = False
) -> dict[str, Any]:
    """Replace the user view table's rows by ``users`` (``USERS``) in one overwrite commit,
    partitioned by the UTC day of ``signup_ts``; the commit names ``source`` and the view's
    checksum. Idempotent: a view equal to the published one adds no commit.

    The replaced files are vacuumed at once: a deleted account's row must not outlive the
    publish that dropped it (the view is rebuilt from the account table, never travelled back
    to), and the folder then holds exactly the live files."""
    import pyarrow.compute as pc

    users = users.select(USERS.names).cast(USERS)
    checksum = _view_checksum(users)
    table = create_table(path, USERS_TABLE, migrating)
    for commit in table.history(limit=10):  # the last publish, before its vacuum commits
        if CHECKSUM_KEY in commit:
            if commit[CHECKSUM_KEY] == checksum:
                return {"version": table.version(), "rows": users.num_rows, "committed": False}
            break
    days = pc.strftime(users["signup_ts"], format="%Y-%m-%d")
    write_deltalake(
        str(path),
        users.append_column(_DT, days.cast(pa.string())),
        mode="overwrite",
        partition_by=[LAKE_PARTITION],
        commit_properties=CommitProperties(
            custom_metadata={SOURCE_KEY: source, CHECKSUM_KEY: checksum}
        ),
    )
    table = DeltaTable(str(path))
    table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    return {"version": table.version(), "rows": users.num_rows, "committed": True}


def history(path: Path, limit: int | None = None, spec: TableSpec = EVENTS) -> list[dict[str, Any]]:
    """The table's audit trail, newest first: version, UTC time, operation, raw object."""
    rows = []
    for commit in open_table(path, spec=spec).history(limit):
        when = datetime.fromtimestamp(commit["timestamp"] / 1000, tz=timezone.utc)
        rows.append(
            {
                "version": commit["version"],
                "time": when.isoformat(timespec="seconds"),
                "operation": commit.get("operation"),
                "source": commit.get(SOURCE_KEY) or commit.get(MIGRATED_KEY),
                "sha256": commit.get(CHECKSUM_KEY),
            }
        )
    return rows


def optimize(
    path: Path, target_size: int | None = None, spec: TableSpec = EVENTS
) -> dict[str, Any]:
    """Compact each partition's small files into larger ones (``optimize.compact``). The
    replaced files stay on disk, out of the table, until :func:`vacuum` removes them; those
    of the user view go at once (as after every publish: :func:`publish_users`)."""
    metrics = open_table(path, spec=spec).optimize.compact(target_size=target_size)
    table = open_table(path, spec=spec)
    if spec is USERS_TABLE:
        table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    return {"version": table.version(), **metrics}


def vacuum(
    path: Path,
    retention_hours: int | None = None,
    dry_run: bool = True,
    spec: TableSpec = EVENTS,
) -> list[str]:
    """Files out of the table for longer than ``retention_hours`` (default: the table's
    retention, 7 days), deleted unless ``dry_run``. A shorter retention than the table's is
    honoured when given (older versions then lose their files: no time travel to them)."""
    return open_table(path, spec=spec).vacuum(
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
        commit_files(table, path, files, {MIGRATED_KEY: day})
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


def migrate_quarantine(path: Path) -> dict[str, Any]:
    """Move the older layout's flat quarantine files (``part-<object>.parquet``, no Delta log)
    into the quarantine table: each file goes to ``dt=<UTC day of its mtime>/`` (the day it
    was quarantined) in one commit naming it, its rows are checked against the file it came
    from, and only then is the old file deleted. Idempotent: a file whose commit landed but
    which was not yet deleted is only deleted."""
    path = Path(path)
    old = sorted(path.glob("*.parquet"))
    table = create_table(path, QUARANTINE_TABLE, migrating=True)
    migrated = {c[MIGRATED_KEY] for c in table.history() if MIGRATED_KEY in c}
    added = rows = 0
    for file in old:
        expected = pq.read_metadata(file).num_rows
        if file.name not in migrated:
            data = pq.read_table(file)
            missing = [n for n in QUARANTINE.names if n not in data.column_names]
            if missing:
                raise ValueError(f"{file} lacks quarantine columns {missing}; not migrated")
            day = datetime.fromtimestamp(file.stat().st_mtime, tz=timezone.utc)
            target = path / f"{LAKE_PARTITION}={day:%Y-%m-%d}" / file.name
            write_table(target, data.select(QUARANTINE.names).cast(QUARANTINE))
            if pq.read_metadata(target).num_rows != expected:
                raise ValueError(f"migrated counts differ for {file}")
            commit_files(table, path, [target], {MIGRATED_KEY: file.name}, QUARANTINE_TABLE)
            added += 1
            rows += expected
        file.unlink()
    total = sum(partition_counts(path, spec=QUARANTINE_TABLE).values())
    return {
        "version": DeltaTable(str(path)).version(),
        "files_added": added,
        "rows_added": rows,
        "rows": total,
    }


def migrate_users(path: Path) -> dict[str, Any]:
    """Publish the older layout's ``<path>.parquet`` user view into the user view table, check
    its row count, then delete the old file. Idempotent (an equal view adds no commit)."""
    path = Path(path)
    old = path.with_name(path.name + ".parquet")
    if not old.is_file():
        table = create_table(path, USERS_TABLE)
        return {"version": table.version(), "rows_added": 0, "rows": len(read_users(path))}
    users = pq.read_table(old)
    missing = [n for n in USERS.names if n not in users.column_names]
    if missing:
        raise ValueError(f"{old} lacks user view columns {missing}; not migrated")
    published = publish_users(path, users, f"migrated:{old.name}", migrating=True)
    rows = read_users(path).num_rows
    if rows != users.num_rows:
        raise ValueError(f"migrated counts differ: {old} has {users.num_rows} rows, table {rows}")
    old.unlink()
    return {"version": published["version"], "rows_added": rows, "rows": rows}


def migrate_workspace(ws: Workspace) -> dict[str, Any]:
    """``tastemaker lake migrate``: every table of the older layout into its Delta table."""
    out: dict[str, Any] = {"events": migrate(ws.lake_events)}
    out["quarantine"] = migrate_quarantine(ws.quarantine)
    if ws.lake_users.exists() or ws.lake_users.with_name("users.parquet").is_file():
        out["users"] = migrate_users(ws.lake_users)
    return out


def files_between(path: Path, since: int, version: int | None = None) -> dict[str, list[Path]]:
    """The table's file changes from version ``since`` to ``version`` (default the latest):
    ``added`` (live at ``version``, not at ``since``) and ``removed`` (live at ``since``, not
    at ``version``: an optimize, a vacuumed or deleted file, an erasure's rewrite). Read from
    the Delta log only; no data file is opened. The incremental feature build reads exactly
    ``added`` and falls back to a full rebuild when anything was ``removed``."""
    before = set(event_files(path, since))
    after = set(event_files(path, version))
    return {"added": sorted(after - before), "removed": sorted(before - after)}
