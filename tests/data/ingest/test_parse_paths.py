"""The polars fast path of ``parse_object`` gives exactly what Arrow's line-by-line path gives.

Polars accepts some lines ``pyarrow.json`` rejects (a field given twice, a number or object in
a string field, a lone surrogate); the fast path must notice every one of them and hand the
object to Arrow, so accepted rows and reasons never depend on which parser ran.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from data.ingest import parse
from data.ingest.parse import _arrow_parse, _parse_by_lines, _polars_parse, parse_object, scan
from tests.data.ingest.ingest_helpers import BREAKERS, good_event, line


@pytest.fixture(autouse=True)
def fast_path_for_any_size(monkeypatch):
    """These objects are small: let the fast path take them as it takes large ones."""
    monkeypatch.setattr(parse, "POLARS_MIN_BYTES", 0)


def _compact(event: dict) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def _tail(event: dict, extra: bytes) -> bytes:
    return _compact(event)[:-1] + extra + b"}"


# lines the fast path must refuse: polars parses them without an error although Arrow rejects
# them (a field twice, a non-string in a string field, a lone surrogate), or the fast path's
# accounting cannot vouch for them (escapes, unknown fields, null members)
REFUSED = {
    "dup_field_last": lambda e: _tail(e, b',"event_id":"other"'),
    "dup_field_null": lambda e: _tail(e, b',"country":null'),
    "dup_field_spaced": lambda e: _tail(e, b' , "device" : "web"'),
    "int_in_string": lambda e: _compact({**e, "user_id": 7}),
    # the quotes balance here (a key more, two fewer around 7): only the colons tell
    "dup_and_int_in_string": lambda e: _tail({**e, "user_id": 7}, b',"country":null'),
    "bool_in_string": lambda e: _compact({**e, "country": True}),
    "empty_object_in_string": lambda e: _compact({**e, "device": {}}),
    "object_in_string": lambda e: _compact({**e, "device": {"a": 1}}),
    "array_in_string": lambda e: _compact({**e, "device": ["x", 1]}),
    "lone_surrogate": lambda e: _compact(e).replace(b'"DE"', b'"\\ud800"'),
    "escaped_key": lambda e: _compact(e).replace(b'"device"', b'"dev\\u0069ce"'),
    "escaped_value": lambda e: _compact({**e, "country": 'D"E\u00e9'}),
    "unknown_field": lambda e: _tail(e, b',"app":{"v":[1,2]}'),
    "null_member": lambda e: _compact({**e, "track_id": None}),
    "two_objects_cr": lambda e: _compact(e) + b"\r" + _compact(e),
    "cr_only": lambda e: b"\r",
}
# odd but plain lines the fast path keeps
KEPT = {
    "spaced": lambda e: json.dumps(e, indent=None).encode(),
    "colon_in_value": lambda e: _compact({**e, "request_id": "a:b", "device": "{a:[1]}"}),
    "missing_fields": lambda e: _compact({"event_id": e["event_id"], "position": 3}),
}


def _swap(old: bytes, new: bytes):
    return lambda e: _compact(e).replace(old, new, 1)


def _position(raw: bytes):
    return lambda e: _compact({**e, "position": 3}).replace(b'"position":3', b'"position":' + raw)


# lines where either parser might bend a rule the other keeps; whichever path runs, each must
# get Arrow's line-by-line fate (checked against the reference below, not against a path)
HOSTILE = {
    "tab_in_string": _swap(b'"DE"', b'"D\tE"'),
    "control_in_string": _swap(b'"DE"', b'"D\x01E"'),
    "del_in_string": _swap(b'"DE"', b'"D\x7fE"'),
    "invalid_utf8": _swap(b'"DE"', b'"D\xffE"'),
    "overlong_utf8": _swap(b'"DE"', b'"D\xc0\xafE"'),
    "utf8_surrogate": _swap(b'"DE"', b'"D\xed\xa0\x80E"'),
    "single_quotes": _swap(b'"DE"', b"'DE'"),
    "float_in_int": _position(b"3.5"),
    "whole_float_in_int": _position(b"3.0"),
    "exponent_in_int": _position(b"1E2"),
    "string_in_int": _position(b'"3"'),
    "bool_in_int": _position(b"true"),
    "int_past_int64": _position(str(2**70).encode()),
    "leading_zero": _position(b"03"),
    "plus_sign": _position(b"+3"),
    "nan": _position(b"NaN"),
    "trailing_comma": lambda e: _compact(e)[:-1] + b",}",
    "byte_order_mark": lambda e: b"\xef\xbb\xbf" + _compact(e),
    "array_line": lambda e: b"[" + _compact(e) + b"]",
    "scalar_line": lambda e: b"3",
    "string_line": lambda e: b'"a:b"',
    "null_line": lambda e: b"null",
    "empty_object": lambda e: b"{}",
    "spaces_only": lambda e: b"   ",
    "comment_after": lambda e: _compact(e) + b" // a comment",
    "two_objects_space": lambda e: _compact(e) + b" " + _compact(e),
    "key_case": _swap(b'"position"', b'"Position"'),
    "object_and_int_in_strings": lambda e: _compact({**e, "device": {"a": "b"}, "country": 5}),
}
CASES = {**{k: make for k, (make, _) in BREAKERS.items()}, **REFUSED, **KEPT, **HOSTILE}


def _reference(data: bytes):
    """Arrow line by line: the path every line's fate is defined by."""
    return _parse_by_lines(data[:-1] if data.endswith(b"\n") else data)


