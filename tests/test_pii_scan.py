"""No raw PII anywhere the pipeline writes outside its PII zone.

Runs the tiny pipeline once (shared with the end-to-end test) and scans every file under the
lake, features, online store, runs, bundles and the captured logs for the test world's raw
account ids, emails, birth dates and coordinates. The PII zone (``pii/``: the account table
and the quarantine of raw lines) and the raw object store are the only places they may live.
"""

from __future__ import annotations

import gzip
import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

SCANNED = ("lake", "features", "online", "runs", "bundles", "logs")
TOKEN = re.compile(r"[A-Za-z0-9_.@+\-:]+")


def _pii_of(ws) -> dict[str, set]:
    conn = sqlite3.connect(ws.accounts_db)  # the test reads the PII zone on purpose
    rows = conn.execute(
        "SELECT user_id, email, birth_date, latitude, longitude FROM accounts"
    ).fetchall()
    conn.close()
    return {
        "raw id": {str(r[0]) for r in rows},
        "email": {r[1] for r in rows if r[1]},
        "birth date": {str(r[2])[:10] for r in rows if r[2]},
        "coordinate": {round(float(v), 4) for r in rows for v in (r[3], r[4]) if v is not None},
    }


def _texts_of(path: Path) -> tuple[list[str], list[np.ndarray]]:
    """Text content and float arrays of one file, decoded by type."""
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if suffix == ".parquet":
        table = pq.read_table(path)
        texts, floats = [], []
        for col in table.columns:
            if pa.types.is_floating(col.type):
                floats.append(col.to_numpy(zero_copy_only=False))
            else:
                texts.append(json.dumps(col.to_pylist(), default=str))
        return texts, floats
    if suffix == ".sqlite":
        conn = sqlite3.connect(path)
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        texts = [
            json.dumps(conn.execute(f"SELECT * FROM {t}").fetchall(), default=str) for t in tables
        ]
        conn.close()
        return texts, []
    data = path.read_bytes()
    if suffix.endswith(".gz"):
        data = gzip.decompress(data)
    return [data.decode("utf-8", errors="replace")], []


def test_no_raw_pii_outside_the_pii_zone(pipeline):
    ws, _ = pipeline
    pii = _pii_of(ws)
    coords = np.array(sorted(pii.pop("coordinate")))
    files = [p for d in SCANNED for p in (ws.root / d).rglob("*") if p.is_file()]
    assert len(files) > 20, "the pipeline should have written files to scan"
    assert any(p.suffix == ".log" for p in files)
    leaks = []
    for path in files:
        texts, floats = _texts_of(path)
        for text in texts:
            tokens = set(TOKEN.findall(text))
            tokens |= {t[:10] for t in tokens}  # birth dates inside ISO timestamps
            for kind, values in pii.items():
                hit = tokens & values
                if hit:
                    leaks.append(f"{path.relative_to(ws.root)}: {kind} {sorted(hit)[:3]}")
        for arr in floats:
            arr = np.round(arr[np.isfinite(arr)].astype(np.float64), 4)
            hit = np.intersect1d(arr, coords)
            # a few collisions with unrelated floats are possible only at 4 decimals; a leaked
            # coordinate column would match almost every row
            if len(hit) > 3:
                leaks.append(f"{path.relative_to(ws.root)}: {len(hit)} coordinates")
    assert not leaks, "raw PII found:\n" + "\n".join(leaks)


def test_pii_zone_does_hold_the_raw_values(pipeline):
    """The scan can fail: the same values are found where they are allowed to live."""
    ws, _ = pipeline
    pii = _pii_of(ws)
    texts, _ = _texts_of(ws.accounts_db)
    assert set(TOKEN.findall(" ".join(texts))) & pii["raw id"]
    raw_file = next(ws.raw_events.rglob("*.jsonl.gz"))
    raw_text = _texts_of(raw_file)[0][0]
    assert set(TOKEN.findall(raw_text)) & pii["raw id"]
