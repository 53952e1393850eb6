"""``core.atomic.write_batches``: streamed rows give the file ``write_table`` gives."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.atomic import write_batches, write_table


def _table(n: int) -> pa.Table:
    rng = np.random.default_rng(0)
    lists = [list(range(int(k))) for k in rng.integers(0, 40, n)]
    return pa.table(
        {
            "i": pa.array(np.arange(n)),
            "followed": pa.array(lists, pa.list_(pa.int32())),
            "name": pa.array([f"ar{i % 97}" for i in range(n)]),
            "ts": pa.array(np.arange(n) * 1000, pa.timestamp("ms", tz="UTC")),
        }
    )


@pytest.mark.parametrize(("rows", "group", "chunk"), [(5000, 1000, 333), (5000, 1024, 5000)])
def test_streamed_batches_make_the_same_file_as_one_table(tmp_path, rows, group, chunk):
    table = _table(rows)
    pq.write_table(table, tmp_path / "whole.parquet", compression="zstd", row_group_size=group)
    n = write_batches(tmp_path / "streamed.parquet", table.to_batches(chunk), table.schema, group)
    assert n == rows
    assert (tmp_path / "whole.parquet").read_bytes() == (tmp_path / "streamed.parquet").read_bytes()
    assert pq.ParquetFile(tmp_path / "streamed.parquet").num_row_groups == -(-rows // group)


def test_default_row_groups_and_an_empty_stream_match_write_table(tmp_path):
    table = _table(3000)
    write_table(tmp_path / "whole.parquet", table)
    write_batches(tmp_path / "streamed.parquet", table.to_batches(250), table.schema)
    assert (tmp_path / "whole.parquet").read_bytes() == (tmp_path / "streamed.parquet").read_bytes()
    write_table(tmp_path / "empty.parquet", table.schema.empty_table())
    assert write_batches(tmp_path / "none.parquet", iter(()), table.schema) == 0
    assert (tmp_path / "empty.parquet").read_bytes() == (tmp_path / "none.parquet").read_bytes()


def test_a_failed_stream_leaves_the_previous_file(tmp_path):
    target = tmp_path / "t.parquet"
    write_table(target, _table(10))

    def broken():
        yield from _table(100).to_batches(10)
        raise RuntimeError("the source died")

    with pytest.raises(RuntimeError, match="source died"):
        write_batches(target, broken(), _table(1).schema, row_group_rows=20)
    assert pq.read_table(target).num_rows == 10
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_row_groups_past_one_page_are_written_from_one_chunk(tmp_path):
    """Parquet's pages follow the writer's input chunks: a row group spanning many pages
    (here ~8 MB of lists) must be handed over as one chunk to give ``write_table``'s bytes."""
    rng = np.random.default_rng(1)
    n = 100_000
    offsets = np.concatenate([[0], np.cumsum(rng.integers(0, 40, n))]).astype(np.int32)
    values = pa.array(rng.integers(0, 1 << 30, int(offsets[-1])), pa.int32())
    table = pa.table({"followed": pa.ListArray.from_arrays(pa.array(offsets), values)})
    pq.write_table(table, tmp_path / "whole.parquet", compression="zstd", row_group_size=60_000)
    write_batches(tmp_path / "streamed.parquet", table.to_batches(777), table.schema, 60_000)
    assert (tmp_path / "whole.parquet").read_bytes() == (tmp_path / "streamed.parquet").read_bytes()
