"""Ingest: raw JSON-lines objects -> the lake's Delta tables, every line accounted for.

For each raw object not yet in the ledger (:mod:`data.ingest.ledger`), in path order:
decompress -> parse (:mod:`data.ingest.parse`) -> validate rows (:mod:`data.ingest.validate`) -> dedupe
by ``event_id`` (first occurrence wins, within the object and against every earlier object and
run, through the id index of :class:`data.ingest.ledger.IdIndex`) -> pseudonymise ``user_id`` into ``user_key`` -> write
``lake/events/dt=<UTC date of event_ts>/part-<object_id>.parquet`` per day touched and
``pii/quarantine/dt=<UTC date of the run>/part-<object_id>.parquet`` -> write the object's id
index -> add its quarantine file to the ``pii/quarantine`` Delta table in one commit (raw
object name, checksum and files in the commit) -> add its lake files to the ``lake/events``
Delta table in ONE commit carrying the raw object's name, checksum and ledger entry
(:mod:`data.lake`) -> write the ledger entry. Output names depend only on the object and the
run's day, so an object interrupted half way is redone byte for byte; an object whose
quarantine commit landed is not quarantined again (its committed file is reused); an object
whose events commit landed but whose ledger entry did not is recognised from the log at the
next start (its ledger entry is written from the commit) and never appended twice.

The run fails (:class:`IngestInvariantError`) if ``read != accepted + duplicates +
quarantined`` for any object, before that object is committed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from core import atomic
from core.constants import DAY_MS
from core.progress import progress_bar
from core.workspace import Workspace
from data import lake
from data.ingest import ledger as ledger_mod
from data.ingest.objectstore import ObjectStore, open_store
from data.ingest.ops import (
    Pseudonyms,
    decompress,
    first_occurrences,
    id_hashes,
    write_lake_file,
)
from data.ingest.parse import Parsed, parse_object
from data.ingest.validate import IngestRules, Lookups, reason_detail, reason_name, validate_rows
from data.pii import pseudonym_key
from data.schemas import LAKE_EVENTS, LAKE_PARTITION, QUARANTINE, TS

log = logging.getLogger("tastemaker.data")
RAW_SUFFIXES = (".jsonl.gz", ".jsonl", ".json.gz", ".ndjson", ".ndjson.gz")


class IngestInvariantError(RuntimeError):
    """read != accepted + duplicates + quarantined: something was lost or counted twice."""


@dataclass
class Counts:
    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: Counter = field(default_factory=Counter)

    def add(self, other: Counts) -> None:
        self.read += other.read
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.quarantined.update(other.quarantined)

    def check(self, what: str) -> None:
        total = self.accepted + self.duplicates + sum(self.quarantined.values())
        if self.read != total:
            raise IngestInvariantError(
                f"{what}: read={self.read} but accepted={self.accepted} + duplicates="
                f"{self.duplicates} + quarantined={sum(self.quarantined.values())} = {total}"
            )

    def as_dict(self) -> dict:
        return {
            "read": self.read,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "quarantined": sum(self.quarantined.values()),
            "quarantined_by_reason": dict(sorted(self.quarantined.items())),
        }


def _lake_table(table: pa.Table, event_ms: np.ndarray, user_keys: pa.Array) -> pa.Table:
    columns = {name: table[name] for name in LAKE_EVENTS.names if name in table.column_names}
    columns["user_key"] = user_keys
    columns["event_ts"] = pa.array(event_ms, pa.int64()).cast(TS)
    columns["server_ts"] = table["server_ts"].cast(TS)
    return pa.table({n: columns[n] for n in LAKE_EVENTS.names}).cast(LAKE_EVENTS)


def _partition(day: int) -> str:
    """The lake partition folder (``dt=YYYY-MM-DD``) of a UTC day number."""
    dt = datetime.fromtimestamp(day * 86_400, tz=timezone.utc).strftime("%Y-%m-%d")
    return f"{LAKE_PARTITION}={dt}"


ACCOUNT_REASONS = frozenset({"deleted_user", "unknown_user"})


def _quarantine_table(source: str, parsed: Parsed, codes: np.ndarray) -> pa.Table:
    rej = parsed.rejected
    line_no, reason, detail, line = (
        list(rej.line_no),
        list(rej.reason),
        list(rej.detail),
        list(rej.line),
    )
    bad_rows = np.flatnonzero(codes)
    if len(bad_rows):
        numbers = parsed.line_no[bad_rows]
        raw = parsed.lines(numbers)
        rows = parsed.table.take(pa.array(bad_rows)).to_pylist()
        for r, n, row, text in zip(bad_rows, numbers, rows, raw, strict=True):
            name = reason_name(int(codes[r]))
            line_no.append(int(n))
            reason.append(name)
            if name in ACCOUNT_REASONS:
                # a deleted (or erased, hence unknown) account: reason and count only, never
                # the raw line or its id (erasure wins over debugging; docs/privacy.md)
                detail.append(f"event_id={str(row.get('event_id'))[:64]!r}; user_id withheld")
                line.append("")
                continue
            detail.append(reason_detail(name, row))
            line.append(text.decode("utf-8", errors="backslashreplace"))
    order = np.argsort(np.asarray(line_no, dtype=np.int64), kind="stable")
    table = pa.table(
        {
            "source": pa.array([source] * len(line_no), pa.string()),
            "line_no": pa.array(line_no, pa.int64()),
            "reason": pa.array(reason, pa.string()),
            "detail": pa.array(detail, pa.string()),
            "line": pa.array(line, pa.string()),
        },
        schema=QUARANTINE,
    )
    return table.take(pa.array(order))


def _quarantine_file(ws: Workspace, oid: str, now_ms: int) -> Path:
    """``pii/quarantine/dt=<UTC day of the run>/part-<object_id>.parquet``."""
    return ws.quarantine / _partition(now_ms // DAY_MS) / f"part-{oid}.parquet"


def ingest_object(
    ws: Workspace,
    source: str,
    data: bytes,
    *,
    known: ledger_mod.IdIndex,
    lookups: Lookups,
    pseudonyms: Pseudonyms,
    rules: IngestRules,
    now_ms: int,
    quarantined: list[str] | None = None,
) -> tuple[Counts, list[str]]:
    """Validate, dedupe and write one raw object; returns its counts and workspace-relative outputs.

    ``quarantined``: the object's quarantine files when a killed run already committed them
    to the quarantine table (they are listed as outputs, not written again)."""
    oid = ledger_mod.object_id(source)
    counts = Counts()
    try:
        parsed = parse_object(decompress(source, data))
    except (OSError, EOFError, zlib.error) as exc:
        # a truncated/corrupt archive has no lines to count: it is one unreadable record
        counts.read, counts.quarantined["corrupt_object"] = 1, 1
        bad = pa.table(
            {
                "source": [source],
                "line_no": [0],
                "reason": ["corrupt_object"],
                "detail": [str(exc)],
                "line": [""],
            },
            schema=QUARANTINE,
        )
        if quarantined is None:
            quarantine = _quarantine_file(ws, oid, now_ms)
            atomic.write_table(quarantine, bad)
            quarantined = [str(quarantine.relative_to(ws.root))]
        known.write(source, pa.array([], pa.string()))
        return counts, list(quarantined)
    users = parsed.table["user_id"].combine_chunks().dictionary_encode()
    codes, event_ms = validate_rows(parsed.table, rules, lookups, now_ms, users=users)
    valid = codes == 0
    n_valid = int(valid.sum())
    ids = parsed.table["event_id"].combine_chunks()
    first, first_ids = first_occurrences(ids if n_valid == len(valid) else ids.filter(valid))
    first_hashes = id_hashes(first_ids)
    in_lake = known.known(first_ids, first_hashes)
    keep = first
    keep[first] = ~in_lake
    n_keep = int(keep.sum())
    counts.read = parsed.n_lines
    counts.duplicates = n_valid - n_keep
    counts.accepted = n_keep
    counts.quarantined.update(parsed.rejected.reason)
    counts.quarantined.update(reason_name(int(c)) for c in codes[~valid])
    counts.check(f"object {source}")

    outputs: list[str] = []
    final = np.flatnonzero(valid)[keep]  # (A,) parsed rows that go to the lake
    # every distinct user id of the object is hashed (once per run), then spread to rows
    keys = pseudonyms.keys(users.dictionary)
    # only the lake's columns are gathered, and only the rows of one day file at a time (a
    # boolean filter per file: about 2.5x cheaper than a take of the same rows, same order)
    columns = parsed.table.select([n for n in LAKE_EVENTS.names if n in parsed.table.column_names])
    day = np.full(parsed.table.num_rows, -1, dtype=np.int64)  # (R,) -1: not for the lake
    day[final] = event_ms[final] // DAY_MS
    days = day[final]
    first_day = int(days.min()) if len(days) else 0
    # validated event times lie between the service start and the run's clock: few days
    for d in np.flatnonzero(np.bincount(days - first_day)) + first_day:
        rows = day == d
        if rows.all():
            part, user_rows, part_ms = columns, users.indices, event_ms
        else:
            mask = pa.array(rows)
            part, user_rows, part_ms = (
                columns.filter(mask),
                users.indices.filter(mask),
                event_ms[rows],
            )
        path = ws.lake_events / _partition(int(d)) / f"part-{oid}.parquet"
        write_lake_file(path, _lake_table(part, part_ms, pc.take(keys, user_rows)))
        outputs.append(str(path.relative_to(ws.root)))
    if quarantined is not None:
        outputs.extend(quarantined)
    elif sum(counts.quarantined.values()):
        # raw lines keep raw ids: the quarantine lives in the PII zone, not in the lake
        path = _quarantine_file(ws, oid, now_ms)
        atomic.write_table(path, _quarantine_table(source, parsed, codes))
        outputs.append(str(path.relative_to(ws.root)))
    # the accepted ids are the new first occurrences, in the same order: index them before
    # the ledger entry commits the object
    known.write(source, first_ids.filter(pa.array(~in_lake)), first_hashes[~in_lake])
    return counts, outputs


def ingest_store(
    ws: Workspace,
    store: ObjectStore,
    lookups: Lookups,
    *,
    key: bytes,
    rules: IngestRules = IngestRules(),
    now: datetime | None = None,
    prefix: str = "events",
    until: date | None = None,
) -> dict:
    """Ingest every new raw object under ``prefix`` of ``store``; returns the run manifest.

    ``until`` (inclusive) leaves objects of later arrival partitions (``dt=YYYY-MM-DD``) for a
    later run: the daily cycle ingests day by day. They are counted as ``objects_deferred``."""
    started = time.perf_counter()
    now_ms = int((now or datetime.now(timezone.utc)).timestamp() * 1000)
    table = lake.create_events(ws.lake_events)
    qtable = lake.create_table(ws.quarantine, lake.QUARANTINE_TABLE)
    ledger = ledger_mod.load_ledger(ws)
    recover_from_log(ws, table, ledger)
    ledger_mod.remove_orphans(ws, ledger)
    # quarantine commits newer than the ledger's last: a killed run committed them already
    q_after = max((e.get("quarantine_version", -1) for e in ledger.values()), default=-1)
    q_done = lake.committed_objects(qtable, q_after)
    known = ledger_mod.IdIndex(ws, ledger)
    pseudonyms = Pseudonyms(key)
    total, objects, skipped, deferred = Counts(), [], 0, 0
    pending = []
    for source in store.list(prefix):
        if not source.endswith(RAW_SUFFIXES):
            continue
        arrived = arrival_date(source)
        if until is not None and arrived is not None and arrived > until:
            deferred += 1
            continue
        if source in ledger:
            skipped += 1
            continue
        pending.append(source)
    with progress_bar(len(pending), desc="ingest", unit="object") as bar:
        for source in pending:
            data = store.read_bytes(source)
            counts, outputs = ingest_object(
                ws,
                source,
                data,
                known=known,
                lookups=lookups,
                pseudonyms=pseudonyms,
                rules=rules,
                now_ms=now_ms,
                quarantined=q_done[source]["files"] if source in q_done else None,
            )
            entry = {"source": source, "size": len(data), "outputs": outputs, **counts.as_dict()}
            entry["delta_version"] = commit_object(ws, (table, qtable), entry, data, q_done)
            ledger_mod.commit(ws, entry)
            known.add(source)
            total.add(counts)
            objects.append(source)
            log.debug("ingested %s: %s", source, counts.as_dict())
            bar.set_postfix_str(f"{total.read:,} lines", refresh=False)
            bar.update()
    total.check("run")
    seconds = time.perf_counter() - started
    return {
        "store": repr(store),
        "objects": objects,
        "objects_skipped_already_ingested": skipped,
        "objects_deferred": deferred,
        "lake_version": table.version(),
        **total.as_dict(),
        "seconds": round(seconds, 3),
        "events_per_s": round(total.read / seconds) if seconds > 0 else None,
    }


def commit_object(
    ws: Workspace,
    tables: tuple[DeltaTable, DeltaTable],
    entry: dict,
    data: bytes,
    q_done: dict[str, dict],
) -> int:
    """Add the object's quarantine file to the quarantine table (one commit, unless a killed
    run made it already: ``q_done``; its version goes into ``entry``), then its lake files to
    the events table in one commit; returns the events commit's version.

    Both commits carry the raw object's name and SHA-256; the events commit also the ledger
    entry (without its version), so :func:`recover_from_log` can finish an object whose
    ledger entry is missing."""
    events_table, quarantine_table = tables
    files = [ws.root / out for out in entry["outputs"]]
    checksum = hashlib.sha256(data).hexdigest()
    source = entry["source"]
    rejected = [f for f in files if f.is_relative_to(ws.quarantine)]
    if source in q_done:
        entry["quarantine_version"] = q_done[source]["version"]
    elif rejected:
        entry["quarantine_version"] = lake.commit_files(
            quarantine_table,
            ws.quarantine,
            rejected,
            {
                lake.SOURCE_KEY: source,
                lake.CHECKSUM_KEY: checksum,
                lake.FILES_KEY: json.dumps([str(f.relative_to(ws.root)) for f in rejected]),
            },
            lake.QUARANTINE_TABLE,
        )
    metadata = {
        lake.SOURCE_KEY: source,
        lake.CHECKSUM_KEY: checksum,
        lake.ENTRY_KEY: json.dumps(entry, sort_keys=True),
    }
    events = [f for f in files if f.is_relative_to(ws.lake_events)]
    return lake.commit_files(events_table, ws.lake_events, events, metadata)


def recover_from_log(ws: Workspace, table: DeltaTable, ledger: dict[str, dict]) -> int:
    """Write the ledger entries of objects the Delta log has committed but the ledger lacks
    (a run killed between the two); ``ledger`` is updated in place. Returns how many."""
    after = max((e.get("delta_version", -1) for e in ledger.values()), default=-1)
    recovered = 0
    for source, commit in lake.committed_objects(table, after).items():
        if source in ledger or commit["entry"] is None:
            continue
        entry = {**commit["entry"], "delta_version": commit["version"]}
        ledger_mod.commit(ws, entry)
        ledger[source] = entry
        recovered += 1
    if recovered:
        log.warning("recovered %d ledger entr(ies) from the lake's Delta log", recovered)
    return recovered


def arrival_date(source: str) -> date | None:
    """The ``dt=YYYY-MM-DD`` arrival partition of a raw object path, if it has one."""
    for part in source.split("/"):
        if part.startswith("dt="):
            try:
                return date.fromisoformat(part[3:])
            except ValueError:
                return None
    return None


def load_lookups(ws: Workspace, accounts_url: str | None) -> Lookups:
    """Known user ids (account table) and artist ids (catalogue) for reference checks."""
    from data.accounts import default_accounts_url, open_accounts
    from data.catalog import load_catalog

    with open_accounts(accounts_url or default_accounts_url(ws)) as accounts:
        users = pa.array(sorted(accounts.user_ids()), pa.string())
        deleted = pa.array(sorted(accounts.deleted_user_ids()), pa.string())
    artists = load_catalog(ws)["artist_id"].combine_chunks()
    return Lookups(users=users, deleted_users=deleted, artists=artists)


def run_ingest(
    ws: Workspace,
    source_url: str | None = None,
    accounts_url: str | None = None,
    *,
    rules: IngestRules = IngestRules(),
    now: datetime | None = None,
    until: date | None = None,
    key: bytes | None = None,
) -> dict:
    """The ``tastemaker ingest`` job: new raw objects -> lake; refreshes users/artists views.

    ``source_url`` is the object store root (default: the workspace's ``raw/`` folder);
    ``accounts_url`` the account table (default: the workspace's SQLite file); ``key`` the
    pseudonymisation secret (``data.pii.pseudonym_key(settings)``; the callers pass it, a
    library caller without one gets the configured key). Returns the run manifest, also
    written to ``lake/_manifests/<run_id>.json``.
    """
    from data.accounts import publish_user_view
    from data.catalog import publish_catalog

    key = key if key is not None else pseudonym_key()
    store = open_store(source_url, ws.raw)
    manifest = ingest_store(
        ws,
        store,
        load_lookups(ws, accounts_url),
        key=key,
        rules=rules,
        now=now,
        until=until,
    )
    manifest["users_published"] = publish_user_view(ws, accounts_url=accounts_url, key=key)
    manifest["artists_published"] = publish_catalog(ws)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    manifest["run_id"] = run_id
    atomic.write_json(ws.ingest_manifests / f"{run_id}.json", manifest)
    log.info(
        "ingest %s: read=%d accepted=%d duplicates=%d quarantined=%d",
        run_id,
        manifest["read"],
        manifest["accepted"],
        manifest["duplicates"],
        manifest["quarantined"],
    )
    return manifest
