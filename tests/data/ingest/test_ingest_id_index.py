"""Cross-run dedupe through the on-disk id index (data.ingest.ledger.IdIndex): exact, and in
memory bounded by one object, not by the lake."""

from __future__ import annotations

import tracemalloc
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

from core.workspace import Workspace
from data.ingest import ledger as ledger_mod
from data.ingest.job import ingest_store
from data.ingest.objectstore import ObjectStore
from data.ingest.ops import id_hashes
from tests.data.ingest.ingest_helpers import BASE, KEY, NOW, good_event, line, lookups, write_object


def run(ws: Workspace) -> dict:
    return ingest_store(ws, ObjectStore(ws.raw), lookups(), key=KEY, now=NOW)


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path)


def test_id_hashes_agree_between_the_fixed_width_and_general_paths():
    fixed = [f"ev-{i:06d}" for i in range(1000)]
    mixed = [*fixed, "x", "", "é-ü", "a" * 300]
    h_fixed = id_hashes(pa.array(fixed))
    h_mixed = id_hashes(pa.array(mixed))
    assert (h_fixed == h_mixed[:1000]).all()  # same strings, same hash, whatever the path
    assert len(np.unique(h_mixed)) == len(mixed)
    sliced = pa.array(mixed).slice(998, 4)  # an offset into the buffers
    assert (id_hashes(sliced) == h_mixed[998:1002]).all()
    assert (id_hashes(pa.array(fixed, pa.large_string())) == h_fixed).all()


def test_a_resent_id_from_an_earlier_run_is_rejected_in_any_partition(ws):
    write_object(ws.root, "dt=2025-03-01/a.jsonl.gz", [line(good_event(i)) for i in range(5)])
    assert run(ws)["accepted"] == 5
    later = BASE + timedelta(days=9)  # same ids, events on another day: another partition
    resent = [line(good_event(i, when=later)) for i in (1, 3)] + [line(good_event(7))]
    write_object(ws.root, "dt=2025-03-10/b.jsonl.gz", resent)
    m = run(ws)
    assert (m["read"], m["accepted"], m["duplicates"]) == (3, 1, 2)
    # an index lost (e.g. a lake written before index files existed) is rebuilt from the lake
    for path in (ws.ingest_ledger / "ids").glob("*.arrow"):
        path.unlink()
    write_object(ws.root, "dt=2025-03-11/c.jsonl.gz", [line(good_event(i)) for i in (0, 7, 8)])
    m = run(ws)
    assert (m["read"], m["accepted"], m["duplicates"]) == (3, 1, 2)


def _lookup_peak(ws: Workspace, n_objects: int) -> int:
    """Peak Python + numpy memory of one lookup against ``n_objects`` committed indexes."""
    index = ledger_mod.IdIndex(ws, {})
    for o in range(n_objects):
        source = f"events/dt=2025-03-{1 + o % 28:02d}/part-{o:05d}.jsonl.gz"
        index.write(source, pa.array([f"ev-{o:04d}-{i:06d}" for i in range(5000)]))
        index.add(source)
    new = pa.array([f"ev-{o:04d}-{i:06d}" for o in (0, n_objects - 1) for i in range(0, 5000, 5)])
    tracemalloc.start()
    pool = pa.default_memory_pool()
    base_pool = pool.bytes_allocated()
    found = index.known(new)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert found.all()  # ids of the first and of the last object: both found
    assert not index.known(pa.array(["ev-new-1", "ev-new-2"])).any()
    return peak + pool.bytes_allocated() - base_pool


def test_lookup_memory_does_not_grow_with_earlier_objects(tmp_path):
    few = _lookup_peak(Workspace(tmp_path / "few"), 4)
    many = _lookup_peak(Workspace(tmp_path / "many"), 60)
    assert many < 1.5 * few + (1 << 20)  # 15x the earlier ids, about the same memory


def test_ids_sharing_a_hash_are_told_apart_by_their_strings(ws):
    index = ledger_mod.IdIndex(ws, {})
    same = np.full(3, 12345, dtype=np.uint64)  # three stored ids, one hash: a forced collision
    index.write("events/a.jsonl.gz", pa.array(["ev-a", "ev-b", "ev-c"]), same)
    index.write("events/b.jsonl.gz", pa.array(["ev-d"]), np.array([777], dtype=np.uint64))
    index.add("events/a.jsonl.gz")
    index.add("events/b.jsonl.gz")
    asked = pa.array(["ev-c", "ev-x", "ev-a", "ev-d", "ev-e"])
    hashes = np.array([12345, 12345, 12345, 777, 777], dtype=np.uint64)
    assert index.known(asked, hashes).tolist() == [True, False, True, True, False]
