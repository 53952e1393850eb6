"""Deliver the simulated events the way a real client fleet does: late, twice, skewed, broken.

Dirt (rates in :class:`~world.config.WorldConfig`):

* **duplicates** — at-least-once delivery re-sends an event: same ``event_id`` and payload,
  a later ``server_ts`` (seconds to minutes), possibly in another file or partition;
* **late** — the event sat on the device for 1 h – 3 days before arriving (``client_ts``
  long before ``server_ts``); files are partitioned by *arrival* date;
* **skewed clients** — a few users' clocks run 2 h – 3 days fast: ``client_ts`` is after
  ``server_ts``;
* **malformed lines** — truncated JSON, non-JSON text, a JSON array instead of an object.

``position`` is 1-based (1 = first slot of the slate). ``client_ts`` carries the client's
local UTC offset (``+01:00``, ``-05:00``, ``+05:30``); ``server_ts`` is epoch ms (UTC).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from core.atomic import write_bytes
from core.constants import DAY_MS
from data.schemas import EVENT_TYPES
from world.config import WorldConfig
from world.events import STREAM, Events
from world.people import People
from world.taste import Catalogue


@dataclass(frozen=True)
class Delivered:
    lines: pa.LargeBinaryArray  # in arrival order, each line ending in a newline
    dt: np.ndarray  # (L,) "YYYY-MM-DD" arrival date per line
    counts: dict[str, int]


def _offset_str(minutes: np.ndarray) -> np.ndarray:
    sign = np.where(minutes < 0, "-", "+")
    m = np.abs(minutes)
    return np.array(
        [f"{s}{h:02d}:{mm:02d}" for s, h, mm in zip(sign, m // 60, m % 60, strict=False)],
        dtype=object,
    )


def deliver(
    cfg: WorldConfig, ev: Events, people: People, cat: Catalogue, rng: np.random.Generator
) -> Delivered:
    n = len(ev.t_ms)
    event_id = np.frombuffer(rng.bytes(16 * n), np.uint8).reshape(n, 16)
    # client clock and local offset -> ISO-8601 with offset
    client_ms = ev.t_ms + people.skew_ms[ev.user]
    offset = people.utc_offset_min[ev.user]
    local = (client_ms + offset * 60_000).astype("datetime64[ms]")
    # as fixed-width ASCII rows: "YYYY-MM-DDTHH:MM:SS.mmm" then "+HH:MM"
    stamp = np.datetime_as_string(local, unit="ms").astype("S")
    zone = _offset_str(np.arange(-720, 841)).astype("S6")[offset + 720]
    client_ts = np.concatenate(
        [stamp.view(np.uint8).reshape(n, stamp.dtype.itemsize), zone.view(np.uint8).reshape(n, 6)],
        axis=1,
    )
    # arrival: a second or so, sometimes hours or days
    delay = np.round(rng.lognormal(np.log(800), 1.0, n)).astype(np.int64)
    late = rng.random(n) < cfg.late_rate
    delay[late] = rng.integers(3_600_000, 3 * DAY_MS, int(late.sum()))
    server = ev.t_ms + delay
    # at-least-once delivery: re-send some events later with the same id and payload
    dup_src = np.flatnonzero(rng.random(n) < cfg.duplicate_rate)
    rows = np.concatenate([np.arange(n), dup_src])
    server = np.concatenate([server, server[dup_src] + rng.integers(1_000, 600_000, len(dup_src))])
    order = np.argsort(server, kind="stable")
    rows, server = rows[order], server[order]

    lines = _serialise(cfg, ev, people, cat, rows, server, event_id, client_ts)
    dt = np.datetime_as_string(server.astype("datetime64[ms]").astype("datetime64[D]"), unit="D")

    # a few broken lines, inserted where they arrived
    n_bad = int(rng.binomial(len(lines), cfg.malformed_rate)) if len(lines) else 0
    at = np.sort(rng.integers(0, len(lines), n_bad))
    broken = []
    for j, i in enumerate(at.tolist()):
        line = lines[i].as_py()[:-1]
        kind = j % 3
        bad = (
            line[: len(line) // 2]
            if kind == 0
            else b"<html>502 Bad Gateway</html>"
            if kind == 1
            else b"[" + line + b"]"
        )
        broken.append(pa.array([bad + b"\n"], pa.large_binary()))
    if n_bad:
        pieces: list[pa.Array] = []
        prev = 0
        for i, bad_line in zip(at.tolist(), broken, strict=False):
            pieces += [lines[prev:i], bad_line]
            prev = i
        pieces.append(lines[prev:])
        lines = pa.concat_arrays(pieces)
        dt = np.insert(dt, at, dt[at])

    counts = {f"events_{name}": int((ev.kind == i).sum()) for i, name in enumerate(EVENT_TYPES)}
    counts.update(
        events=n,
        duplicates=len(dup_src),
        late=int(late.sum()),
        skewed=int((people.skew_ms[ev.user] > 0).sum()),
        malformed=n_bad,
        lines=len(lines),
    )
    return Delivered(lines, dt, counts)


_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def _fixed(chars: np.ndarray) -> pa.LargeBinaryArray:
    """(N, W) uint8 -> N binary values of W bytes each."""
    n, width = chars.shape
    offsets = np.arange(n + 1, dtype=np.int64) * width
    data = np.ascontiguousarray(chars)
    return pa.Array.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _json(values: list, index: np.ndarray) -> pa.LargeBinaryArray:
    """orjson's bytes of each distinct value, repeated as ``index`` says."""
    table = pa.array([orjson.dumps(v) for v in values], pa.large_binary())
    return table.take(pa.array(index))


