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

from core.atomic import write_bytes
from core.constants import DAY_MS
from data.schemas import EVENT_TYPES
from world.config import WorldConfig
from world.events import STREAM, Events
from world.people import People
from world.taste import Catalogue


@dataclass(frozen=True)
class Delivered:
    lines: list[bytes]  # in arrival order
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
    raw = rng.bytes(16 * n)
    event_id = [raw[i : i + 16].hex() for i in range(0, 16 * n, 16)]
    # client clock and local offset -> ISO-8601 with offset
    client_ms = ev.t_ms + people.skew_ms[ev.user]
    offset = people.utc_offset_min[ev.user]
    local = (client_ms + offset * 60_000).astype("datetime64[ms]")
    client_ts = np.char.add(
        np.datetime_as_string(local, unit="ms").astype(str),
        _offset_str(np.arange(-720, 841))[offset + 720].astype(str),
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
    n_bad = int(rng.binomial(len(lines), cfg.malformed_rate)) if lines else 0
    at = np.sort(rng.integers(0, len(lines), n_bad))
    broken = []
    for j, i in enumerate(at.tolist()):
        line = lines[i]
        kind = j % 3
        broken.append(
            line[: len(line) // 2]
            if kind == 0
            else b"<html>502 Bad Gateway</html>"
            if kind == 1
            else b"[" + line + b"]"
        )
    if n_bad:
        merged: list[bytes] = []
        prev = 0
        for i, bad in zip(at.tolist(), broken, strict=False):
            merged.extend(lines[prev:i])
            merged.append(bad)
            prev = i
        merged.extend(lines[prev:])
        lines = merged
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


def _serialise(cfg, ev, people, cat, rows, server, event_id, client_ts) -> list[bytes]:
    """One JSON object per delivered row; optional fields only where they apply."""
    kind = ev.kind[rows].tolist()
    user, artist = ev.user[rows], ev.artist[rows]
    track = ev.track[rows]
    dur = np.where(track >= 0, cat.duration_ms[artist, np.maximum(track, 0)], -1).tolist()
    request, position = ev.request[rows].tolist(), ev.position[rows].tolist()
    ms_played, track = ev.ms_played[rows].tolist(), track.tolist()
    uid, aid = people.user_id[user].tolist(), cat.artist_id[artist].tolist()
    country, device = people.country_iso[user].tolist(), people.device[user].tolist()
    eid = [event_id[r] for r in rows.tolist()]
    cts = client_ts[rows].tolist()
    server = server.tolist()
    names, prefix = EVENT_TYPES, f"req-{cfg.seed:x}-"
    dumps = orjson.dumps
    lines = []
    for i, k in enumerate(kind):
        obj = {"event_id": eid[i], "event_type": names[k], "user_id": uid[i], "artist_id": aid[i]}
        if request[i] >= 0:
            obj["request_id"] = f"{prefix}{request[i]:08x}"
            obj["position"] = position[i] + 1
        if k == STREAM:
            obj["track_id"] = f"{aid[i]}-t{track[i]:02d}"
            obj["ms_played"] = ms_played[i]
            if dur[i] > 0:
                obj["track_duration_ms"] = dur[i]
        obj["client_ts"] = cts[i]
        obj["server_ts"] = server[i]
        if country[i]:
            obj["country"] = country[i]
        obj["device"] = device[i]
        # a copy of exact size: orjson's own result keeps a 4 KiB allocation per line alive
        lines.append(bytes(memoryview(dumps(obj))))
    return lines


def write_partitions(
    root: Path, delivered: Delivered, per_file: int, stem: str = "part-"
) -> list[Path]:
    """``root/dt=YYYY-MM-DD/<stem>NNNNN.jsonl.gz``; gzip without a timestamp (reproducible)."""
    written = []
    dts = delivered.dt
    bounds = np.flatnonzero(dts[1:] != dts[:-1]) + 1
    for s, e in zip([0, *bounds.tolist()], [*bounds.tolist(), len(dts)], strict=False):
        for part, lo in enumerate(range(s, e, per_file)):
            path = root / f"dt={dts[s]}" / f"{stem}{part:05d}.jsonl.gz"
            chunk = b"\n".join(delivered.lines[lo : min(lo + per_file, e)]) + b"\n"
            write_bytes(path, gzip.compress(chunk, compresslevel=1, mtime=0))
            written.append(path)
    return written
