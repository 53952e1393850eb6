"""Ingest's ledger: which raw objects are in the lake, and which lake files they produced.

One small JSON file per processed object (``lake/_ledger/<object_id>.json``), written
atomically AFTER the object's lake and quarantine files: it is the commit point. A lake or
quarantine file that no ledger entry names was left by an interrupted run; it is removed
before the next run starts, and that object is processed again under the same file names.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pyarrow.parquet as pq

from core import atomic
from core.workspace import Workspace

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
            found.extend(p for p in folder.rglob("*") if p.is_file())
    return sorted(found)


def remove_orphans(ws: Workspace, ledger: dict[str, dict]) -> int:
    """Delete lake files no committed object names (an interrupted run's partial output)."""
    committed = {ws.root / out for entry in ledger.values() for out in entry["outputs"]}
    removed = 0
    for path in lake_outputs(ws):
        if path not in committed:
            path.unlink()
            removed += 1
    if removed:
        log.warning("removed %d lake file(s) left by an interrupted ingest run", removed)
    return removed


def seen_event_ids(ws: Workspace, ledger: dict[str, dict]) -> set[str]:
    """Event ids already accepted into the lake by committed objects (cross-run dedupe)."""
    seen: set[str] = set()
    for entry in ledger.values():
        for out in entry["outputs"]:
            if (ws.root / out).is_relative_to(ws.lake_events):
                ids = pq.read_table(ws.root / out, columns=["event_id"])["event_id"]
                seen.update(ids.to_pylist())
    return seen