def _decimal(values: np.ndarray) -> pa.LargeBinaryArray:
    return pc.cast(pc.cast(pa.array(values), pa.large_string()), pa.large_binary())


def _serialise(cfg, ev, people, cat, rows, server, event_id, client_ts) -> pa.LargeBinaryArray:
    """One JSON object per delivered row, newline-terminated; optional fields only where they
    apply. Column by column, byte for byte what ``orjson.dumps`` of the row's dict gives: every
    distinct string is encoded by orjson once, numbers are Arrow's decimal casts."""
    n = len(rows)
    const = {}

    def c(text: bytes) -> pa.Scalar:
        if text not in const:
            const[text] = pa.scalar(text, pa.large_binary())
        return const[text]

    empty = c(b"")
    kind, user, artist = ev.kind[rows], ev.user[rows], ev.artist[rows]
    track, request = ev.track[rows], ev.request[rows]
    ids = event_id[rows]
    hexed = np.empty((n, 32), np.uint8)
    hexed[:, 0::2], hexed[:, 1::2] = _HEX[ids >> 4], _HEX[ids & 15]
    users, u_idx = np.unique(user, return_inverse=True)
    artists, a_idx = np.unique(artist, return_inverse=True)
    aid = cat.artist_id[artists].tolist()
    tail = []  # per user: country (when known), device, end of object
    for country, device in zip(
        people.country_iso[users].tolist(), people.device[users].tolist(), strict=True
    ):
        head = b',"country":' + orjson.dumps(country) if country else b""
        tail.append(head + b',"device":' + orjson.dumps(device) + b"}\n")
    user_tail = pa.array(tail, pa.large_binary()).take(pa.array(u_idx))

    has_request = request >= 0
    req = np.maximum(request, 0)
    if req.max(initial=0) < 1 << 32:
        shifts = np.arange(28, -4, -4, dtype=np.int64)
        req_hex = _fixed(_HEX[(req[:, None] >> shifts) & 15])
    else:  # beyond 8 hex digits: as wide as each number needs
        req_hex = pa.array([f"{r:08x}".encode() for r in req.tolist()], pa.large_binary())
    join = pc.binary_join_element_wise
    request_part = join(
        c(f',"request_id":"req-{cfg.seed:x}-'.encode()),
        req_hex,
        c(b'","position":'),
        _decimal(ev.position[rows] + 1),
        empty,
    )
    request_part = pc.if_else(pa.array(has_request), request_part, empty)

    is_stream = kind == STREAM
    dur = np.where(track >= 0, cat.duration_ms[artist, np.maximum(track, 0)], -1)
    duration_part = pc.if_else(
        pa.array(dur > 0), join(c(b',"track_duration_ms":'), _decimal(dur), empty), empty
    )
    track_head = [orjson.dumps(a)[:-1] + b"-t" for a in aid]  # '"ar00042' + '-t'
    track_no = pc.utf8_lpad(pc.cast(pa.array(np.maximum(track, 0)), pa.string()), 2, "0")
    stream_part = join(
        c(b',"track_id":'),
        pa.array(track_head, pa.large_binary()).take(pa.array(a_idx)),
        pc.cast(pc.cast(track_no, pa.large_string()), pa.large_binary()),
        c(b'","ms_played":'),
        _decimal(ev.ms_played[rows]),
        duration_part,
        empty,
    )
    stream_part = pc.if_else(pa.array(is_stream), stream_part, empty)

    cts = client_ts[rows]
    if (cts == 0).any():  # a time stamp narrower than the widest one: NUL padding, not text
        cts = pa.array([bytes(r).replace(b"\0", b"") for r in cts], pa.large_binary())
    else:
        cts = _fixed(cts)
    lines = join(
        c(b'{"event_id":"'),
        _fixed(hexed),
        c(b'","event_type":'),
        _json(list(EVENT_TYPES), kind.astype(np.int64)),
        c(b',"user_id":'),
        _json(people.user_id[users].tolist(), u_idx),
        c(b',"artist_id":'),
        _json(aid, a_idx),
        request_part,
        stream_part,
        c(b',"client_ts":"'),
        cts,
        c(b'","server_ts":'),
        _decimal(server),
        user_tail,
        empty,
    )
    # big inputs come back from Arrow in chunks; the writer wants one contiguous buffer
    return lines.combine_chunks() if isinstance(lines, pa.ChunkedArray) else lines


