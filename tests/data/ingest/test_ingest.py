"""Ingest rules, one at a time, on tiny hand-made raw objects with known answers."""

from __future__ import annotations

import json
from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.workspace import Workspace
from data.ingest.job import Counts, IngestInvariantError, ingest_store
from data.ingest.objectstore import ObjectStore
from data.ingest.parse import parse_object
from data.lake import QUARANTINE_TABLE, events_dataset, is_table, read_table
from data.pii import pseudonymise
from tests.data.ingest.ingest_helpers import (
    BASE,
    BREAKERS,
    KEY,
    NOW,
    good_event,
    line,
    lookups,
    write_object,
)


def run(ws: Workspace) -> dict:
    return ingest_store(ws, ObjectStore(ws.raw), lookups(), key=KEY, now=NOW)


def lake(ws: Workspace) -> pa.Table:
    return events_dataset(ws.lake_events).to_table().drop_columns(["dt"]).sort_by("event_id")


def quarantine(ws: Workspace) -> list[dict]:
    return (
        read_table(ws.quarantine, QUARANTINE_TABLE).to_pylist() if is_table(ws.quarantine) else []
    )


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path)


@pytest.mark.parametrize("kind", sorted(BREAKERS))
def test_each_broken_line_gets_its_reason(ws, kind):
    make, reason = BREAKERS[kind]
    good = [line(good_event(i)) for i in range(3)]
    broken = make(good_event(99, event_id="bad-99"))
    write_object(ws.root, "dt=2025-03-01/a.jsonl.gz", [good[0], broken, *good[1:]])
    manifest = run(ws)
    assert manifest["quarantined_by_reason"] == {reason: 1}
    (row,) = quarantine(ws)
    assert (row["reason"], row["line_no"]) == (reason, 2)
    if reason in ("deleted_user", "unknown_user"):  # an account's line: reason and count only
        assert row["line"] == "" and "user-" not in row["detail"]
    else:
        assert row["line"] == broken.decode("utf-8", errors="backslashreplace")
    assert manifest["accepted"] == 3 and manifest["read"] == 4


def test_client_ts_offsets_become_utc_and_late_events_use_event_date(ws):
    late = BASE - timedelta(days=3)  # buffered offline for three days, sent today
    events = [
        good_event(0, client_ts="2025-03-01T14:00:00.000+02:00"),
        good_event(1, client_ts="2025-03-01T06:30:00.000-05:30"),
        good_event(2, client_ts="2025-03-01T12:00:00Z"),
        good_event(3, client_ts=late.isoformat(), server_ts=int(BASE.timestamp() * 1000)),
    ]
    write_object(ws.root, "dt=2025-03-01/a.jsonl.gz", [line(e) for e in events])
    run(ws)
    table = lake(ws)
    ts = [t.isoformat() for t in table["event_ts"].to_pylist()]
    assert ts[:3] == ["2025-03-01T12:00:00+00:00"] * 3
    assert ts[3] == late.isoformat()
    parts = sorted(p.parent.name for p in ws.lake_events.rglob("*.parquet"))
    assert parts == ["dt=2025-02-26", "dt=2025-03-01"]


def test_client_clock_ahead_of_server_uses_server_ts(ws):
    server_ms = int(BASE.timestamp() * 1000)
    ahead = good_event(0, client_ts=(BASE + timedelta(hours=2)).isoformat(), server_ts=server_ms)
    slight = good_event(1, client_ts=(BASE + timedelta(minutes=4)).isoformat(), server_ts=server_ms)
    write_object(ws.root, "dt=2025-03-01/a.jsonl.gz", [line(ahead), line(slight)])
    run(ws)
    ts = lake(ws)["event_ts"].to_pylist()
    assert ts[0] == BASE  # 2 h ahead: impossible, the server's clock wins
    assert ts[1] == BASE + timedelta(minutes=4)  # within the 5-minute tolerance: kept


def test_user_ids_are_pseudonymised_and_never_reach_the_lake(ws):
    write_object(ws.root, "dt=2025-03-01/a.jsonl.gz", [line(good_event(i)) for i in range(5)])
    run(ws)
    table = lake(ws)
    assert table.schema.field("user_key").type == pa.string()
    assert "user_id" not in table.column_names
    assert table["user_key"].to_pylist()[0] == pseudonymise("user-0", KEY)
    for path in ws.lake_events.rglob("*.parquet"):
        assert b"user-" not in path.read_bytes()


