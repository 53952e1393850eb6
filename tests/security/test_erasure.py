"""The scan after an erasure: forget one listener of the tiny pipeline's world (a copy of it,
with precomputed slates, served slates in the raw store and a quarantined line of theirs),
then search every file and store of the workspace for the raw id, the pseudonym and the
email: zero hits; their next request is a cold start. Erasure is idempotent and resumes after
a kill between any two steps."""

from __future__ import annotations

import gzip
import shutil
import sqlite3

import orjson
import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from core.workspace import Workspace
from data.pii import pseudonym_key, pseudonymise
from jobs.erase import STEPS, Requests, drain, find_traces, request

pytestmark = pytest.mark.slow


class Killed(Exception):
    pass


@pytest.fixture
def world(pipeline, tmp_path, demo_mode):
    src, _ = pipeline
    root = tmp_path / "ws"
    shutil.copytree(src.root, root)
    ws = Workspace(root)
    settings = Settings(workspace=root, reload_interval_s=0)
    from serving.precompute import precompute_slates

    precompute_slates(settings, ws.feature_dir.user_features)
    return ws, settings


def _listener(ws: Workspace, offset: int = 0) -> tuple[str, str]:
    import pyarrow.parquet as pq

    keys = set(
        pq.read_table(ws.feature_dir.user_features, columns=["user_key"])["user_key"].to_pylist()
    )
    db = sqlite3.connect(ws.accounts_db)  # the test reads the PII zone on purpose
    rows = db.execute(
        "SELECT user_id, email FROM accounts WHERE deleted_at IS NULL ORDER BY user_id"
    ).fetchall()
    db.close()
    key = pseudonym_key(Settings())
    found = [(u, e) for u, e in rows if pseudonymise(u, key) in keys]
    return found[offset]


def _ingest(ws: Workspace) -> None:
    from tastemaker.cli import main

    assert main(["--workspace", str(ws.root), "ingest"]) == 0


def test_erased_listener_leaves_no_trace_and_gets_a_cold_start(world) -> None:
    ws, settings = world
    user_id, email = _listener(ws)
    user_key = pseudonymise(user_id, pseudonym_key(settings))
    with TestClient(create_app_for(settings)) as c:
        before = c.get(f"/v1/users/{user_id}/recommendations?k=5").json()
        assert before["source"] in ("precomputed", "model")
        c.app.state.events.flush()  # the served slate: impressions in the raw store
    # a line of theirs that ingest quarantines (a bad timestamp keeps the raw line)
    bad = {"event_id": "q-1", "event_type": "click", "user_id": user_id, "artist_id": "x"}
    bad |= {"client_ts": "not a time", "server_ts": 1_711_000_000_000}
    (ws.raw_events / "dt=2024-03-27").mkdir(parents=True, exist_ok=True)
    (ws.raw_events / "dt=2024-03-27" / "extra.jsonl.gz").write_bytes(
        gzip.compress(orjson.dumps(bad) + b"\n")
    )
    _ingest(ws)
    needles = [user_id, user_key, email]
    stores = {h.split("/")[0] for h in find_traces(ws.root, needles)}
    assert {"raw", "lake", "features", "online", "pii"} <= stores, stores

    from tastemaker.cli import main

    assert main(["--workspace", str(ws.root), "erase", "--user", user_id, "--verify"]) == 0
    assert find_traces(ws.root, needles) == []
    with TestClient(create_app_for(settings)) as c:
        after = c.get(f"/v1/users/{user_id}/recommendations?k=5").json()
    assert after["source"] == "trending", "the next request is a cold start"

    audit = [orjson.loads(x) for x in (ws.erasure / "audit.jsonl").read_bytes().splitlines()]
    assert [a["store"] for a in audit] == [*STEPS, "done"]
    assert audit[0]["removed"] == {"rows": 1} and audit[3]["removed"]["events"] > 0
    assert all(user_key not in orjson.dumps(a).decode() for a in audit)

    # idempotent: a second erasure of the same id finds nothing left and says so
    assert main(["--workspace", str(ws.root), "erase", "--user", user_id]) == 0
    again = [orjson.loads(x) for x in (ws.erasure / "audit.jsonl").read_bytes().splitlines()]
    assert len(again) == 2 * len(audit)
    assert again[len(audit)]["removed"] == {"rows": 0}
    assert find_traces(ws.root, needles) == []
    # ingest still works on the rewritten lake, and keeps no raw line of an unknown account
    _ingest(ws)
    assert find_traces(ws.root, needles) == []


def test_erasure_resumes_after_a_kill_between_steps(world) -> None:
    ws, settings = world
    user_id, email = _listener(ws, offset=1)
    user_key = pseudonymise(user_id, pseudonym_key(settings))
    request(ws, settings, user_id)
    request(ws, settings, user_id)  # filed twice: one open request

    def kill_after(step: str) -> None:
        if step == "lake":
            raise Killed

    with pytest.raises(Killed):
        drain(ws, settings, after_step=kill_after)
    requests = Requests(ws)
    (open_one,) = requests.open()
    requests.close()
    assert open_one[4] == set(STEPS[: STEPS.index("lake") + 1])
    assert drain(ws, settings)
    assert find_traces(ws.root, [user_id, user_key, email]) == []
    audit = [orjson.loads(x) for x in (ws.erasure / "audit.jsonl").read_bytes().splitlines()]
    assert [a["store"] for a in audit] == [*STEPS, "done"], "each step once, in order"


def create_app_for(settings: Settings):
    from serving.app import create_app

    return create_app(settings)
