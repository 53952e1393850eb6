"""Erasure on the lake's Delta tables alone (no pipeline): a raw id with SQL quotes and LIKE
wildcards blanks exactly its quarantined lines, the user view loses exactly its row, and no
file of either table (Parquet or log) still names the listener."""

from __future__ import annotations

import pyarrow as pa
import pytest

from core.settings import Settings
from core.workspace import Workspace
from data.ingest.job import ingest_store
from data.ingest.objectstore import ObjectStore
from data.ingest.validate import Lookups
from data.lake import QUARANTINE_TABLE, publish_users, read_table, read_users
from data.pii import pseudonymise
from data.schemas import USERS
from jobs.erase import Target, _lake, _quarantine, find_traces
from tests.data.ingest.ingest_helpers import (
    ARTISTS,
    KEY,
    NOW,
    good_event,
    line,
    write_object,
)
from tests.data.ingest.ingest_helpers import (
    USERS as KNOWN,
)

ODD = "o'brien%_1"  # a quote for the SQL literal, wildcards a LIKE would misread


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace(tmp_path)
    rows = [line(good_event(i)) for i in range(4)]
    rows += [line(good_event(10, user_id=ODD, client_ts="not a time"))]  # quarantined, theirs
    rows += [line(good_event(11, user_id="o'brien", client_ts="nope"))]  # a prefix: not theirs
    rows += [line(good_event(12, client_ts="bad"))]  # someone else's
    write_object(ws.root, "dt=2025-03-01/a.jsonl.gz", rows)
    write_object(
        ws.root, "dt=2025-03-02/b.jsonl.gz", [line(good_event(13, user_id=ODD, client_ts="x"))]
    )
    lookups = Lookups(
        users=pa.array([*KNOWN, ODD, "o'brien"]),
        deleted_users=pa.array([], pa.string()),
        artists=pa.array(ARTISTS),
    )
    ingest_store(ws, ObjectStore(ws.raw), lookups, key=KEY, now=NOW)
    keys = [pseudonymise(u, KEY) for u in ("user-1", ODD, "o'brien")]
    users = pa.Table.from_pylist(
        [
            {
                "user_key": k,
                "age_group": "25-34",
                "gender": "f",
                "country": "DE",
                "region": None,
                "city": None,
                "signup_ts": NOW,
            }
            for k in keys
        ],
        schema=USERS,
    )
    publish_users(ws.lake_users, users, "test")
    return ws


def test_erasure_blanks_their_quarantined_lines_and_drops_their_view_row(ws):
    key = pseudonymise(ODD, KEY)
    assert find_traces(ws.quarantine, [ODD]) and find_traces(ws.lake_users, [key])
    target = Target(ODD, key, Settings(workspace=ws.root), ws)

    out = _quarantine(target)
    assert out["lines_blanked"] == 2
    rows = read_table(ws.quarantine, QUARANTINE_TABLE).sort_by("line_no").to_pylist()
    assert len(rows) == 4  # rows stay: reason and counts
    theirs = [r for r in rows if r["detail"] == "erased"]
    assert len(theirs) == 2 and all(r["line"] == "" for r in theirs)
    others = [r["line"] for r in rows if r["detail"] != "erased"]
    assert any('"o\'brien"' in text for text in others) and len(others) == 2

    out = _lake(target)
    assert out["user_view_rows"] == 1
    assert sorted(read_users(ws.lake_users)["user_key"].to_pylist()) == sorted(
        pseudonymise(u, KEY) for u in ("user-1", "o'brien")
    )
    assert find_traces(ws.quarantine, [ODD, key]) == []
    assert find_traces(ws.lake_users, [key]) == []
    # again: nothing left to remove, no new commit
    assert _quarantine(target)["lines_blanked"] == 0
    assert _lake(target)["user_view_rows"] == 0
