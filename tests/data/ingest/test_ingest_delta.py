"""The lake's events as a Delta table: one commit per raw object, idempotent re-ingest, and a
ledger entry lost after its commit recovered from the Delta log (never appended twice)."""

from __future__ import annotations

import json

import pytest

from core.workspace import Workspace
from data.ingest.job import ingest_store
from data.ingest.ledger import object_id
from data.ingest.objectstore import ObjectStore
from data.lake import (
    CHECKSUM_KEY,
    QUARANTINE_TABLE,
    SOURCE_KEY,
    committed_objects,
    events_dataset,
    open_events,
    open_table,
    partition_counts,
    read_table,
)
from tests.data.ingest.ingest_helpers import KEY, NOW, good_event, line, lookups, write_object


def run(ws: Workspace) -> dict:
    return ingest_store(ws, ObjectStore(ws.raw), lookups(), key=KEY, now=NOW)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace(tmp_path)
    write_object(ws.root, "dt=2025-03-01/a.jsonl.gz", [line(good_event(i)) for i in range(5)])
    write_object(ws.root, "dt=2025-03-02/b.jsonl.gz", [line(good_event(i)) for i in range(3, 9)])
    return ws


def test_one_commit_per_object_with_its_name_and_checksum(ws):
    m = run(ws)
    table = open_events(ws.lake_events)
    assert table.version() == 2  # version 0 creates the table
    history = [h for h in table.history() if SOURCE_KEY in h]
    assert [h[SOURCE_KEY] for h in reversed(history)] == m["objects"]
    assert all(len(h[CHECKSUM_KEY]) == 64 for h in history)
    assert events_dataset(ws.lake_events).count_rows() == m["accepted"] == 9
    assert table.metadata().partition_columns == ["dt"]


def test_reingesting_the_same_object_adds_nothing(ws):
    run(ws)
    version = open_events(ws.lake_events).version()
    counts = partition_counts(ws.lake_events)
    m = run(ws)
    assert m["objects"] == [] and m["objects_skipped_already_ingested"] == 2
    assert open_events(ws.lake_events).version() == version
    assert partition_counts(ws.lake_events) == counts


def test_commit_without_ledger_entry_is_recovered_from_the_log(ws):
    """A run killed after the Delta commit, before the ledger entry: the rerun writes the entry
    from the commit and appends nothing."""
    run(ws)
    version = open_events(ws.lake_events).version()
    rows = events_dataset(ws.lake_events).count_rows()
    entry_path = ws.ingest_ledger / f"{object_id('events/dt=2025-03-02/b.jsonl.gz')}.json"
    entry = json.loads(entry_path.read_text())
    entry_path.unlink()
    m = run(ws)
    assert m["objects"] == [] and m["objects_skipped_already_ingested"] == 2
    assert open_events(ws.lake_events).version() == version
    assert events_dataset(ws.lake_events).count_rows() == rows
    assert json.loads(entry_path.read_text()) == entry
    assert committed_objects(open_events(ws.lake_events))[entry["source"]]["version"] == version


def test_files_written_but_not_committed_are_redone(ws):
    """A run killed after writing an object's files, before its commit: the files are not in
    the table; the rerun rewrites and commits them once."""
    run(ws)
    first = events_dataset(ws.lake_events).to_table().sort_by("event_id")
    write_object(ws.root, "dt=2025-03-03/c.jsonl.gz", [line(good_event(i)) for i in range(20, 23)])
    stray = ws.lake_events / "dt=2025-03-01" / f"part-{object_id('x')}.parquet"
    stray.write_bytes(next(ws.lake_events.rglob("*.parquet")).read_bytes())
    assert events_dataset(ws.lake_events).count_rows() == first.num_rows  # not in the log
    m = run(ws)
    assert not stray.exists()  # an uncommitted leftover is removed
    assert m["accepted"] == 3
    assert events_dataset(ws.lake_events).count_rows() == first.num_rows + 3


def _with_bad_lines(ws: Workspace) -> None:
    rows = [line(good_event(i)) for i in range(30, 34)]
    rows += ["not json", line(good_event(40, client_ts="yesterday"))]
    write_object(ws.root, "dt=2025-03-03/c.jsonl.gz", rows)
    write_object(ws.root, "dt=2025-03-04/d.jsonl.gz", ["{", line(good_event(50))])


def test_quarantine_is_a_delta_table_one_commit_per_object(ws):
    _with_bad_lines(ws)
    m = run(ws)
    table = open_table(ws.quarantine, spec=QUARANTINE_TABLE)
    assert table.metadata().partition_columns == ["dt"]
    commits = committed_objects(table)
    sources = ["events/dt=2025-03-03/c.jsonl.gz", "events/dt=2025-03-04/d.jsonl.gz"]
    assert sorted(commits) == sources and table.version() == 2
    assert all(len(c["checksum"]) == 64 for c in commits.values())
    rows = read_table(ws.quarantine, QUARANTINE_TABLE, columns=["source", "reason", "dt"])
    assert rows.num_rows == m["quarantined"] == 3
    assert set(rows["dt"].to_pylist()) == {NOW.strftime("%Y-%m-%d")}  # the run's UTC day
    assert m["read"] == m["accepted"] + m["duplicates"] + m["quarantined"]
    for source in sources:  # the ledger names the committed file and its version
        entry = json.loads((ws.ingest_ledger / f"{object_id(source)}.json").read_text())
        assert entry["quarantine_version"] == commits[source]["version"]
        assert [o for o in entry["outputs"] if o.startswith("pii/")] == commits[source]["files"]

    again = run(ws)  # nothing new: no commit to either table
    assert (
        again["objects"] == [] and open_table(ws.quarantine, spec=QUARANTINE_TABLE).version() == 2
    )


def test_a_run_killed_between_the_quarantine_and_the_events_commit_resumes(ws):
    """The quarantine commit landed, the events commit did not (its log file removed, as a
    kill leaves it): the rerun commits the events once and does not quarantine again."""
    _with_bad_lines(ws)
    run(ws)
    events = open_events(ws.lake_events)
    rows = events_dataset(ws.lake_events).to_table().sort_by("event_id")
    quarantine = read_table(ws.quarantine, QUARANTINE_TABLE).sort_by("line_no")
    q_version = open_table(ws.quarantine, spec=QUARANTINE_TABLE).version()
    last = "events/dt=2025-03-04/d.jsonl.gz"
    (ws.lake_events / "_delta_log" / f"{events.version():020d}.json").unlink()
    (ws.ingest_ledger / f"{object_id(last)}.json").unlink()
    assert events_dataset(ws.lake_events).count_rows() == rows.num_rows - 1

    m = run(ws)
    assert m["objects"] == [last] and (m["accepted"], m["quarantined"]) == (1, 1)
    assert open_events(ws.lake_events).version() == events.version()
    assert events_dataset(ws.lake_events).to_table().sort_by("event_id") == rows
    assert open_table(ws.quarantine, spec=QUARANTINE_TABLE).version() == q_version
    assert read_table(ws.quarantine, QUARANTINE_TABLE).sort_by("line_no") == quarantine
