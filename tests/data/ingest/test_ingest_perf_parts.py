"""The fast paths of ingest agree with the reference implementations they replace."""

from __future__ import annotations

import gzip
import zlib

import numpy as np
import pyarrow as pa
import pytest

from data.ingest.ops import Pseudonyms, decompress, first_occurrences
from data.ingest.parse import parse_object
from data.pii import pseudonymise
from tests.data.ingest.ingest_helpers import good_event, line


@pytest.mark.parametrize("key", [b"short", b"k" * 64, b"a-key-longer-than-one-sha256-block-" * 3])
def test_pseudonyms_match_pii_pseudonymise(key):
    ids = ["user-1", "user-2", "user-1", "é-unicode", ""]
    assert Pseudonyms(key)(ids) == [pseudonymise(u, key) for u in ids]


def test_first_occurrences_marks_first_copies_in_row_order():
    first, ids = first_occurrences(pa.array(["b", "a", "b", "c", "a", "d"]))
    assert first.tolist() == [True, True, False, True, False, True]
    assert ids.to_pylist() == ["b", "a", "c", "d"]
    empty, none = first_occurrences(pa.array([], pa.string()))
    assert len(empty) == 0 and len(none) == 0


def test_decompress_single_and_multi_member_and_corrupt():
    body = b"".join(line(good_event(i)).encode() + b"\n" for i in range(20))
    assert decompress("a.jsonl.gz", gzip.compress(body)) == body
    two = gzip.compress(body[:100]) + gzip.compress(body[100:])
    assert decompress("a.jsonl.gz", two) == body  # several gzip members, as gzip reads them
    assert decompress("a.jsonl", body) == body
    with pytest.raises((EOFError, zlib.error, OSError)):
        decompress("a.jsonl.gz", gzip.compress(body)[:-12])
    bad_crc = bytearray(gzip.compress(body))
    bad_crc[-6] ^= 0xFF
    with pytest.raises((EOFError, zlib.error, OSError)):
        decompress("a.jsonl.gz", bytes(bad_crc))


def test_parsed_lines_are_verbatim_with_and_without_final_newline():
    raw = [line(good_event(i)).encode() for i in range(5)]
    for data in (b"\n".join(raw) + b"\n", b"\n".join(raw)):
        parsed = parse_object(data)
        assert parsed.n_lines == 5 and parsed.table.num_rows == 5
        assert parsed.lines(np.array([1, 3, 5])) == [raw[0], raw[2], raw[4]]
    blank_inside = parse_object(b"\n".join([raw[0], b" \t", raw[1]]) + b"\n")
    assert blank_inside.rejected.reason == ["empty_line"] and blank_inside.n_lines == 3
    assert blank_inside.raw_line(3) == raw[1]


def test_objects_with_no_good_rows_or_no_lines(tmp_path):
    from core.workspace import Workspace
    from data.ingest.job import ingest_store
    from data.ingest.objectstore import ObjectStore
    from tests.data.ingest.ingest_helpers import KEY, NOW, lookups, write_object

    ws = Workspace(tmp_path)
    write_object(tmp_path, "dt=2025-03-01/empty.jsonl.gz", [])
    write_object(
        tmp_path, "dt=2025-03-01/bad.jsonl.gz", ["{oops", line(good_event(1, user_id=None))]
    )
    m = ingest_store(ws, ObjectStore(ws.raw), lookups(), key=KEY, now=NOW)
    assert (m["accepted"], m["duplicates"]) == (0, 0)
    # the empty object (a lone newline) has no lines at all
    assert m["quarantined_by_reason"] == {"not_json": 1, "missing_field:user_id": 1}
    assert m["read"] == 2


def test_pseudonyms_grow_across_objects():
    p = Pseudonyms(b"key-0123456789")
    assert p.keys(pa.array(["a", "b"])).to_pylist() == [pseudonymise(u, p.key) for u in "ab"]
    got = p.keys(pa.array(["c", "b", "a", "d"])).to_pylist()  # two known, two new
    assert got == [pseudonymise(u, p.key) for u in "cbad"]
    assert len(p.keys(pa.array([], pa.string()))) == 0
