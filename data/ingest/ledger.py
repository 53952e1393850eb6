"""Ingest's ledger: which raw objects are in the lake, and which lake files they produced.

One small JSON file per processed object (``lake/_ledger/<object_id>.json``), written
atomically AFTER the object's lake and quarantine files and its Delta commits (the events
commit makes the events visible; the ledger entry is what the next run skips by). A lake or
quarantine file that neither a ledger entry nor its Delta table's latest version names was
left by an interrupted run; it is removed before the next run starts, and that object is
processed again under the same file names.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core import atomic
from core.workspace import Workspace
from data.ingest.ops import id_hashes
from data.lake import live_files

log = logging.getLogger("tastemaker.data")


def ledger_dir(ws: Workspace) -> Path:
    return ws.ingest_ledger


def object_id(source: str) -> str:
    """Deterministic id of a raw object path: names its ledger entry and its output files."""
    return hashlib.sha1(source.encode()).hexdigest()[:20]


def load_ledger(ws: Workspace) -> dict[str, dict]:
    """source path -> ledger entry, for every committed object."""
    entries: dict[str, dict] = {}
    folder = ledger_dir(ws)
    if not folder.exists():
        return entries
    for path in sorted(folder.glob("*.json")):
        entry = json.loads(path.read_text())
        entries[entry["source"]] = entry
    return entries


def commit(ws: Workspace, entry: dict) -> None:
    atomic.write_json(ledger_dir(ws) / f"{object_id(entry['source'])}.json", entry)


def lake_outputs(ws: Workspace) -> list[Path]:
    """Every event and quarantine file in the lake, including leftovers of crashed writes."""
    found: list[Path] = []
    for folder in (ws.lake_events, ws.quarantine):
        if folder.exists():
            found.extend(
                p
                for p in folder.rglob("*")
                if p.is_file() and "_delta_log" not in p.relative_to(folder).parts
            )
    return sorted(found)


def remove_orphans(ws: Workspace, ledger: dict[str, dict]) -> int:
    """Delete lake files no committed object names (an interrupted run's partial output)."""
    committed = {ws.root / out for entry in ledger.values() for out in entry["outputs"]}
    # e.g. the compacted files of an optimize, the files an erasure rewrote
    committed |= live_files(ws.lake_events) | live_files(ws.quarantine)
    removed = 0
    for path in lake_outputs(ws):
        if path not in committed:
            path.unlink()
            removed += 1
    if removed:
        log.warning("removed %d lake file(s) left by an interrupted ingest run", removed)
    return removed


INDEX_SCHEMA = pa.schema([("hash", pa.uint64()), ("event_id", pa.string())])
FILTER_BITS = 27  # the in-memory prefilter: 2**27 bits = 16 MiB, whatever the lake's size


class IdIndex:
    """Cross-run dedupe in bounded memory: which event ids committed objects put in the lake.

    Each committed object has an id index file (``_ledger/ids/<object_id>.arrow``, Arrow IPC,
    uncompressed): its accepted event ids with their 64-bit :func:`~data.ingest.ops.id_hashes`,
    sorted by hash. It is written before the object's ledger entry, so a committed object
    always has one (an entry written before index files existed gets one built from its lake
    files on first use). A lookup memory-maps one index at a time, binary-searches the new
    ids' hashes in it and confirms every hash match by comparing the strings: exact, and
    memory bounded by the largest single object, not by the lake. Held in memory: the
    index paths, and a fixed-size bitmap of the top bits of every committed hash (a one-hash
    Bloom filter), so new ids that cannot be in any index skip the searches altogether.
    """

    def __init__(self, ws: Workspace, ledger: dict[str, dict]) -> None:
        self.ws = ws
        self.paths: list[Path] = []
        self.bitmap = np.zeros(1 << (FILTER_BITS - 3), dtype=np.uint8)
        for entry in ledger.values():
            path = self.path(entry["source"])
            if not path.exists():
                self.write(entry["source"], _committed_ids(ws, entry))
            self.add(entry["source"])

    def path(self, source: str) -> Path:
        return ledger_dir(self.ws) / "ids" / f"{object_id(source)}.arrow"

    def write(self, source: str, ids: pa.Array, hashes: np.ndarray | None = None) -> None:
        """Write the index of an object's accepted (distinct) ids, before its ledger entry.

        ``hashes``: ``id_hashes(ids)`` when the caller has them already."""
        hashes = id_hashes(ids) if hashes is None else hashes
        order = np.argsort(hashes)
        table = pa.table(
            {"hash": pa.array(hashes[order]), "event_id": ids.take(pa.array(order))},
            schema=INDEX_SCHEMA,
        )
        with (
            atomic.atomic_path(self.path(source)) as tmp,
            pa.ipc.new_file(tmp, INDEX_SCHEMA) as out,
        ):
            out.write_table(table)

    def add(self, source: str) -> None:
        """Count a just-committed object's index in later lookups."""
        path = self.path(source)
        hashes = _one_chunk(_read(path)["hash"]).to_numpy()
        if len(hashes):
            # the bits of each byte OR-ed together first: one write per byte, no ufunc.at (an
            # index is sorted by hash, so its slots come sorted)
            slot = hashes >> np.uint64(64 - FILTER_BITS)
            if (slot[1:] < slot[:-1]).any():
                slot = np.sort(slot)
            byte = slot >> np.uint64(3)
            heads = np.flatnonzero(np.concatenate([[True], byte[1:] != byte[:-1]]))
            bits = np.bitwise_or.reduceat(_BIT[slot & np.uint64(7)], heads)
            self.bitmap[byte[heads]] |= bits
        self.paths.append(path)

    def _maybe(self, hashes: np.ndarray) -> np.ndarray:
        """(N,) bool: False where no committed id can have that hash (the bitmap's bit is 0)."""
        slot = hashes >> np.uint64(64 - FILTER_BITS)
        return (self.bitmap[slot >> np.uint64(3)] & _BIT[slot & np.uint64(7)]) != 0

    def known(self, ids: pa.Array, hashes: np.ndarray | None = None) -> np.ndarray:
        """(N,) bool: which of ``ids`` (distinct strings) a committed object already accepted.

        ``hashes``: ``id_hashes(ids)`` when the caller has them already."""
        found = np.zeros(len(ids), dtype=bool)
        if not len(ids) or not self.paths:
            return found
        hashes = id_hashes(ids) if hashes is None else hashes
        maybe = np.flatnonzero(self._maybe(hashes))
        if not len(maybe):
            return found
        order = maybe[np.argsort(hashes[maybe])]
        needles = hashes[order]  # sorted needles: the binary searches walk forward
        for path in self.paths:
            index = _read(path)
            if not index.num_rows:
                continue
            stored = _one_chunk(index["hash"]).to_numpy()
            left = np.searchsorted(stored, needles, side="left")
            inside = left < len(stored)
            hit = np.flatnonzero(inside & (stored[np.minimum(left, len(stored) - 1)] == needles))
            if not len(hit):
                continue
            # hash matches are few (real duplicates): each confirmed by its string, all at once
            stored_ids = _one_chunk(index["event_id"])
            rows = order[hit]
            same = pc.equal(ids.take(pa.array(rows)), stored_ids.take(pa.array(left[hit])))
            same = same.to_numpy(zero_copy_only=False)
            found[rows[same]] = True
            for k in hit[~same]:  # the first id of that hash was another: look at the next ones
                row = int(order[k])
                if found[row]:
                    continue
                want = ids[row].as_py()
                j = int(left[k]) + 1
                while j < len(stored) and stored[j] == needles[k]:
                    if stored_ids[j].as_py() == want:
                        found[row] = True
                        break
                    j += 1
        return found


def _one_chunk(column: pa.ChunkedArray) -> pa.Array:
    """The column as one array, without a copy when it has one chunk (a mapped index has)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


_BIT = (1 << np.arange(8)).astype(np.uint8)


def _read(path: Path) -> pa.Table:
    """An id index, memory-mapped (its pages are the page cache's, not this process's heap)."""
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def _committed_ids(ws: Workspace, entry: dict) -> pa.Array:
    """The event ids a committed object put in the lake, read from its lake files."""
    chunks = [
        chunk
        for out in entry["outputs"]
        if (ws.root / out).is_relative_to(ws.lake_events)
        for chunk in pq.read_table(ws.root / out, columns=["event_id"])["event_id"].chunks
    ]
    return pa.chunked_array(chunks, pa.string()).combine_chunks()