def test_dedupe_within_an_object_and_across_runs(ws):
    first = [line(good_event(i)) for i in range(4)] + [line(good_event(1, ms_played=1))]
    write_object(ws.root, "dt=2025-03-01/a.jsonl.gz", first)
    m1 = run(ws)
    assert (m1["read"], m1["accepted"], m1["duplicates"]) == (5, 4, 1)
    # the first copy wins inside an object
    assert (
        lake(ws).filter(pa.compute.equal(lake(ws)["event_id"], "ev-000001"))["ms_played"][0].as_py()
        != 1
    )
    write_object(ws.root, "dt=2025-03-02/b.jsonl.gz", [line(good_event(i)) for i in range(2, 6)])
    m2 = run(ws)
    assert m2["objects"] == ["events/dt=2025-03-02/b.jsonl.gz"]
    assert (m2["read"], m2["accepted"], m2["duplicates"]) == (4, 2, 2)
    assert lake(ws)["event_id"].to_pylist() == [f"ev-{i:06d}" for i in range(6)]
    m3 = run(ws)  # nothing new: nothing read, nothing written
    assert (m3["read"], m3["objects_skipped_already_ingested"]) == (0, 2)


def test_invalid_copy_does_not_shadow_a_valid_event(ws):
    bad = line(good_event(0, user_id="user-nobody"))
    write_object(ws.root, "dt=2025-03-01/a.jsonl.gz", [bad, line(good_event(0))])
    m = run(ws)
    assert (m["accepted"], m["duplicates"], m["quarantined"]) == (1, 0, 1)


def test_lake_conforms_to_schema_and_manifest_is_consistent(ws):
    write_object(ws.root, "dt=2025-03-01/a.jsonl.gz", [line(good_event(i)) for i in range(3)])
    m = run(ws)
    from data.schemas import LAKE_EVENTS

    file = next(ws.lake_events.rglob("*.parquet"))
    assert pq.read_schema(file).remove_metadata() == LAKE_EVENTS
    assert m["read"] == m["accepted"] + m["duplicates"] + m["quarantined"]
    entry = json.loads(next((ws.lake / "_ledger").glob("*.json")).read_text())
    assert entry["source"] == "events/dt=2025-03-01/a.jsonl.gz" and entry["accepted"] == 3


def test_corrupt_archive_is_one_quarantined_record(ws):
    path = write_object(ws.root, "dt=2025-03-01/a.jsonl.gz", [line(good_event(0))])
    path.write_bytes(path.read_bytes()[:15])
    m = run(ws)
    assert (m["read"], m["quarantined_by_reason"]) == (1, {"corrupt_object": 1})


def test_broken_count_invariant_fails_the_run():
    counts = Counts(read=5, accepted=3, duplicates=1)
    counts.quarantined["not_json"] = 2
    with pytest.raises(IngestInvariantError, match="read=5"):
        counts.check("object x")


def test_fast_and_line_by_line_parsing_agree():
    events = [line(good_event(i)) for i in range(50)]
    clean = parse_object(("\n".join(events) + "\n").encode())
    dirty = parse_object(("\n".join(events[:25] + ["{oops"] + events[25:]) + "\n").encode())
    assert clean.table.equals(dirty.table)
    assert dirty.line_no.tolist() == list(range(1, 26)) + list(range(27, 52))
    assert dirty.rejected.reason == ["not_json"] and dirty.n_lines == 51


@pytest.mark.slow
def test_ingest_cli_on_the_tiny_world(tmp_path, monkeypatch, capsys):
    from tastemaker.cli import main
    from world.config import WorldConfig
    from world.generate import generate_world

    monkeypatch.setenv("TASTEMAKER_DEMO", "1")
    ws = Workspace(tmp_path)
    world = generate_world(ws, WorldConfig.tiny())
    assert main(["--workspace", str(tmp_path), "ingest"]) == 0
    (manifest_file,) = (ws.lake / "_manifests").glob("*.json")
    m = json.loads(manifest_file.read_text())
    assert m["read"] == world["lines"]
    assert m["read"] == m["accepted"] + m["duplicates"] + m["quarantined"]
    reasons = m["quarantined_by_reason"]
    assert reasons.get("not_json", 0) + reasons.get("not_object", 0) == world["malformed"]
    deleted = [  # the raw line of a deleted account is never kept: its event id, no user id
        q["detail"] for q in quarantine(ws) if q["reason"] == "deleted_user" and not q["line"]
    ]
    assert m["accepted"] + len(set(deleted)) == world["events"]  # every real event once
    assert ws.lake_users.exists() and ws.lake_artists.exists()
    from data.accounts import default_accounts_url, open_accounts

    with open_accounts(default_accounts_url(ws)) as accounts:
        raw_ids = accounts.user_ids()
    blob = b"".join(p.read_bytes() for p in ws.lake_events.rglob("*.parquet"))
    assert raw_ids and not any(u.encode() in blob for u in raw_ids)  # only pseudonyms
    assert m["run_id"] in capsys.readouterr().out
    assert main(["--workspace", str(tmp_path), "ingest"]) == 0  # second run: nothing new
    assert json.loads(capsys.readouterr().out)["read"] == 0
