"""Atomic file writes: write a temp file beside the target, fsync, then rename.

A reader never sees a half-written file, and a job killed mid-write leaves only a stray
``.tmp-*`` file that the next run overwrites or ignores.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path in the target's folder; on success rename it over ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{target.name}-", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(target: str | os.PathLike[str], payload: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(payload)


def write_json(target: str | os.PathLike[str], obj: Any) -> None:
    write_bytes(target, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


# rows per Parquet row group of every table written here: a writer that streams (the Spark
# driver, :func:`write_batches`) or a reader of one group holds 128 Ki rows (about 65 MB of
# examples, 170 MB of user rows), not pyarrow's default 1 Mi (a 100 M-event build's driver
# held several GB)
ROW_GROUP_ROWS = 128 * 1024


def write_table(target: str | os.PathLike[str], table: pa.Table) -> None:
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_ROWS)


def write_batches(
    target: str | os.PathLike[str],
    batches: Iterable[pa.RecordBatch | pa.Table],
    schema: pa.Schema,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> int:
    """Stream ``batches`` into one Parquet file, atomically; returns its rows.

    The file is the one :func:`write_table` writes for all the rows as one table (same row
    groups, same bytes): rows are gathered into row groups of ``row_group_rows`` and each is
    written as one contiguous chunk. So a caller holds one row group at a time, never the
    whole table."""
    rows = 0
    with atomic_path(target) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as out:
        held: list[pa.Table] = []
        n_held = 0

        def flush(n: int) -> None:
            # one row group as one chunk (the writer's pages follow its input's chunks),
            # combined a column at a time, each column's pieces let go once copied: the peak
            # is the group plus its largest column, not the group twice
            nonlocal held, n_held
            table = pa.concat_tables(held)
            group, rest = table.slice(0, n), table.slice(n)
            held, n_held = ([rest] if rest.num_rows else []), rest.num_rows
            pieces = [group.column(i).chunks for i in range(group.num_columns)]
            del table, group
            columns = []
            for i, field in enumerate(schema):
                chunks, pieces[i] = pieces[i], []
                columns.append(pa.chunked_array(chunks, field.type).combine_chunks())
                del chunks
            out.write_table(
                pa.Table.from_arrays(columns, schema=schema), row_group_size=row_group_rows
            )

        for batch in batches:
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            if not table.num_rows:
                continue
            held.append(table.cast(schema))
            n_held += table.num_rows
            rows += table.num_rows
            while n_held >= row_group_rows:
                flush(row_group_rows)
        if n_held or not rows:
            if not rows:
                held = [schema.empty_table()]
            flush(n_held)
    return rows
