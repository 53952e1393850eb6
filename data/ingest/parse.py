"""Raw JSON lines -> an Arrow table, fast, with an exact reason for every line that fails.

The fast path parses a whole decompressed object (of at least :data:`POLARS_MIN_BYTES`) in one
call to polars' ``read_ndjson`` with the explicit schema (no Python per line), and keeps the
result only where it is certain that ``pyarrow.json`` (the reference parser) would give the
same table: :func:`_polars_parse`. Otherwise the object is parsed in one call to
``pyarrow.json``, and when that fails, or when rows and lines do not pair up one to one (blank
lines, two objects on one line), the object is split into lines and parsed in chunks. In a
chunk that fails, each line is screened with orjson plus a per-field type check
(:func:`screen_line`), which names the reason of every line both parsers reject; the rest is
parsed by Arrow again and bisected only if it still fails (duplicate keys). Accepted lines
always come out as Arrow parses them, so a line's fate does not depend on its neighbours or on
the path that parsed it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from data.schemas import RAW_PARSE_SCHEMA

_INT_RANGE = {
    pa.int32(): (-(2**31), 2**31 - 1),
    pa.int64(): (-(2**63), 2**63 - 1),
}
_READ = pj.ReadOptions(use_threads=False, block_size=64 << 20)  # one block per object
_PARSE = pj.ParseOptions(explicit_schema=RAW_PARSE_SCHEMA, unexpected_field_behavior="ignore")
CHUNK_LINES = 4096


@dataclass
class Rejected:
    """Lines rejected before row validation: parallel lists, line numbers 1-based."""

    line_no: list[int] = field(default_factory=list)
    reason: list[str] = field(default_factory=list)
    detail: list[str] = field(default_factory=list)
    line: list[str] = field(default_factory=list)

    def add(self, line_no: int, reason: str, detail: str, raw: bytes) -> None:
        self.line_no.append(line_no)
        self.reason.append(reason)
        self.detail.append(detail)
        self.line.append(raw.decode("utf-8", errors="backslashreplace"))

    def __len__(self) -> int:
        return len(self.line_no)


@dataclass
class Parsed:
    table: pa.Table  # RAW_PARSE_SCHEMA, one row per parsed line
    line_no: np.ndarray  # (R,) int64, the 1-based line each row came from
    rejected: Rejected
    n_lines: int  # lines read (a final newline does not start a line)
    data: bytes  # the decompressed object as read (not copied)
    starts: np.ndarray  # (n_lines,) int64 byte offset in ``data`` where each line starts
    end: int  # len(data) without a final newline

    def lines(self, line_nos: np.ndarray | list[int]) -> list[bytes]:
        """The verbatim text of the given 1-based lines (for quarantine; only bad lines)."""
        ends = np.empty(len(self.starts), dtype=np.int64)
        ends[:-1] = self.starts[1:] - 1
        ends[-1:] = self.end
        data, starts = self.data, self.starts
        return [data[starts[n - 1] : ends[n - 1]] for n in np.asarray(line_nos, dtype=np.int64)]

    def raw_line(self, line_no: int) -> bytes:
        return self.lines([line_no])[0]


def raw_lines(body: bytes) -> list[bytes]:
    return body.split(b"\n") if body else []


_NEWLINE, _QUOTE, _COLON = ord("\n"), ord('"'), ord(":")
_SCAN_BLOCK = 1 << 18  # bytes compared at a time: the masks stay in cache


@dataclass(frozen=True)
class Scan:
    """One pass over ``data[:end]``: where its lines start, and its quotes and colons (the fast
    path's accounting, :func:`_polars_parse`)."""

    starts: np.ndarray  # (L,) int64 byte offsets of the lines (empty when ``end`` is 0)
    quotes: int
    colons: int


def scan(data: bytes, end: int) -> Scan:
    if not end:
        return Scan(np.zeros(0, dtype=np.int64), 0, 0)
    buf = np.frombuffer(data, np.uint8, count=end)
    mask = np.empty(min(end, _SCAN_BLOCK), dtype=bool)
    quotes = colons = 0
    starts = [np.zeros(1, dtype=np.int64)]
    for lo in range(0, end, _SCAN_BLOCK):
        block = buf[lo : lo + _SCAN_BLOCK]
        out = mask[: len(block)]
        quotes += int(np.count_nonzero(np.equal(block, _QUOTE, out=out)))
        colons += int(np.count_nonzero(np.equal(block, _COLON, out=out)))
        starts.append(np.flatnonzero(np.equal(block, _NEWLINE, out=out)) + (lo + 1))
    return Scan(np.concatenate(starts), quotes, colons)


def _has_blank_line(data: bytes, starts: np.ndarray, end: int) -> bool:
    """Whether any line is empty or whitespace only (vectorised: only lines that do not
    start with ``{`` are looked at in Python)."""
    buf = np.frombuffer(data, np.uint8, count=end)
    heads = np.zeros(len(starts), dtype=np.uint8)
    inside = starts < end
    heads[inside] = buf[starts[inside]]
    for i in np.flatnonzero(heads != ord("{")):
        stop = starts[i + 1] - 1 if i + 1 < len(starts) else end
        if not data[starts[i] : stop].strip():
            return True
    return False


def _arrow_parse(data: bytes) -> pa.Table:
    table = pj.read_json(io.BytesIO(data), read_options=_READ, parse_options=_PARSE)
    if not data.isascii():  # the JSON reader does not check UTF-8 of string values
        table.validate(full=True)
    return table


# field -> None for strings, (low, high) for integers; precomputed for the per-line screen
_FIELD_RULES = {
    f.name: None if pa.types.is_string(f.type) else _INT_RANGE[f.type] for f in RAW_PARSE_SCHEMA
}


def _type_problem(name: str, value: object) -> str | None:
    if value is None:
        return None
    bounds = _FIELD_RULES[name]
    if bounds is None:
        return (
            None if isinstance(value, str) else f"{name} is {type(value).__name__}, expected string"
        )
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{name} is {type(value).__name__}, expected integer"
    if not bounds[0] <= value <= bounds[1]:
        return f"{name}={value} is outside the {RAW_PARSE_SCHEMA.field(name).type} range"
    return None


_UNCERTAIN = ("64-bit", "surrogate", "recursion")  # orjson stricter than Arrow: Arrow decides


def screen_line(raw: bytes) -> tuple[str, str] | None:
    """(reason, detail) if ``raw`` breaks the contract in a way both parsers agree on, else None.

    Used on the lines of a chunk Arrow rejected. None means "let Arrow decide": the line is
    parsed again with its clean neighbours, exactly as in the fast path. Invalid UTF-8 only
    matters inside a contract field (Arrow ignores unknown fields), so it is checked there.
    """
    try:
        text, bad_utf8 = raw.decode("utf-8"), False
    except UnicodeDecodeError:
        text, bad_utf8 = raw.decode("utf-8", errors="replace"), True
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return None if any(u in str(exc) for u in _UNCERTAIN) else ("not_json", str(exc))
    if not isinstance(obj, dict):
        return "not_object", f"a JSON {type(obj).__name__}, expected an object"
    if bad_utf8:
        for name in RAW_PARSE_SCHEMA.names:
            if isinstance(obj.get(name), str) and "\ufffd" in obj[name]:
                return "not_utf8", f"{name} is not valid UTF-8"
    for name in _FIELD_RULES:
        if name in obj:
            problem = _type_problem(name, obj[name])
            if problem:
                return f"wrong_type:{name}", problem
    return None


def classify_line(raw: bytes, arrow_error: str) -> tuple[str, str]:
    """(reason, detail) for one non-blank line that Arrow could not parse as one object."""
    screened = screen_line(raw)
    if screened:
        return screened
    if "specified twice" in arrow_error:
        return "duplicate_field", arrow_error
    if "JSON values on" in arrow_error or "parse error" in arrow_error:
        return "not_json", arrow_error
    return "unparseable", arrow_error


# below this, polars' fixed cost per call (~1 ms) outweighs its speed: Arrow parses the object
# (and a process that only parses small batches, the API's, never imports polars)
POLARS_MIN_BYTES = 1 << 20
_STRING_FIELDS = [f.name for f in RAW_PARSE_SCHEMA if pa.types.is_string(f.type)]


@cache
def _polars_schema() -> dict:
    import polars as pl

    types = {pa.string(): pl.String, pa.int32(): pl.Int32, pa.int64(): pl.Int64}
    return {f.name: types[f.type] for f in RAW_PARSE_SCHEMA}


def _polars_parse(data: bytes, counted: Scan) -> pa.Table | None:
    """The object as polars parses it, or None unless ``pyarrow.json`` surely gives the same.

    The two agree on syntax, UTF-8 and integer fields (polars is the stricter: what it rejects
    goes to Arrow). Polars alone accepts (a) a schema field given twice on a line (the last
    wins) and (b) a number, boolean, object or array in a string field (it writes the value's
    JSON as the string; same colons and quotes as the source, tested), and it reads escapes
    Arrow rejects (lone surrogates). So the result is kept only when the object has no
    backslash (no escapes at all) and its colons and quotes are all accounted for:

    * every member has one colon outside strings: ``colons == members + colons inside string
      values`` leaves no member besides one per non-null value of a schema field (no repeated
      field, no unknown or null member; those only add colons);
    * then every member's key has 2 quotes, a string value 2, and a value of another type
      written as a string has 2 fewer in the source than counted, so ``quotes == 2 * members
      + 2 * string values + quotes inside string values`` leaves no such value.

    Objects with escapes, unknown fields or explicit nulls take Arrow's path (same result).
    """
    import polars as pl

    if b"\\" in data:
        return None
    try:
        frame = pl.read_ndjson(data, schema=_polars_schema())
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException):
        return None  # Arrow's path names the failing lines
    if frame.height != len(counted.starts):  # blank lines: polars skips them
        return None
    # one chunk per column, as Arrow's reader gives (polars reads in ~1,600-row chunks, which
    # would slow every later filter, take and write); large_string -> string: offsets only
    table = frame.rechunk().to_arrow(compat_level=pl.CompatLevel.oldest()).cast(RAW_PARSE_SCHEMA)
    members = sum(table.num_rows - col.null_count for col in table.columns)
    strings = sum(table.num_rows - table[name].null_count for name in _STRING_FIELDS)
    inner = _inner_counts(table)
    if inner is None:
        return None
    inner_colons, inner_quotes = inner
    if counted.colons != members + inner_colons:
        return None
    if counted.quotes != 2 * (members + strings) + inner_quotes:
        return None
    return table


