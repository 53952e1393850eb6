"""Fuzz: >= 10,000 broken events of every kind in BREAKERS, mixed with good ones and resends.

Every broken line must be quarantined with exactly its reason, every good event accepted
exactly once, every resend counted as a duplicate, and read = accepted + duplicates +
quarantined for the run.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from core.workspace import Workspace
from data.ingest.job import ingest_store
from data.ingest.objectstore import ObjectStore
from data.lake import QUARANTINE_TABLE, events_dataset, read_table
from tests.data.ingest.ingest_helpers import (
    BREAKERS,
    KEY,
    NOW,
    good_event,
    line,
    lookups,
    write_object,
)

N_BROKEN, N_GOOD, N_RESENT, N_OBJECTS = 10_200, 4_000, 300, 6


@pytest.mark.slow
def test_fuzz_every_broken_line_quarantined_with_its_reason(tmp_path):
    rng = random.Random(7)
    kinds = sorted(BREAKERS)
    records = []  # (raw line, expected reason or None for good, event id)
    for i in range(N_BROKEN):
        kind = kinds[i % len(kinds)]
        make, reason = BREAKERS[kind]
        records.append((make(good_event(i, event_id=f"bad-{i}")), reason, None))
    for i in range(N_GOOD):
        records.append((line(good_event(i)).encode(), None, f"ev-{i:06d}"))
    for i in rng.sample(range(N_GOOD), N_RESENT):  # at-least-once delivery resends
        records.append((line(good_event(i)).encode(), "duplicate", f"ev-{i:06d}"))
    rng.shuffle(records)
    # resends must come after their original for "first copy wins" to name the original
    first_seen: set[str] = set()
    for k, (raw, _reason, eid) in enumerate(records):
        if eid and eid not in first_seen:
            first_seen.add(eid)
            records[k] = (raw, None, eid)
        elif eid:
            records[k] = (raw, "duplicate", eid)

    expected: dict[tuple[str, int], str] = {}
    size = len(records) // N_OBJECTS + 1
    for o in range(N_OBJECTS):
        chunk = records[o * size : (o + 1) * size]
        name = f"dt=2025-03-0{o + 1}/part-{o:05d}.jsonl.gz"
        write_object(tmp_path, name, [raw for raw, _, _ in chunk])
        for n, (_, reason, _) in enumerate(chunk, start=1):
            if reason and reason != "duplicate":
                expected[(f"events/{name}", n)] = reason

    ws = Workspace(tmp_path)
    manifest = ingest_store(ws, ObjectStore(ws.raw), lookups(), key=KEY, now=NOW)

    kinds_seen = Counter(expected.values())
    assert len(kinds_seen) >= 12 and sum(kinds_seen.values()) >= 10_000
    quarantined = read_table(ws.quarantine, QUARANTINE_TABLE).to_pylist()
    got = {(q["source"], q["line_no"]): q["reason"] for q in quarantined}
    assert len(got) == len(quarantined)  # one row per line
    wrong = {k: (v, got.get(k)) for k, v in expected.items() if got.get(k) != v}
    assert not wrong, f"{len(wrong)} lines with the wrong reason, e.g. {list(wrong.items())[:5]}"
    assert got.keys() == expected.keys()
    assert manifest["quarantined_by_reason"] == dict(sorted(kinds_seen.items()))

    ids = events_dataset(ws.lake_events).to_table(columns=["event_id"])["event_id"].to_pylist()
    assert sorted(ids) == sorted(f"ev-{i:06d}" for i in range(N_GOOD))  # each exactly once
    assert manifest["duplicates"] == N_RESENT
    assert manifest["read"] == len(records)
    assert (
        manifest["read"] == manifest["accepted"] + manifest["duplicates"] + manifest["quarantined"]
    )