def _assert_same(data: bytes) -> None:
    parsed = parse_object(data)
    table, line_no, rejected = _reference(data)
    assert parsed.table.equals(table)
    assert parsed.line_no.tolist() == line_no.tolist()
    for name in ("line_no", "reason", "detail", "line"):
        assert getattr(parsed.rejected, name) == getattr(rejected, name)


def test_clean_object_takes_the_fast_path_and_matches_arrow():
    events = [good_event(i) for i in range(300)]
    for render in (_compact, lambda e: line(e).encode()):
        data = b"\n".join(render(e) for e in events) + b"\n"
        fast = _polars_parse(data, scan(data, len(data) - 1))
        assert fast is not None  # else this file would test nothing
        assert fast.equals(_arrow_parse(data))
        _assert_same(data)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_one_odd_line_among_clean_ones(kind):
    raw = [_compact(good_event(i)) for i in range(40)]
    raw[17] = CASES[kind](good_event(17))
    data = b"\n".join(raw) + b"\n"
    counted = scan(data, len(data) - 1)
    if kind in REFUSED:
        assert _polars_parse(data, counted) is None  # the fast path hands it to Arrow
    if kind in KEPT:
        assert _polars_parse(data, counted) is not None
    _assert_same(data)


def test_mixed_objects_agree_with_arrow_line_by_line():
    rng = random.Random(18)
    kinds = sorted(CASES)
    for _ in range(40):
        raw = []
        for i in range(rng.randint(1, 60)):
            event = good_event(i, event_id=f"ev-{rng.randint(0, 30)}")
            odd = rng.random() < 0.15
            raw.append(CASES[rng.choice(kinds)](event) if odd else _compact(event))
        data = b"\n".join(raw) + (b"\n" if rng.random() < 0.5 else b"")
        _assert_same(data)


def test_scan_counts_across_blocks():
    data = (b'{"a":"b:c"}\n' * 50_000)[:-1]  # several scan blocks
    counted = scan(data, len(data))
    assert counted.quotes == data.count(b'"') and counted.colons == data.count(b":")
    newlines = [i + 1 for i, byte in enumerate(data) if byte == ord("\n")]
    assert counted.starts.tolist() == [0, *newlines]
    assert len(scan(b"", 0).starts) == 0


def test_ingest_writes_the_same_files_on_either_path(tmp_path, monkeypatch):
    from core.workspace import Workspace
    from data.ingest.job import ingest_store
    from data.ingest.objectstore import ObjectStore
    from tests.data.ingest.ingest_helpers import KEY, NOW, lookups, write_object

    clean = [_compact(good_event(i)) for i in range(500)]
    mixed = [CASES[k](good_event(i + 500)) for i, k in enumerate(sorted(CASES))] + clean[:50]
    files = {}
    for name, threshold in (("fast", 0), ("arrow", 1 << 62)):
        monkeypatch.setattr(parse, "POLARS_MIN_BYTES", threshold)
        root = tmp_path / name
        write_object(root, "dt=2025-03-01/part-0.jsonl.gz", clean)
        write_object(root, "dt=2025-03-02/part-0.jsonl.gz", mixed)
        ws = Workspace(root)
        manifest = ingest_store(ws, ObjectStore(ws.raw), lookups(), key=KEY, now=NOW)
        written = sorted(p for p in root.rglob("*.parquet") if "raw" not in p.parts)
        files[name] = (
            {str(p.relative_to(root)): p.read_bytes() for p in written},
            {k: v for k, v in manifest.items() if k not in ("seconds", "events_per_s", "store")},
        )
    body = b"\n".join(clean) + b"\n"
    assert _polars_parse(body, scan(body, len(body) - 1)) is not None  # the fast path ran
    assert files["fast"] == files["arrow"]
    assert files["fast"][1]["duplicates"] == 50 and files["fast"][1]["quarantined"] > 30


def test_inner_counts_refuse_bytes_under_a_null():
    import pyarrow as pa

    from data.ingest.parse import RAW_PARSE_SCHEMA, _inner_counts

    clean = parse_object(_compact(good_event(1)) + b"\n").table
    assert _inner_counts(clean) is not None
    offsets = pa.py_buffer(np.array([0, 3, 6], dtype=np.int32).tobytes())
    validity = pa.py_buffer(np.packbits([1, 0], bitorder="little").tobytes())
    hidden = pa.Array.from_buffers(pa.string(), 2, [validity, offsets, pa.py_buffer(b'a:""::')])
    assert hidden.null_count == 1  # a null slot holding '"::' Arrow allows, polars never writes
    table = pa.table(
        {
            n: hidden if n == "device" else pa.nulls(2, f.type)
            for n, f in zip(RAW_PARSE_SCHEMA.names, RAW_PARSE_SCHEMA, strict=True)
        }
    )
    assert _inner_counts(table) is None