def _inner_counts(table: pa.Table) -> tuple[int, int] | None:
    """(colons, quotes) inside the values of the string fields (None: a null slot holds bytes,
    which would be counted; Arrow allows it, polars does not write it)."""
    colons = quotes = 0
    for name in _STRING_FIELDS:
        for chunk in table[name].chunks:
            if not len(chunk):
                continue
            bounds = np.frombuffer(
                chunk.buffers()[1], np.int32, count=len(chunk) + 1, offset=chunk.offset * 4
            )
            if chunk.null_count:  # the values' bytes must be all the bytes between the bounds
                held = pc.sum(pc.binary_length(chunk)).as_py() or 0
                if held != bounds[-1] - bounds[0]:
                    return None
            if bounds[-1] == bounds[0]:
                continue
            values = np.frombuffer(chunk.buffers()[2], np.uint8)[bounds[0] : bounds[-1]]
            colons += int(np.count_nonzero(values == _COLON))
            quotes += int(np.count_nonzero(values == _QUOTE))
    return colons, quotes


def parse_object(data: bytes) -> Parsed:
    """Parse one decompressed raw object; every line ends up in ``table`` or ``rejected``."""
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    counted = scan(data, end)
    starts = counted.starts
    n_lines = len(starts)
    if n_lines and len(data) >= POLARS_MIN_BYTES:
        table = _polars_parse(data, counted)
        if table is not None:
            line_no = np.arange(1, n_lines + 1, dtype=np.int64)
            return Parsed(table, line_no, Rejected(), n_lines, data, starts, end)
    if n_lines and not _has_blank_line(data, starts, end):
        try:
            table = _arrow_parse(data)  # a final newline is fine for Arrow: no copy
        except (pa.ArrowInvalid, UnicodeDecodeError):
            table = None
        if table is not None and table.num_rows == n_lines:
            line_no = np.arange(1, n_lines + 1, dtype=np.int64)
            return Parsed(table, line_no, Rejected(), n_lines, data, starts, end)
    table, line_no, rejected = _parse_by_lines(data[:end])
    return Parsed(table, line_no, rejected, n_lines, data, starts, end)


