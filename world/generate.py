"""A seeded synthetic world, written the way production data arrives.

``generate_world(ws, config)`` writes, all from one seed:

* raw events — ``raw/events/dt=YYYY-MM-DD/part-NNNNN.jsonl.gz`` (gzipped JSON lines, the raw
  event contract in ``ARCHITECTURE.md``; partitioned by server arrival date);
* the artist catalogue — ``raw/catalog/artists.jsonl.gz`` (``artist_id``, ``name``, ``tags``,
  ``created_ts``);
* the account table — ``pii/accounts.sqlite`` by default, or any ``accounts_url``
  (:mod:`data.accounts`), holding the PII: email, birth date, gender, coordinates;
* ``raw/world.json`` — the config and the summary counts (no PII), including the dirt.

The pieces: :mod:`world.people` (who), :mod:`world.taste` (what they like),
:mod:`world.events` (what they do), :mod:`world.emit` (how it arrives).
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import shutil
import time
from typing import Any

import numpy as np
import orjson

from core.atomic import write_bytes, write_json
from core.workspace import Workspace
from data.accounts import open_accounts
from data.catalog import CATALOG_FILE
from world.config import WorldConfig
from world.emit import deliver, write_partitions
from world.events import simulate
from world.population import draw

__all__ = ["WorldConfig", "generate_world", "CATALOG_FILE"]

log = logging.getLogger("tastemaker.data")


def generate_world(ws: Workspace, config: WorldConfig, accounts_url: str | None = None) -> dict:
    """Write a whole world into ``ws`` (replacing any earlier one); return summary counts."""
    t0 = time.perf_counter()
    population, rng_events, rng_emit = draw(config)
    people, cat = population.people, population.catalogue
    events = simulate(config, people, cat, population.theta, population.roster, rng_events)
    delivered = deliver(config, events, people, cat, rng_emit)
    t_sim = time.perf_counter() - t0

    # a world replaces the previous one: stale partitions would mix two worlds
    shutil.rmtree(ws.raw_events, ignore_errors=True)
    files = write_partitions(ws.raw_events, delivered, config.events_per_file)
    catalog = b"".join(orjson.dumps(r) + b"\n" for r in cat.rows())
    write_bytes(ws.raw_catalog / CATALOG_FILE, gzip.compress(catalog, compresslevel=6, mtime=0))
    if accounts_url is None and ws.accounts_db.exists():
        ws.accounts_db.unlink()
    table = open_accounts(accounts_url or f"sqlite:///{ws.accounts_db}")
    try:
        table.migrate()
        table.delete_all()
        table.upsert(people.account_rows())
    finally:
        table.close()

    summary: dict[str, Any] = {
        "users": config.n_users,
        "artists": config.n_artists,
        "deleted_users": int((people.deleted_ms >= 0).sum()),
        "users_without_coordinates": int(np.isnan(people.lat).sum()),
        **delivered.counts,
        "files": len(files),
        "partitions": len({p.parent.name for p in files}),
    }
    config_json = {k: str(v) if k == "start" else v for k, v in dataclasses.asdict(config).items()}
    write_json(ws.world_manifest, {"config": config_json, "summary": summary})
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    log.info(
        "world: %d events (%d lines) in %d files; simulated in %.1fs, total %.1fs",
        summary["events"],
        summary["lines"],
        len(files),
        t_sim,
        summary["seconds"],
    )
    return summary
