"""The artist catalogue: raw ``raw/catalog/artists.jsonl.gz`` -> ``lake/artists.parquet``."""

from __future__ import annotations

import gzip
import logging
from datetime import datetime, timezone

import orjson
import pyarrow as pa

from core.atomic import write_table
from core.workspace import Workspace
from data.schemas import ARTISTS

log = logging.getLogger("tastemaker.data")
CATALOG_FILE = "artists.jsonl.gz"


def _ts(value: object, where: str) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):  # epoch ms
        return datetime.fromtimestamp(value / 1000, tz=timezone.utc)
    try:
        ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{where}: created_ts {value!r} is not ISO-8601 or epoch ms") from None
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def load_catalog(ws: Workspace) -> pa.Table:
    """The raw catalogue as an ``ARTISTS`` table (one row per artist id, last one wins)."""
    path = ws.raw_catalog / CATALOG_FILE
    if not path.exists():
        raise FileNotFoundError(f"no artist catalogue at {path}; run `tastemaker world` first")
    rows: dict[str, dict] = {}
    with gzip.open(path, "rb") as f:
        for no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{no}"
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{where}: not JSON ({exc})") from None
            if not isinstance(obj, dict) or not obj.get("artist_id"):
                raise ValueError(f"{where}: expected an object with an 'artist_id'")
            tags = obj.get("tags") or []
            if not isinstance(tags, list):
                raise ValueError(f"{where}: 'tags' must be a list, got {type(tags).__name__}")
            aid = str(obj["artist_id"])
            rows[aid] = {
                "artist_id": aid,
                "name": str(obj.get("name") or ""),
                "tags": [str(t) for t in tags],
                "created_ts": _ts(obj.get("created_ts"), where),
            }
    return pa.Table.from_pylist(list(rows.values()), schema=ARTISTS)


def publish_catalog(ws: Workspace) -> int:
    """Write ``ws.lake_artists`` atomically from the raw catalogue; returns the row count."""
    table = load_catalog(ws)
    write_table(ws.lake_artists, table)
    log.info("catalog: published %d artists to %s", table.num_rows, ws.lake_artists)
    return table.num_rows
