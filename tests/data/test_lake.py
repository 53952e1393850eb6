"""`tastemaker lake history|optimize|vacuum|migrate` on tiny lakes: the audit trail, compaction
and retention leave the features unchanged; a Parquet lake of the older layout migrates with
its counts checked, once."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.atomic import write_table
from core.workspace import Workspace
from data.features.build import FeatureConfig, build_features
from data.ingest.job import ingest_store
from data.ingest.objectstore import ObjectStore
from data.lake import (
    QUARANTINE_TABLE,
    USERS_TABLE,
    append_events,
    event_files,
    events_dataset,
    open_events,
    partition_counts,
    publish_users,
    read_table,
    read_users,
    table_files,
)
from data.schemas import QUARANTINE
from tastemaker.cli import main
from tests.data.features.features_lake import artists_table, events_table
from tests.data.features.test_features_known import ROWS, USERS
from tests.data.ingest.ingest_helpers import KEY, NOW, good_event, line, lookups, write_object

TABLES = ("examples", "eval", "user_features", "artist_features", "sequences", "trending")


def features(ws: Workspace) -> dict[str, pa.Table]:
    build_features(ws, FeatureConfig(), online="")
    return {n: pq.read_table(ws.features / f"{n}.parquet") for n in TABLES}


@pytest.fixture
def ws(tmp_path) -> Workspace:
    """The known-answers lake, written in three commits (several files per partition)."""
    ws = Workspace(tmp_path / "ws")
    events = events_table(ROWS)
    for k, name in enumerate(("part-a", "part-b", "part-c")):
        append_events(ws.lake_events, events.slice(k * 13, 13), name, {"k": str(k)})
    publish_users(ws.lake_users, USERS, "test")
    write_table(ws.lake_artists, artists_table([f"a{i}" for i in range(1, 7)]))
    return ws


def cli(ws: Workspace, *args: str) -> int:
    return main(["--workspace", str(ws.root), "lake", *args])


def test_history_optimize_vacuum_leave_the_features_unchanged(ws, capsys):
    before = features(ws)
    files_before = event_files(ws.lake_events)
    assert cli(ws, "history") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [int(s.split()[0]) for s in lines] == [3, 2, 1, 0]
    assert "CREATE TABLE" in lines[-1] and "WRITE" in lines[0]

    assert cli(ws, "optimize") == 0
    summaries = json.loads(capsys.readouterr().out)
    assert sorted(summaries) == ["events", "users"]  # every table there is (no quarantine)
    summary = summaries["events"]
    assert summary["version"] == 4 and summary["numFilesRemoved"] > summary["numFilesAdded"]
    replaced = sorted(set(files_before) - set(event_files(ws.lake_events)))
    assert len(event_files(ws.lake_events)) < len(files_before) and replaced
    assert all(f.exists() for f in files_before)  # replaced, not deleted: time travel works
    assert open_events(ws.lake_events, version=3).version() == 3
    assert features(ws) == before

    assert cli(ws, "vacuum", "--retention-hours", "0") == 0  # dry run by default
    assert "events: would delete" in capsys.readouterr().out
    assert all(f.exists() for f in files_before)
    assert cli(ws, "vacuum", "--retention-hours", "0", "--apply") == 0
    assert f"events: deleted {len(replaced)} file(s)" in capsys.readouterr().out
    assert not any(f.exists() for f in replaced)
    assert all(f.exists() for f in event_files(ws.lake_events))
    assert features(ws) == before


def test_ingest_after_optimize_keeps_the_compacted_files(tmp_path):
    ws = Workspace(tmp_path)
    for k in range(3):
        rows = [line(good_event(10 * k + i)) for i in range(10)]
        write_object(ws.root, f"dt=2025-03-0{k + 1}/o{k}.jsonl.gz", rows)
    store = ObjectStore(ws.raw)
    ingest_store(ws, store, lookups(), key=KEY, now=NOW)
    assert cli(ws, "optimize") == 0
    compacted = event_files(ws.lake_events)
    write_object(ws.root, "dt=2025-03-04/o3.jsonl.gz", [line(good_event(i)) for i in range(25, 35)])
    m = ingest_store(ws, store, lookups(), key=KEY, now=NOW)
    assert (m["accepted"], m["duplicates"]) == (5, 5)  # 25..29 were in the lake already
    assert all(f.exists() for f in compacted)
    ids = events_dataset(ws.lake_events).to_table(columns=["event_id"])["event_id"]
    assert sorted(ids.to_pylist()) == [f"ev-{i:06d}" for i in range(35)]


def test_migrate_a_parquet_lake_checks_counts_and_is_idempotent(ws, tmp_path, capsys):
    expected_features = features(ws)
    # the older layout: the same files, no Delta log; a flat quarantine; users.parquet
    old = Workspace(tmp_path / "old")
    for f in event_files(ws.lake_events):
        write_table(old.lake_events / f.parent.name / f.name, pq.read_table(f))
    write_table(old.lake / "users.parquet", USERS)
    write_table(old.lake_artists, artists_table([f"a{i}" for i in range(1, 7)]))
    rejected = [
        {
            "source": f"events/o{k}.jsonl",
            "line_no": i,
            "reason": "not_json",
            "detail": "x",
            "line": "{",
        }
        for k in range(2)
        for i in range(1, 4 + k)
    ]
    for k in range(2):
        part = pa.Table.from_pylist([r for r in rejected if r["source"].endswith(f"{k}.jsonl")])
        write_table(old.quarantine / f"part-{k}.parquet", part.cast(QUARANTINE))
    with pytest.raises(FileNotFoundError, match="tastemaker lake migrate"):
        build_features(old, FeatureConfig(), online="")
    with pytest.raises(FileNotFoundError, match="tastemaker lake migrate"):
        ingest_store(old, ObjectStore(old.raw), lookups(), key=KEY, now=NOW)
    with pytest.raises(FileNotFoundError, match="tastemaker lake migrate"):
        read_users(old.lake_users)

    assert cli(old, "migrate") == 0
    first = json.loads(capsys.readouterr().out)
    events = first["events"]
    assert events["rows_per_partition"] == partition_counts(ws.lake_events)
    assert events["rows"] == len(ROWS) and events["partitions_added"]
    assert first["quarantine"] == {"version": 2, "files_added": 2, "rows_added": 7, "rows": 7}
    assert first["users"]["rows"] == first["users"]["rows_added"] == USERS.num_rows
    assert features(old) == expected_features
    got = read_table(old.quarantine, QUARANTINE_TABLE).sort_by(
        [("source", "ascending"), ("line_no", "ascending")]
    )
    assert got.to_pylist() == rejected
    assert not list(old.quarantine.glob("*.parquet")) and not (old.lake / "users.parquet").exists()
    assert read_users(old.lake_users).sort_by("user_key") == USERS.sort_by("user_key")

    assert cli(old, "migrate") == 0  # again: nothing to add
    again = json.loads(capsys.readouterr().out)
    assert again["events"]["partitions_added"] == []
    assert again["events"]["version"] == events["version"]
    assert again["events"]["rows_per_partition"] == events["rows_per_partition"]
    assert again["quarantine"] == {"version": 2, "files_added": 0, "rows_added": 0, "rows": 7}
    assert again["users"] == {
        "version": first["users"]["version"],
        "rows_added": 0,
        "rows": USERS.num_rows,
    }


def test_features_as_of_a_version_rebuild_what_that_version_gave(ws, tmp_path, capsys):
    from training.train import lineage

    # a lake holding only the first commit gives the reference features of version 1
    first = Workspace(tmp_path / "first")
    append_events(first.lake_events, events_table(ROWS).slice(0, 13), "part-a", {})
    publish_users(first.lake_users, USERS, "test")
    write_table(first.lake_artists, artists_table([f"a{i}" for i in range(1, 7)]))
    expected = features(first)
    latest = features(ws)
    assert json.loads(ws.feature_dir.meta.read_text())["lake_version"] == 3
    assert lineage(ws.features)["lake_version"] == 3

    args = ["--workspace", str(ws.root), "features", "--online", "", "--as-of-version", "1"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["lake_version"] == 1
    again = {n: pq.read_table(ws.features / f"{n}.parquet") for n in TABLES}
    assert again == expected and again != latest
    assert lineage(ws.features)["lake_version"] == 1


def test_a_date_range_reads_only_its_partitions(ws):
    days = ("2024-03-03", "2024-03-10")
    files = event_files(ws.lake_events, days=days)
    assert files and all(days[0] <= f.parent.name[3:] <= days[1] for f in files)
    table = events_dataset(ws.lake_events, days=days).to_table()
    in_range = [r for r in ROWS if days[0] <= r["event_ts"].strftime("%Y-%m-%d") <= days[1]]
    assert table.num_rows == len(in_range)


def test_lake_commands_cover_the_quarantine_and_the_user_view(tmp_path, capsys):
    ws = Workspace(tmp_path)
    write_object(ws.root, "dt=2025-03-01/a.jsonl.gz", [line(good_event(i)) for i in range(5)])
    write_object(ws.root, "dt=2025-03-02/b.jsonl.gz", ["not json", line(good_event(9))])
    ingest_store(ws, ObjectStore(ws.raw), lookups(), key=KEY, now=NOW)
    publish_users(ws.lake_users, USERS, "test")
    publish_users(ws.lake_users, USERS, "test")  # unchanged: no second commit

    assert cli(ws, "history", "--table", "quarantine") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [s.split()[-1] for s in lines] == ["events/dt=2025-03-02/b.jsonl.gz", "-"]
    assert cli(ws, "history", "--table", "users") == 0
    assert [s.split()[-1] for s in capsys.readouterr().out.splitlines()][-2:] == ["test", "-"]
    assert cli(ws, "history", "--table", "all") == 0
    out = capsys.readouterr().out
    assert all(f"# {name}" in out for name in ("events", "quarantine", "users"))

    assert cli(ws, "optimize") == 0
    assert sorted(json.loads(capsys.readouterr().out)) == ["events", "quarantine", "users"]
    # the user view's folder holds only its live files, after a publish and an optimize
    publish_users(ws.lake_users, USERS.slice(1), "test")
    on_disk = set(ws.lake_users.rglob("*.parquet"))
    assert on_disk == set(table_files(ws.lake_users, spec=USERS_TABLE))
    assert read_users(ws.lake_users).num_rows == USERS.num_rows - 1
    assert cli(ws, "vacuum", "--table", "quarantine") == 0
    assert (
        capsys.readouterr().out == "quarantine: would delete (dry run; --apply deletes) 0 file(s)\n"
    )
