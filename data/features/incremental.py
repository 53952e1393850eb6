"""The incremental daily feature build: read only the lake files added since the last build.

Every local build (full or incremental) leaves, in ``features/state/``, the event log it
built its tables from: every valid event as integer codes (user, artist, track, type), its
time, ``ms_played``, duration, listen ratio, and its place in the lake's read order (file,
row); plus the vocabularies of strings seen in events and the files read. That is all of the
per-user, per-track and per-artist state docs/data.md lists, in its most compact exact form.

The log is kept in parts (state format 3): a *base* (the whole log, sorted by user, time and
read order), written by a full build, and one *daily part* per later daily build holding
only that day's new rows. The vocabularies and the list of files only grow, at their ends,
so the codes of every part stay valid; a daily build hard-links the carried parts into its
new state folder and writes its own part (a few MB) instead of the whole log (~50 bytes an
event). On load, every daily part is placed into the base in the same one merge as the new
files' rows. A daily build *compacts* (writes the merged log as a new base) when the daily
parts would pass ``_COMPACT_SHARE`` of the base's rows, or when a late stream changed the
listen ratio of carried rows (parts are never rewritten).

A daily build with that state (``build_features(..., incremental=True)``):

1. asks the Delta log which files were added since the state's version
   (:func:`data.lake.files_between`) and reads only those;
2. merges their events into the carried log: codes remapped to the grown vocabularies (a
   monotone map, so the carried (user, time) order stays), new rows placed by binary search,
   ties at the same (user, millisecond) broken by (file, row) as a full read breaks them;
3. computes the new streams' listen ratios on top of their tracks' carried streams (count
   and ``ms_played`` sum); a track with a *late* stream has all its streams recomputed,
   carried ones included (a late stream changes the ratio of every later stream of its
   track, so this is where a late event is repaired, exactly);
4. hands the merged log to the same table functions as the full build.

So a late event (``event_ts`` before the previous build's end) costs nothing special: the
merged log is the full log, and every user and track it reaches is recomputed. Tables are
then computed from the merged log in memory (the lake is not read again); see docs/data.md
for what that means for the speed-up.

Refused (one log line, then a full rebuild that writes a fresh state): no state; a state of
another format, feature config or lake schema; a state newer than the version asked for;
files removed from the table since the state's version (an ``optimize``, a ``vacuum``, an
erasure's delete): the carried rows of those files cannot be told apart.

The state is written after every table, into a new folder, and made current by one atomic
write of ``state/current.json``; a killed run leaves the previous state current (its stray
folder is removed by the next save).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.atomic import atomic_path, write_json
from core.workspace import Workspace
from data.features.config import FeatureConfig
from data.features.events import (
    _DICT_TYPE,
    EventLog,
    _codes,
    _dict_chunks,
    _read_part,
    assemble_log,
    listen_usable,
    track_listen_ratios,
    valid_events,
)
from data.features.example_parts import changed_days, listing
from data.features.sort import lex_order
from data.lake import EVENTS_SCHEMA, event_files, files_between

log = logging.getLogger("tastemaker.data")

STATE_FORMAT = 3  # 3: the log as a base part and one part per daily build
_BASE = "log-base.arrow"
# a daily build rewrites the whole log as a new base once the daily parts hold this share
# of the base's rows (they are merged into it on every load), or when carried rows change
_COMPACT_SHARE = 0.125
_CURRENT = "current.json"
_ROWS = pa.schema(
    [
        ("u", pa.int32()),
        ("a", pa.int32()),
        ("tr", pa.int32()),
        ("et", pa.int8()),
        ("ts", pa.int64()),
        ("ms", pa.float64()),
        ("dur", pa.float64()),
        ("lr_q", pa.int32()),  # |lr_q| <= 2 * 65536
        ("lr_ok", pa.bool_()),
        ("f", pa.int32()),  # the row's file, an index into files
        ("r", pa.int32()),  # the row's place in its file
    ]
)
_FILES = pa.schema([("path", pa.string()), ("rows", pa.int64())])
_VOCABS = ("u", "a", "tr")
_ACCOUNT = ("age_group", "gender", "country")  # with signup_ms: what examples take from it
_ACCOUNTS = pa.schema([*((f, pa.string()) for f in _ACCOUNT), ("signup_ms", pa.int64())])


@dataclass
class State:
    """A loaded state: its ``meta`` (current.json), the files read (table-relative, in the
    order first read: a row's ``f`` indexes this list), the vocabularies of strings seen in
    events (in the order first seen: a row's code indexes them), the log as parts (``_ROWS``,
    each sorted by user, time and read order: the ``base`` the last compacting build wrote,
    then one ``delta`` per later daily build with that day's new rows), and the account
    fields each user of the vocabulary had (``_ACCOUNTS``, aligned to ``vocab["u"]``)."""

    meta: dict[str, Any]
    files: list[str]
    file_rows: np.ndarray
    vocab: dict[str, pa.Array]
    rows: pa.Table  # the base part
    deltas: list[pa.Table]
    accounts: pa.Table

    @property
    def version(self) -> int:
        return int(self.meta["lake_version"])

    @property
    def n_rows(self) -> int:
        """Every carried event: the base part and the daily parts."""
        return self.rows.num_rows + sum(d.num_rows for d in self.deltas)


def _signature(config: FeatureConfig) -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "config": json_config(config),
        "events_schema": EVENTS_SCHEMA.names,
        "log_schema": _ROWS.names,
    }


def json_config(config: FeatureConfig) -> dict[str, Any]:
    """The config as meta.json and state/current.json hold it (tuples as lists)."""
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
    }


def _rel(root: Path, file: Path) -> str:
    return Path(file).resolve().relative_to(Path(root).resolve()).as_posix()


# ------------------------------------------------------------------------------ state files
def save_state(
    ws: Workspace,
    config: FeatureConfig,
    version: int,
    ev: EventLog,
    seen: dict[str, np.ndarray],
    files: list[Path],
    file_rows: list[int] | np.ndarray,
    read_pos: np.ndarray,
) -> dict[str, Any]:
    """Write the state's files for a build of lake ``version`` whose log is ``ev`` into a new
    folder (not yet current: :func:`commit_state` makes it so once every table is written),
    the whole log as one base part (a full build, or a daily build that compacts); ``seen``
    marks the vocabulary entries that occur in events; ``read_pos`` is each log row's place in
    the read order of ``files`` (``file_rows`` rows each). Returns the meta."""
    folder, name = _new_folder(ws, version)
    full = {"u": ev.user_ids, "a": ev.artist_ids, "tr": ev.track_ids}
    to_event: dict[str, np.ndarray] = {}
    for k in _VOCABS:
        mask = np.asarray(seen[k], bool)
        to_event[k] = (np.cumsum(mask) - 1).astype(np.int32)
        _write_ipc(folder / f"vocab_{k}.arrow", pa.table({"s": full[k].filter(pa.array(mask))}))
    starts = np.concatenate([[0], np.cumsum(np.asarray(file_rows, np.int64))])
    f = np.searchsorted(starts, read_pos, side="right") - 1
    tr = ev.tr
    rows = {
        "u": to_event["u"][ev.u],
        "a": to_event["a"][ev.a],
        "tr": np.where(tr >= 0, to_event["tr"][np.maximum(tr, 0)], -1),
        "et": ev.et,
        "ts": ev.ts,
        "ms": ev.ms,
        "dur": ev.dur,
        "lr_q": ev.lr_q.astype(np.int32),
        "lr_ok": ev.lr_ok,
        "f": f.astype(np.int32),
        "r": (read_pos - starts[f]).astype(np.int32),
    }
    _write_ipc(folder / _BASE, pa.table(rows, schema=_ROWS))
    in_events = pa.array(np.asarray(seen["u"], bool))
    accounts = {f: ev.users[f].filter(in_events) for f in _ACCOUNT}
    accounts["signup_ms"] = pa.array(ev.signup_ms).filter(in_events)
    _write_ipc(folder / "accounts.arrow", pa.table(accounts).cast(_ACCOUNTS))
    lake_root = ws.lake_events
    paths = [_rel(lake_root, p) for p in files]
    _write_ipc(
        folder / "files.arrow",
        pa.table({"path": paths, "rows": np.asarray(file_rows, np.int64)}, schema=_FILES),
    )
    return {
        **_signature(config),
        "lake_version": int(version),
        "folder": name,
        "log_parts": [_BASE],
        "events": len(ev.ts),
    }


@dataclass
class Delta:
    """What a daily build that does not compact writes: the carried parts (linked into the
    new folder, never rewritten), the vocabularies and files grown at their ends, the day's
    new rows as one more part, and the account fields of now."""

    state_folder: Path
    parts: list[str]
    vocab: dict[str, pa.Array]
    files: list[str]
    file_rows: np.ndarray
    rows: dict[str, np.ndarray]
    u_codes: np.ndarray  # the build's user code of each vocabulary entry
    accounts: pa.Table | None = None  # set once the log is assembled
    events: int = 0


def save_delta(ws: Workspace, config: FeatureConfig, version: int, delta: Delta) -> dict[str, Any]:
    """Write a daily build's state into a new folder (made current by :func:`commit_state`):
    the carried log parts hard-linked (a copy where links fail), the new rows as a new part,
    the grown vocabularies, files and the account fields. Returns the meta."""
    folder, name = _new_folder(ws, version)
    for part in delta.parts:
        _link(delta.state_folder / part, folder / part)
    new_part = f"log-{name}.arrow"
    _write_ipc(folder / new_part, pa.table(delta.rows, schema=_ROWS))
    for k in _VOCABS:
        _write_ipc(folder / f"vocab_{k}.arrow", pa.table({"s": delta.vocab[k]}))
    if delta.accounts is None:
        raise ValueError("save_delta: the daily part's account fields were never set")
    _write_ipc(folder / "accounts.arrow", delta.accounts)
    _write_ipc(
        folder / "files.arrow",
        pa.table({"path": delta.files, "rows": delta.file_rows}, schema=_FILES),
    )
    return {
        **_signature(config),
        "lake_version": int(version),
        "folder": name,
        "log_parts": [*delta.parts, new_part],
        "events": delta.events,
    }


def _new_folder(ws: Workspace, version: int) -> tuple[Path, str]:
    name = f"v{version}-{uuid.uuid4().hex[:8]}"
    folder = ws.feature_dir.state / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder, name


def _link(src: Path, dst: Path) -> None:
    """``dst`` as a hard link of ``src`` (parts are never modified once written), a copy
    where the file system does not link."""
    try:
        os.link(src, dst)
    except OSError:
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)


def commit_state(ws: Workspace, meta: dict[str, Any], end: int) -> None:
    """Make the state folder ``meta`` names current (one atomic write of current.json; the
    build's ``end`` cutoff is recorded: later events before it are late, and so are the
    examples' day files as written, to tell later whether they are still these), then remove
    every other folder (the previous state, a killed run's leftovers)."""
    root = ws.feature_dir.state
    parts = listing(ws.feature_dir.examples)
    write_json(root / _CURRENT, {**meta, "end_ms": int(end), "example_parts": parts})
    for other in root.iterdir():
        if other.is_dir() and other.name != meta["folder"]:
            shutil.rmtree(other, ignore_errors=True)


def _write_ipc(path: Path, table: pa.Table) -> None:
    with (
        atomic_path(path) as tmp,
        pa.OSFile(str(tmp), "wb") as sink,
        pa.ipc.new_file(sink, table.schema) as writer,
    ):
        writer.write_table(table)


def _read_ipc(path: Path) -> pa.Table:
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def load_state(ws: Workspace, config: FeatureConfig) -> State | str:
    """The carried state, or the one-line reason it cannot be used."""
    root = ws.feature_dir.state
    current = root / _CURRENT
    if not current.is_file():
        return f"no carried state in {root}"
    try:
        meta = json.loads(current.read_text())
    except ValueError as exc:
        return f"unreadable {current} ({exc})"
    want = _signature(config)
    for key, value in want.items():
        if meta.get(key) != value:
            if key == "config":
                diff = sorted(k for k in value if (meta.get("config") or {}).get(k) != value.get(k))
                return f"the carried state was built with another feature config ({diff})"
            return f"the carried state has another {key} ({meta.get(key)!r}, expected {value!r})"
    folder = root / str(meta.get("folder"))
    names = meta.get("log_parts")
    if not isinstance(names, list) or not names:
        return f"the carried state in {folder} lists no log parts"
    try:
        files = _read_ipc(folder / "files.arrow")
        vocab = {k: _read_ipc(folder / f"vocab_{k}.arrow")["s"].combine_chunks() for k in _VOCABS}
        parts = [_read_ipc(folder / str(n)) for n in names]
        accounts = _read_ipc(folder / "accounts.arrow")
    except (OSError, pa.ArrowInvalid) as exc:
        return f"the carried state in {folder} is incomplete ({exc})"
    if any(p.schema != _ROWS for p in parts) or files.schema != _FILES:
        return f"the carried state in {folder} has another layout"
    if accounts.schema != _ACCOUNTS:
        return f"the carried state in {folder} has another layout"
    return State(
        meta=meta,
        files=files["path"].to_pylist(),
        file_rows=files["rows"].to_numpy(),
        vocab=vocab,
        rows=parts[0],
        deltas=parts[1:],
        accounts=accounts,
    )


# ------------------------------------------------------------------------- the merged log
@dataclass
class Carried:
    """What lets a daily build rewrite only some days of the examples: the log rows whose
    example may differ from the previous build's, that build's ``end`` and the examples'
    day files as it left them."""

    stale: np.ndarray  # (N,) bool, per row of the merged log
    end: int
    parts: dict[str, list[int]] | None

    def days(
        self, folder: Path, ev: EventLog, config: FeatureConfig, cut: dict[str, int]
    ) -> set[int] | None:
        """The days to rewrite; None (all) when the day files are not the previous build's
        (a Spark build since, a file removed by hand)."""
        if listing(folder) != self.parts:
            log.warning("features: the examples are not those of the carried state; all days")
            return None
        return changed_days(ev, config, cut, self.end, self.stale)


@dataclass
class Merged:
    """The incremental build's log and what its state needs."""

    ev: EventLog
    seen: dict[str, np.ndarray]
    files: list[Path]
    file_rows: np.ndarray
    read_pos: np.ndarray | None  # for a compacting build: every row's place in the read order
    stats: dict[str, Any]
    carried: Carried
    delta: Delta | None  # what a build that does not compact writes


def merge_new_files(
    ws: Workspace,
    config: FeatureConfig,
    version: int,
    state: State,
    users: pa.Table,
    artists: pa.Table,
) -> Merged | str:
    """The event log of lake ``version`` from ``state`` plus the files added since its
    version (only those are read); or the one-line reason a full rebuild is needed."""
    lake = ws.lake_events
    if state.version > version:
        return f"the carried state covers version {state.version}, newer than {version}"
    try:
        changes = files_between(lake, state.version, version)
    except Exception as exc:  # a version whose log was cleaned up, a missing file ...
        return f"cannot diff lake versions {state.version}..{version} ({exc})"
    if changes["removed"]:
        return (
            f"{len(changes['removed'])} lake files left the table since version "
            f"{state.version} (optimize, vacuum or an erasure)"
        )
    current = event_files(lake, version)
    index = {_rel(lake, p): i for i, p in enumerate(current)}
    missing = [p for p in state.files if p not in index]
    if missing:
        return f"{len(missing)} carried files are not in version {version}"
    added = changes["added"]
    end = int(state.meta.get("end_ms", 0))
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="features-read") as pool:
        parts = list(pool.map(_read_part, added))
    file_rows = np.zeros(len(current), np.int64)
    file_rows[[index[p] for p in state.files]] = state.file_rows
    for p, part in zip(added, parts, strict=True):
        file_rows[index[_rel(lake, p)]] = len(part["ts"][0])

    # vocabularies: strings seen in events (carried + new), then with the views
    view = {"u": users["user_key"], "a": artists["artist_id"]}
    to_full: dict[str, np.ndarray] = {}  # new event-vocab code -> full vocab code
    old_to_full: dict[str, np.ndarray] = {}
    new_codes: dict[str, np.ndarray] = {}
    full: dict[str, pa.Array] = {}
    seen: dict[str, np.ndarray] = {}
    for k in _VOCABS:
        carried = state.vocab[k]
        chunks = [_as_dict(carried)] + [c for part in parts for c in part[k]]
        ev_vocab, codes = _codes(chunks)
        old_to_new, new_codes[k] = codes[: len(carried)], codes[len(carried) :]
        if k in view:
            with_view, vcodes = _codes([*_dict_chunks(view[k]), _as_dict(ev_vocab)])
            full[k], to_full[k] = with_view, vcodes[len(vcodes) - len(ev_vocab) :]
        else:
            full[k], to_full[k] = ev_vocab, np.arange(len(ev_vocab), dtype=np.int32)
        seen[k] = np.zeros(len(full[k]), bool)
        seen[k][to_full[k]] = True
        old_to_full[k] = to_full[k][old_to_new]

    def cat(key: str) -> np.ndarray:
        arrays = [np.concatenate(part[key]) for part in parts]
        return np.concatenate(arrays) if arrays else np.zeros(0)

    def mapped(k: str, codes: np.ndarray, table: np.ndarray) -> np.ndarray:
        if _identity(table):  # the usual day: no code moved (nothing new sorts before it)
            return codes.astype(np.int32, copy=False)
        return np.where(codes >= 0, table[np.maximum(codes, 0)], -1).astype(np.int32)

    new = {k: mapped(k, new_codes[k], to_full[k]) for k in _VOCABS}
    new["et"] = cat("et").astype(np.int8)
    new["ts"] = cat("ts").astype(np.int64)
    new["ms"], new["dur"] = cat("ms").astype(np.float64), cat("dur").astype(np.float64)
    new["f"] = np.concatenate(
        [
            np.full(len(part["ts"][0]), index[_rel(lake, p)], np.int32)
            for p, part in zip(added, parts, strict=True)
        ]
        or [np.zeros(0, np.int32)]
    )
    new["r"] = np.concatenate(
        [np.arange(len(part["ts"][0]), dtype=np.int32) for part in parts] or [np.zeros(0, np.int32)]
    )
    new["lr_q"] = np.zeros(len(new["ts"]), np.int64)
    new["lr_ok"] = np.zeros(len(new["ts"]), bool)
    ok = valid_events(new["u"] >= 0, new["a"] >= 0, new["et"], new["ts"])
    if not ok.all():
        log.warning(
            "dropping %d events without user_key, artist_id, known type or time", (~ok).sum()
        )
    new = {k: v[ok] for k, v in new.items()}
    n_today = len(new["ts"])
    late = int((new["ts"] < end).sum())

    file_map = np.array([index[p] for p in state.files], np.int32)

    def carried_rows(part: pa.Table) -> dict[str, np.ndarray]:
        col = {name: part[name].to_numpy() for name in _ROWS.names}
        out = {k: mapped(k, col[k], old_to_full[k]) for k in _VOCABS}
        out.update({k: col[k] for k in ("et", "ts", "ms", "dur", "lr_ok", "r")})
        out["lr_q"] = col["lr_q"].astype(np.int64)
        out["f"] = col["f"] if _identity(file_map) else file_map[col["f"]]
        return out

    # the daily parts carried since the base join the day's rows; all of them are placed
    # into the base in one merge (only the day's rows count as new below)
    if state.deltas:
        days = [carried_rows(d) for d in state.deltas]
        new = {k: np.concatenate([*(d[k] for d in days), new[k]]) for k in new}
    today = np.zeros(len(new["ts"]), bool)
    today[len(today) - n_today :] = True
    order = np.lexsort((new["r"], new["f"], new["ts"], new["u"]))
    new = {k: v[order] for k, v in new.items()}
    base = carried_rows(state.rows)
    # (file, row) are placed later, and only where the whole log is saved again
    merged, from_new = _merge(base, new, len(full["u"]), later=("f", "r"))
    is_new = np.zeros(len(from_new), bool)
    is_new[np.flatnonzero(from_new)] = today[order]
    today_fr = {k: new[k][today[order]] for k in ("f", "r")}
    fr_base = {k: base[k] for k in ("f", "r")}  # the rest is in merged now
    fr_new = {k: new[k] for k in ("f", "r")}
    del today, order, new, base

    # listen ratios. A track with a late new stream (before the previous build's end): every
    # stream of it again, since a late one changes the ratio of every later carried stream.
    # Any other track with new streams: those only, on top of its carried streams' count and
    # sum (every carried stream is earlier than them).
    lr_q = merged.pop("lr_q")
    lr_ok = merged.pop("lr_ok")
    tr, ts, ms = merged["tr"], merged["ts"], merged["ms"]
    usable = listen_usable(tr >= 0, merged["et"], ms)
    fresh = usable & is_new
    late_track = np.zeros(len(full["tr"]) + 1, bool)
    late_track[tr[fresh & (ts < end)]] = True
    redo = np.flatnonzero(usable & late_track[tr])
    # a user's carried examples from the time of its first new row or changed ratio on
    stale_from = np.full(len(full["u"]), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(stale_from, merged["u"][is_new], ts[is_new])
    late_lr = 0
    if len(redo):
        o = redo[lex_order(tr[redo], ts[redo])]
        q, good = track_listen_ratios(tr[o], ts[o], ms[o])
        changed = o[~is_new[o] & ((lr_q[o] != q) | (lr_ok[o] != good))]
        late_lr = len(changed)
        np.minimum.at(stale_from, merged["u"][changed], ts[changed])
        lr_q[o], lr_ok[o] = q, good
    on_top = np.flatnonzero(fresh & ~late_track[tr])
    if len(on_top):
        kept = usable & ~is_new
        n_tr = len(full["tr"])
        base_n = np.bincount(tr[kept], minlength=n_tr)
        base_sum = np.bincount(tr[kept], weights=ms[kept], minlength=n_tr)
        o = on_top[lex_order(tr[on_top], ts[on_top])]
        lr_q[o], lr_ok[o] = track_listen_ratios(tr[o], ts[o], ms[o], base_n[tr[o]], base_sum[tr[o]])
    n_deltas = sum(d.num_rows for d in state.deltas) + n_today
    compact = late_lr > 0 or n_deltas > _COMPACT_SHARE * state.rows.num_rows
    delta, read_pos = None, None
    if compact:  # the whole log again, as a new base
        starts = np.concatenate([[0], np.cumsum(file_rows)])
        at = {k: _place(fr_base[k], fr_new[k], from_new) for k in ("f", "r")}
        read_pos = starts[at["f"]] + at["r"]
        del at
    else:
        mine = np.flatnonzero(is_new)
        rows = {k: merged[k][mine] for k in _ROWS.names if k not in ("lr_q", "lr_ok", "f", "r")}
        rows.update(today_fr)
        rows["lr_q"], rows["lr_ok"] = lr_q[mine].astype(np.int32), lr_ok[mine]
        folder = ws.feature_dir.state / str(state.meta["folder"])
        delta = _delta(
            folder, state, rows, full, seen, old_to_full, current, file_rows, lake, added
        )
    ev = assemble_log(
        (full["u"], full["a"], full["tr"]),
        merged,
        lr_q,
        lr_ok,
        config.stream_min_ms,
        users,
        artists,
    )
    moved = _accounts_changed(state.accounts, ev, old_to_full["u"])
    if delta is not None:
        delta.accounts, delta.events = _accounts_of(ev, delta.u_codes), len(ev.ts)
    stale = is_new | (ev.ts >= stale_from[ev.u])
    stale |= np.isin(ev.u, moved)
    carried = Carried(stale, end, state.meta.get("example_parts"))
    stats = {
        "mode": "incremental",
        "since_version": state.version,
        "files_read": len(added),
        "events_read": int(sum(file_rows[index[_rel(lake, p)]] for p in added)),
        "late_events": late,
        "carried_listen_ratios_changed": late_lr,
        "tracks_recomputed": int(late_track[:-1].sum()),
        "accounts_changed": len(moved),
        "state": "compacted" if compact else f"daily part {len(state.deltas) + 1}",
    }
    return Merged(ev, seen, current, file_rows, read_pos, stats, carried, delta)


def _delta(
    folder: Path,
    state: State,
    rows: dict[str, np.ndarray],
    full: dict[str, pa.Array],
    seen: dict[str, np.ndarray],
    old_to_full: dict[str, np.ndarray],
    current: list[Path],
    file_rows: np.ndarray,
    lake: Path,
    added: list[Path],
) -> Delta:
    """The state of a daily build that does not compact: the carried vocabularies and files
    with the new ones appended (so every carried code stays valid), and the day's rows
    (``rows``, coded against the build's vocabularies and read order) recoded to them."""
    vocab, u_codes = {}, np.zeros(0, np.int64)
    for k in _VOCABS:
        to_state = np.full(len(full[k]), -1, np.int64)
        to_state[old_to_full[k]] = np.arange(len(old_to_full[k]))
        extra = np.flatnonzero(np.asarray(seen[k], bool) & (to_state < 0))
        to_state[extra] = len(old_to_full[k]) + np.arange(len(extra))
        grown = full[k].take(pa.array(extra)).cast(pa.string())
        vocab[k] = pa.concat_arrays([state.vocab[k].cast(pa.string()), grown])
        codes = rows[k]
        rows[k] = np.where(codes >= 0, to_state[np.maximum(codes, 0)], -1).astype(np.int32)
        if k == "u":
            u_codes = np.concatenate([old_to_full[k], extra])
    where = {p: i for i, p in enumerate(state.files)}
    paths = list(state.files)
    for p in added:
        where[_rel(lake, p)] = len(paths)
        paths.append(_rel(lake, p))
    cur_to_state = np.array([where[_rel(lake, p)] for p in current], np.int32)
    cur_rows = np.asarray(file_rows, np.int64)
    counts = np.zeros(len(paths), np.int64)
    counts[cur_to_state] = cur_rows
    rows["f"] = cur_to_state[rows["f"]]
    return Delta(
        state_folder=folder,
        parts=list(state.meta["log_parts"]),
        vocab=vocab,
        files=paths,
        file_rows=counts,
        rows=rows,
        u_codes=u_codes,
    )


def _accounts_of(ev: EventLog, codes: np.ndarray) -> pa.Table:
    """The account fields (``_ACCOUNTS``) of the users ``codes`` (in ``ev``), in that order."""
    at = pa.array(codes)
    cols = {f: ev.users[f].take(at) for f in _ACCOUNT}
    cols["signup_ms"] = pa.array(ev.signup_ms).take(at)
    return pa.table(cols).cast(_ACCOUNTS)


def _accounts_changed(carried: pa.Table, ev: EventLog, to_full: np.ndarray) -> np.ndarray:
    """Codes (in ``ev``) of the carried users whose account fields differ now (a deleted or
    edited account): every example of theirs is rewritten."""
    at = pa.array(to_full)
    now = {f: ev.users[f].take(at) for f in _ACCOUNT}
    now["signup_ms"] = pa.array(ev.signup_ms).take(at)
    differs = np.zeros(len(to_full), bool)
    for f in _ACCOUNTS.names:
        a, b = carried[f], now[f]
        same = pc.fill_null(pc.equal(a, b), False).to_numpy(zero_copy_only=False)
        both_null = pc.and_(pc.is_null(a), pc.is_null(b)).to_numpy(zero_copy_only=False)
        differs |= ~(same | both_null)
    return to_full[differs]


def _identity(table: np.ndarray) -> bool:
    """Whether the code map ``table`` maps every code to itself (0, 1, 2, ...)."""
    return bool((table == np.arange(len(table), dtype=table.dtype)).all())


def _as_dict(values: pa.Array) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(
        pa.array(np.arange(len(values), dtype=np.int32)), values.cast(pa.string())
    ).cast(_DICT_TYPE)


def _merge(
    old: dict[str, np.ndarray],
    new: dict[str, np.ndarray],
    n_users: int,
    later: tuple[str, ...] = (),
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Two logs each sorted by (u, ts, f, r) -> one, and which of its rows are new. The new
    rows are few: each is placed by a binary search on the packed (user, time) key; a new row
    tied at the same (user, ms) with carried rows goes by (file, row) among them. The columns
    ``later`` are left out of the result (:func:`_place` places them when needed)."""
    n_old, n_new = len(old["ts"]), len(new["ts"])
    keep = [k for k in old if k not in later]
    if not n_new:
        return {k: old[k] for k in keep}, np.zeros(n_old, bool)
    if not n_old:
        return {k: new[k] for k in keep}, np.ones(n_new, bool)
    t0 = int(min(old["ts"].min(), new["ts"].min()))
    span = int(max(old["ts"].max(), new["ts"].max())) - t0 + 1
    if n_users * span >= 2**62:  # cannot pack: sort the concatenation (slow, exact)
        both = {k: np.concatenate([old[k], new[k]]) for k in old}
        order = np.lexsort((both["r"], both["f"], both["ts"], both["u"]))
        flag = np.r_[np.zeros(n_old, bool), np.ones(n_new, bool)][order]
        return {k: both[k][order] for k in keep}, flag
    k_old = old["u"].astype(np.int64) * span + (old["ts"] - t0)
    k_new = new["u"].astype(np.int64) * span + (new["ts"] - t0)
    pos = np.searchsorted(k_old, k_new, side="left")
    hi = np.searchsorted(k_old, k_new, side="right")
    tied = np.flatnonzero(hi > pos)
    if len(tied):  # (file, row) packed, of the few carried rows tied with a new one only
        fr_new = (new["f"].astype(np.int64) << 32) | new["r"].astype(np.int64)
        for j in tied.tolist():
            lo_j, hi_j = int(pos[j]), int(hi[j])
            fr_old = (old["f"][lo_j:hi_j].astype(np.int64) << 32) | old["r"][lo_j:hi_j]
            pos[j] += np.searchsorted(fr_old, fr_new[j])
    at_new = pos + np.arange(n_new)
    flag = np.zeros(n_old + n_new, bool)
    flag[at_new] = True
    return {k: _place(old[k], new[k], flag) for k in keep}, flag


def _place(old: np.ndarray, new: np.ndarray, flag: np.ndarray) -> np.ndarray:
    """One column of :func:`_merge`'s result: ``new`` at the rows ``flag`` marks, ``old`` in
    order around them."""
    merged = np.empty(len(flag), np.result_type(old, new))
    merged[~flag] = old  # a mask: faster than the carried rows' indices
    merged[flag] = new
    return merged
