"""``examples.parquet`` as a folder of one Parquet file per UTC day of ``event_ts``.

A training example never moves to another day, and a day falls wholly into one split (the
cutoffs are midnights), so a daily build rewrites only the days whose rows can differ from
the carried ones: the days of new events, the two days that change split as the cutoffs move
one day on, and the days of carried rows whose point-in-time state changed (a late event or
a carried stream's new listen ratio before them, a changed account). Every other day's file
is left as it is.

Readers need nothing special: ``pq.read_table(examples)`` reads the folder as one table,
files in name order (``YYYY-MM-DD.parquet``, so by day), rows by (user, time) within a day;
a stray ``.tmp-*`` file of a killed write is ignored. The last day (the one before ``end``)
always has a file, empty when it has no examples, so the folder always carries the schema.
Each file is replaced atomically; a reader during a build may see some days of the new build
and some of the previous one, as it may see some tables of each.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.atomic import write_table
from core.constants import DAY_MS
from data.features.config import FeatureConfig, split_cutoffs
from data.features.events import EventLog
from data.features.examples import build_examples, example_state, log_follows, split_of
from data.features.sort import stable_order
from data.features.user import positive_mask

SPLITS = ("train", "valid", "test")


def part_name(day: int) -> str:
    """The file of UTC day ``day`` (days since the epoch)."""
    return datetime.fromtimestamp(day * DAY_MS / 1000, tz=timezone.utc).strftime("%Y-%m-%d.parquet")


def listing(folder: Path) -> dict[str, list[int]]:
    """The folder's day files as ``{name: [size, mtime_ns]}`` (what a state records, to tell
    later whether the files are still the ones its build wrote)."""
    if not folder.is_dir():
        return {}
    return {
        p.name: [p.stat().st_size, p.stat().st_mtime_ns]
        for p in sorted(folder.glob("*.parquet"))
        if not p.name.startswith(".")
    }


def examples_by_split(ev: EventLog, config: FeatureConfig, cut: dict[str, int]) -> dict[str, int]:
    """Examples per split, from the log (no table needed): what ``meta.json`` reports."""
    p = np.flatnonzero(positive_mask(ev, config))
    code = (ev.ts[p] >= cut["valid"]).astype(np.int8) + (ev.ts[p] >= cut["test"])
    n = np.bincount(code, minlength=3)
    return {SPLITS[i]: int(n[i]) for i in range(3) if n[i]}


def changed_days(
    ev: EventLog,
    config: FeatureConfig,
    cut: dict[str, int],
    previous_end: int,
    stale: np.ndarray,
) -> set[int]:
    """The days whose examples can differ from the previous build's (which ended at
    ``previous_end``): the days of the ``stale`` log rows' positives, and the days whose
    split the new cutoffs change."""
    p = np.flatnonzero(positive_mask(ev, config) & stale)
    days = set(np.unique(ev.ts[p] // DAY_MS).tolist())
    before = split_cutoffs(previous_end - 1, config)
    lo = min(before["valid"], cut["valid"]) // DAY_MS
    hi = max(before["end"], cut["end"]) // DAY_MS
    for day in range(lo, hi):
        at = np.array([day * DAY_MS])
        if split_of(at, before["valid"], before["test"]) != split_of(at, cut["valid"], cut["test"]):
            days.add(day)
    return days


_BATCH_ROWS = 1 << 18  # examples built (and held) at a time: whole days up to about this
# rows whose user state (a few counts each) is found by one pass of whole-log prefix sums:
# that pass costs the same for one row as for all, so it is shared by several batches
_STATE_ROWS = 1 << 20


def day_tables(
    ev: EventLog,
    config: FeatureConfig,
    cut: dict[str, int],
    days: Iterable[int] | None = None,
    batch_rows: int | None = None,
) -> tuple[Iterator[dict[str, pa.Table]], set[str]]:
    """The examples of ``days`` (None: every day) as batches of ``{file name: table}`` (whole
    days, about ``batch_rows`` (default ``_BATCH_ROWS``) examples a batch, each built when the
    iterator reaches it, so only the batch being written and the next one are held), and the
    names of every day file the folder holds after this build (the days with examples, and the
    last day's, empty if it has none)."""
    p = np.flatnonzero(positive_mask(ev, config))
    day = ev.ts[p] // DAY_MS
    last = (cut["end"] - 1) // DAY_MS
    d0 = int(day.min()) if len(day) else 0
    per_day = np.bincount(day - d0) if len(day) else np.zeros(0, np.int64)
    all_days = set((np.flatnonzero(per_day) + d0).tolist()) | {last}
    chosen = sorted(all_days if days is None else all_days & set(days))
    if days is not None:  # a few days: their rows only (days of no examples have none)
        wanted = np.zeros(len(per_day) + 1, bool)
        inside = [d - d0 for d in chosen if 0 <= d - d0 < len(per_day)]
        wanted[inside] = True
        todo = wanted[day - d0]
        p, day = p[todo], day[todo]
    order = stable_order(day - d0)  # by day, then log order
    p, day = p[order], day[order]
    bounds = np.searchsorted(day, [*chosen, last + 1])
    budget = _BATCH_ROWS if batch_rows is None else batch_rows
    return _batches(ev, config, cut, p, chosen, bounds, budget), {part_name(d) for d in all_days}


def _batches(
    ev: EventLog,
    config: FeatureConfig,
    cut: dict[str, int],
    p: np.ndarray,
    chosen: list[int],
    bounds: np.ndarray,
    batch_rows: int,
) -> Iterator[dict[str, pa.Table]]:
    follows = log_follows(ev)
    state, s_lo, s_hi = None, 0, 0  # the user state of rows p[s_lo:s_hi], found at once
    i = 0
    while i < len(chosen):
        j = i + 1  # whole days up to the budget, at least one
        while j < len(chosen) and bounds[j + 1] - bounds[i] <= batch_rows:
            j += 1
        lo, hi = bounds[i], bounds[j]
        if state is None or hi > s_hi:  # whole batches up to _STATE_ROWS rows, at least one
            k = j
            while k < len(chosen) and bounds[k + 1] - lo <= max(_STATE_ROWS, hi - lo):
                k += 1
            state = None  # the previous one is freed before the next is found
            s_lo, s_hi = lo, bounds[k]
            state = example_state(ev, config, p[s_lo:s_hi], follows)
        mine = state.slice(lo - s_lo, hi - s_lo)
        table = build_examples(ev, config, cut["valid"], cut["test"], state=mine)
        yield {
            part_name(chosen[k]): table.slice(bounds[k] - lo, bounds[k + 1] - bounds[k])
            for k in range(i, j)
        }
        del table, mine
        i = j


def write_days(folder: Path, tables: dict[str, pa.Table], names: set[str]) -> None:
    """Write ``tables`` (day file name -> rows) into ``folder`` and remove the day files not
    in ``names`` (days left without examples); a single-file ``examples.parquet`` of an
    older build is replaced by the folder."""
    if folder.is_file():
        folder.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.parquet"):
        if old.name not in names and not old.name.startswith("."):
            old.unlink()
    for name, table in tables.items():
        write_table(folder / name, table.combine_chunks())  # one layout, however built


def read_examples(path: Path, columns: Iterable[str] | None = None) -> pa.Table:
    """``examples.parquet``, a folder of day files or one file, in the order a single-file
    build wrote it: the feature log's, by user, then time, then lake read order.

    Day files read back by day, so the rows are put back in that order with one stable sort
    by (``user_key``, ``event_ts``): rows of one user at one time lie in one day's file, in
    log order already (a file in log order is left as it is). Training shuffles with a fixed
    seed over row positions, so the same examples in another order would train another model;
    with this the layout on disk changes nothing downstream."""
    cols = None if columns is None else list(columns)
    keys = [("user_key", "ascending"), ("event_ts", "ascending")]
    extra = [] if cols is None else [k for k, _ in keys if k not in cols]
    table = pq.read_table(path, columns=None if cols is None else cols + extra)
    order = pc.sort_indices(table, sort_keys=keys)  # Arrow's sort_indices is stable
    table = table.take(order)
    return table.drop_columns(extra) if extra else table
