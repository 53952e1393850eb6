"""Kill ingest (SIGKILL) at several moments, run it again: the lake must be byte-identical to
the lake of one uninterrupted run (events, quarantine and ledger), and its Delta table must
hold the same files and rows, one commit per object. After every kill the table is readable
at its last committed version."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data.lake import committed_objects, event_files, events_dataset, open_events
from tests.data.ingest.ingest_helpers import BREAKERS, good_event, line, write_object

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
SCRIPT = f"""
import sys
sys.path[:0] = [{str(ROOT)!r}]
from pathlib import Path
from tests.data.ingest.ingest_helpers import KEY, NOW, lookups
from data.ingest.job import ingest_store
from data.ingest.objectstore import ObjectStore
from core.workspace import Workspace
ws = Workspace(Path(sys.argv[1]))
ingest_store(ws, ObjectStore(ws.raw), lookups(), key=KEY, now=NOW)
"""
N_OBJECTS, PER_OBJECT = 24, 200


def make_raw(root: Path) -> None:
    kinds = sorted(BREAKERS)
    for o in range(N_OBJECTS):
        lines = []
        for k in range(PER_OBJECT):
            i = o * PER_OBJECT + k
            if k % 17 == 0:
                make, _ = BREAKERS[kinds[i % len(kinds)]]
                lines.append(make(good_event(i, event_id=f"bad-{i}")))
            else:  # every 11th line resends an event of an earlier object
                j = i - PER_OBJECT * 3 if k % 11 == 0 and o >= 3 else i
                lines.append(line(good_event(j)).encode())
        write_object(root, f"dt=2025-03-{1 + o % 9:02d}/part-{o:05d}.jsonl.gz", lines)


def start(ws_root: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(ws_root)], cwd=ROOT)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file ingest wrote: the lake and the quarantine (which lives in the PII zone);
    the Delta log (timestamps, random ids) is compared by :func:`table_state` instead."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for folder in (root / "lake", root / "pii" / "quarantine")
        for p in sorted(folder.rglob("*"))
        if p.is_file()
        and not p.name.startswith(".tmp-")
        and "_manifests" not in p.parts
        and "_delta_log" not in p.parts
    }


def table_state(root: Path) -> tuple:
    """(version, live files, rows, {object: version}) of the events table."""
    events = root / "lake" / "events"
    table = open_events(events)
    files = tuple(str(f.relative_to(events)) for f in event_files(events))
    objects = {s: c["version"] for s, c in committed_objects(table).items()}
    return table.version(), files, events_dataset(events).count_rows(), objects


def readable(root: Path) -> None:
    """The table reads at its latest version, and holds exactly the committed objects' rows
    (a commit is all or nothing)."""
    events = root / "lake" / "events"
    if not (events / "_delta_log").is_dir():
        return
    commits = committed_objects(open_events(events))
    rows = sum(c["entry"]["accepted"] for c in commits.values())
    assert events_dataset(events).count_rows() == rows


def committed(ws_root: Path) -> int:
    return len(list((ws_root / "lake" / "_ledger").glob("*.json")))


def kill_after(ws_root: Path, n_committed: int, extra_s: float) -> None:
    """Start ingest, SIGKILL it ``extra_s`` after the ``n_committed``-th object is committed.

    Kills are placed by progress, not by wall time, so they land mid-ingest however loaded
    the machine is; ``extra_s`` moves the kill into the next object's read/validate/write.
    """
    proc = start(ws_root)
    deadline = time.monotonic() + 120
    while proc.poll() is None and committed(ws_root) < n_committed:
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError("ingest made no progress in 120 s")
        time.sleep(0.002)
    time.sleep(extra_s)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


@pytest.mark.slow
def test_sigkill_at_any_moment_then_rerun_gives_the_same_lake(tmp_path):
    reference = tmp_path / "reference"
    make_raw(reference)
    assert start(reference).wait(timeout=120) == 0
    expected = snapshot(reference)
    expected_table = table_state(reference)
    assert expected_table[0] == N_OBJECTS  # version 0 creates the table: one commit per object
    assert any(k.startswith("lake/events/") for k in expected)
    assert any(k.startswith("pii/quarantine/") for k in expected)

    partial = 0  # kills that landed mid-ingest: some objects committed, not all
    plans = (((0, 0.05),), ((3, 0.0),), ((8, 0.01), (14, 0.003)), ((N_OBJECTS - 2, 0.0),))
    for n, kills in enumerate(plans):
        ws_root = tmp_path / f"killed-{n}"
        shutil.copytree(reference / "raw", ws_root / "raw")
        for n_committed, extra_s in kills:  # several kills in a row, at different moments
            kill_after(ws_root, n_committed, extra_s)
            readable(ws_root)
            partial += 0 < committed(ws_root) < N_OBJECTS
        assert start(ws_root).wait(timeout=120) == 0
        assert snapshot(ws_root) == expected, f"lake differs after kills {kills}"
        assert table_state(ws_root) == expected_table, f"table differs after kills {kills}"
    assert partial >= 2, "no kill landed mid-ingest; the test proved nothing"
