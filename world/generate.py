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
import multiprocessing
import os
import shutil
import time
from pathlib import Path
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
from world.population import Population, draw

__all__ = ["WorldConfig", "generate_world", "CATALOG_FILE"]

log = logging.getLogger("tastemaker.data")


# Up to this many users a world is one pass over all of them: the draws every preset and every
# world written before the chunked generator used (byte-identical output). Bigger worlds are
# written in chunks of CHUNK_USERS users, each with its own random streams, by worker processes.
SINGLE_PASS_MAX_USERS = 25_000
CHUNK_USERS = 10_000


def generate_world(
    ws: Workspace,
    config: WorldConfig,
    accounts_url: str | None = None,
    *,
    chunk_users: int | None = None,
    workers: int | None = None,
) -> dict:
    """Write a whole world into ``ws`` (replacing any earlier one); return summary counts.

    ``chunk_users`` (default: one pass up to ``SINGLE_PASS_MAX_USERS`` users, else
    ``CHUNK_USERS``) bounds memory: each chunk's events are simulated, delivered and written
    before the next, ``workers`` chunks at a time (default: the CPUs this process may use)."""
    t0 = time.perf_counter()
    population, rng_events, rng_emit = draw(config)
    people, cat = population.people, population.catalogue
    if chunk_users is None:
        single = config.n_users <= SINGLE_PASS_MAX_USERS
        chunk_users = config.n_users if single else CHUNK_USERS
    # a world replaces the previous one: stale partitions would mix two worlds
    shutil.rmtree(ws.raw_events, ignore_errors=True)
    if chunk_users >= config.n_users:
        events = simulate(config, people, cat, population.theta, population.roster, rng_events)
        delivered = deliver(config, events, people, cat, rng_emit)
        del events
        counts = delivered.counts
        files = write_partitions(ws.raw_events, delivered, config.events_per_file)
        del delivered
    else:
        counts, files = write_chunks(ws, population, chunk_users, workers)
    t_sim = time.perf_counter() - t0

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
        **counts,
        "files": len(files),
        "partitions": len({p.parent.name for p in files}),
    }
    config_json = {k: str(v) if k == "start" else v for k, v in dataclasses.asdict(config).items()}
    write_json(ws.world_manifest, {"config": config_json, "summary": summary})
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    log.info(
        "world: %d events (%d lines) in %d files; events written in %.1fs, total %.1fs",
        summary["events"],
        summary["lines"],
        len(files),
        t_sim,
        summary["seconds"],
    )
    return summary


_CHUNKED: tuple[Population, int] | None = None  # what forked chunk workers read


def write_chunks(
    ws: Workspace, population: Population, chunk_users: int, workers: int | None = None
) -> tuple[dict[str, int], list[Path]]:
    """Simulate, deliver and write the history of ``population`` ``chunk_users`` users at a time.

    Chunk ``c`` (users ``c * chunk_users`` up to the next chunk) draws its events and their
    delivery from its own streams, seeded by ``(seed, c)``, so a world does not depend on how
    many workers wrote it; its files are ``dt=.../part-uCCCC-NNNNN.jsonl.gz`` (gzip by ISA-L)
    and its slate numbers start at ``c << 24``. Returns the summed counts and the files written."""
    global _CHUNKED
    n_chunks = -(-population.config.n_users // chunk_users)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    workers = max(1, min(workers, n_chunks))
    _CHUNKED = (population, chunk_users)
    try:
        jobs = [(ws.raw_events, c) for c in range(n_chunks)]
        if workers == 1:
            results = [_write_chunk(job) for job in jobs]
        else:  # forked workers share the population (copy-on-write) instead of pickling it
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                results = pool.map(_write_chunk, jobs, chunksize=1)
    finally:
        _CHUNKED = None
    counts: dict[str, int] = {}
    files: list[Path] = []
    for chunk_counts, chunk_files in results:
        for key, value in chunk_counts.items():
            counts[key] = counts.get(key, 0) + value
        files.extend(chunk_files)
    return counts, files


def _write_chunk(job: tuple[Path, int]) -> tuple[dict[str, int], list[Path]]:
    root, c = job
    assert _CHUNKED is not None
    population, chunk_users = _CHUNKED
    cfg, people, cat = population.config, population.people, population.catalogue
    lo, hi = c * chunk_users, min(cfg.n_users, (c + 1) * chunk_users)
    rng_events, rng_emit = (np.random.default_rng([cfg.seed, c, stream]) for stream in (1, 2))
    events = simulate(
        cfg,
        people,
        cat,
        population.theta,
        population.roster,
        rng_events,
        users=(lo, hi),
        request_base=c << 24,
        world=population.world,
    )
    if events.request.max(initial=-1) >= (c + 1) << 24:
        raise ValueError(f"chunk {c}: over 2**24 slates collide with the next chunk's ids")
    delivered = deliver(cfg, events, people, cat, rng_emit)
    del events
    stem = f"part-u{c:04d}-"
    files = write_partitions(root, delivered, cfg.events_per_file, stem=stem, isal=True)
    return delivered.counts, files