def _parse_by_lines(body: bytes) -> tuple[pa.Table, np.ndarray, Rejected]:
    lines = raw_lines(body)
    rejected = Rejected()
    tables: list[pa.Table] = []
    numbers: list[np.ndarray] = []
    pending: list[int] = []

    def parse_range(idx: list[int]) -> None:
        error = ""
        try:
            table = _arrow_parse(b"\n".join(lines[i] for i in idx))
            if table.num_rows == len(idx):
                tables.append(table)
                numbers.append(np.asarray(idx, dtype=np.int64) + 1)
                return
            error = f"{table.num_rows} JSON values on {len(idx)} line(s)"
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            error = str(exc)
        if len(idx) == 1:
            reason, detail = classify_line(lines[idx[0]], error)
            rejected.add(idx[0] + 1, reason, detail, lines[idx[0]])
            return
        half = len(idx) // 2
        parse_range(idx[:half])
        parse_range(idx[half:])

    def flush() -> None:
        if not pending:
            return
        try:
            table = _arrow_parse(b"\n".join(lines[i] for i in pending))
        except (pa.ArrowInvalid, UnicodeDecodeError):
            table = None
        if table is not None and table.num_rows == len(pending):
            tables.append(table)
            numbers.append(np.asarray(pending, dtype=np.int64) + 1)
        else:  # a bad chunk: screen each line, bisect what is left only if it still fails
            unsure = []
            for i in pending:
                screened = screen_line(lines[i])
                if screened:
                    rejected.add(i + 1, *screened, lines[i])
                else:
                    unsure.append(i)
            if unsure:
                parse_range(unsure)
        pending.clear()

    for i, line in enumerate(lines):
        if not line.strip():
            flush()
            rejected.add(i + 1, "empty_line", "blank line", line)
            continue
        pending.append(i)
        if len(pending) >= CHUNK_LINES:
            flush()
    flush()
    if tables:
        table = pa.concat_tables(tables)
        line_no = np.concatenate(numbers)
    else:
        table = RAW_PARSE_SCHEMA.empty_table()
        line_no = np.zeros(0, dtype=np.int64)
    return table, line_no, rejected