def write_partitions(
    root: Path, delivered: Delivered, per_file: int, stem: str = "part-", isal: bool = False
) -> list[Path]:
    """``root/dt=YYYY-MM-DD/<stem>NNNNN.jsonl.gz``; gzip without a timestamp (reproducible).

    zlib level 1 by default (the bytes every preset was written with); ``isal``: ISA-L level
    1, ~5x faster and smaller: other gzip bytes (as valid; the same on the same machine)."""
    written: list[Path] = []
    dts = delivered.dt
    lines = delivered.lines
    if not len(lines):
        return written
    compress = _isal_gzip if isal else _zlib_gzip
    offsets = np.frombuffer(lines.buffers()[1], np.int64, len(lines) + 1, lines.offset * 8)
    data = memoryview(lines.buffers()[2])
    bounds = np.flatnonzero(dts[1:] != dts[:-1]) + 1
    for s, e in zip([0, *bounds.tolist()], [*bounds.tolist(), len(dts)], strict=False):
        for part, lo in enumerate(range(s, e, per_file)):
            path = root / f"dt={dts[s]}" / f"{stem}{part:05d}.jsonl.gz"
            chunk = data[offsets[lo] : offsets[min(lo + per_file, e)]]
            write_bytes(path, compress(chunk))
            written.append(path)
    return written


def _zlib_gzip(data: memoryview) -> bytes:
    return gzip.compress(data, compresslevel=1, mtime=0)


def _isal_gzip(data: memoryview) -> bytes:
    from isal import igzip

    return igzip.compress(data, compresslevel=1, mtime=0)
