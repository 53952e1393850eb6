"""A listener's live row: the state the stream worker keeps, where it starts, how it is served.

The state is one Redis hash per listener (``tastemaker:live:<user_key>``), written only by the
worker's Lua script (:mod:`data.features.stream`); :func:`seed_state` is what it starts from,
:func:`decode_state` how it is read back, :func:`live_row` the online row served from it.

``listen_ratio``, ``ctr_relative``, ``activity_level`` and ``tenure_bucket`` are not functions of
the online row alone (:mod:`data.features.user` states their formulas): they need

* per listener: the sum and number of quantised listen log-ratios (``lrs``, ``lrn``), events
  and active UTC days (``ne``, ``nd``), the signup time (``su``), and per UTC day of the last
  ``recent_days + 1`` days its events, impressions and clicks (a ring of day buckets, fields
  ``d<s>``/``e<s>``/``i<s>``/``c<s>`` for slot ``s = day % slots``);
* per track, over every listener: the number and ``ms_played`` sum of its usable streams, the
  newest stream's time, and the number and sum of those strictly before it (a tie block of
  equal times shares one reference, as :func:`data.features.events.track_listen_ratios` does).

:func:`stream_reference` computes both from the lake's :class:`EventLog` as of a time (the batch
rows' ``as_of``), with the batch's own arrays (``lr_q``/``lr_ok``, ``new_day``), so a listener
seeded from its batch row and these counters and then streamed ends equal to the batch
features at the end (the parity test). The track references go to Redis once per track
(:func:`seed_tracks`: a track already there, i.e. updated by the stream, is never overwritten).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import redis

from core.constants import DAY_MS
from data.features.config import FeatureConfig
from data.features.events import ET, EventLog, listen_usable
from data.features.user import LEVELS, TENURES, activity_code, dense_values, tenure_code

STATE_PREFIX = "tastemaker:live:"
TRACK_KEYS = "track:"  # after the state prefix: the per-track listen references
_NO_SIGNUP = np.iinfo(np.int64).min

# KEYS[1] a track's reference hash; ARGV: n, s (ms sum), t (newest time), bn, bs (before t).
# Written only when the track has no hash yet (one the stream updated is newer than any seed).
SEED_TRACK_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'n', ARGV[1], 's', ARGV[2], 't', ARGV[3], 'bn', ARGV[4], 'bs', ARGV[5])
return 1
"""


def ring_slots(config: FeatureConfig) -> int:
    """Day buckets kept per listener: the recent window plus the day it starts in."""
    return config.recent_days + 1


@dataclass(frozen=True)
class StreamReference:
    """Counters as of ``as_of`` (epoch ms): per listener (rows of ``user_ids``) and per track."""

    as_of: int
    user_ids: pa.StringArray
    lrs: np.ndarray  # (U,) int64 sum of quantised listen log-ratios
    lrn: np.ndarray  # (U,) int64 streams with a listen ratio
    ne: np.ndarray  # (U,) int64 events
    nd: np.ndarray  # (U,) int64 active UTC days
    signup: np.ndarray  # (U,) int64 epoch ms, INT64_MIN = unknown
    days: np.ndarray  # (S,) int64 the UTC days of the ring (day index = ms // DAY_MS)
    buckets: np.ndarray  # (U, S, 3) int64 events, impressions, clicks per day
    track_ids: pa.StringArray
    tracks: np.ndarray  # (T, 5) int64 n, s, t, bn, bs

    def __post_init__(self) -> None:
        object.__setattr__(self, "_row", {k: i for i, k in enumerate(self.user_ids.to_pylist())})

    def counters(self, user_key: str, row_as_of: int | None) -> dict[str, Any]:
        """The hash fields a listener's live row starts with. ``rf`` 1: the counters belong to
        the batch row (``row_as_of`` is this reference's time, or there is no batch row and
        they start from zero like the rest of the row); 0: they do not, and the four fields
        stay the batch row's until the row is re-seeded."""
        i = self._row.get(user_key)  # type: ignore[attr-defined]
        su = "" if i is None or self.signup[i] == _NO_SIGNUP else str(int(self.signup[i]))
        if row_as_of is None or row_as_of != self.as_of or i is None:
            return {**empty_counters(), "su": su, "rf": int(row_as_of is None)}
        out: dict[str, Any] = {"su": su, "rf": 1}
        out.update(
            lrs=int(self.lrs[i]), lrn=int(self.lrn[i]), ne=int(self.ne[i]), nd=int(self.nd[i])
        )
        for slot, day in enumerate(self.days.tolist()):
            e, imp, c = (int(x) for x in self.buckets[i, slot])
            if e:
                out.update(ring_fields(day, len(self.days), e, imp, c))
        return out


def empty_counters() -> dict[str, Any]:
    return {"lrs": 0, "lrn": 0, "ne": 0, "nd": 0, "su": "", "rf": 0}


def ring_fields(day: int, slots: int, events: int, impressions: int, clicks: int) -> dict[str, int]:
    """The hash fields of one day bucket (slot ``day % slots``)."""
    s = day % slots
    return {f"d{s}": day, f"e{s}": events, f"i{s}": impressions, f"c{s}": clicks}


def recent_counts(
    state: Mapping[str, Any], slots: int, at_ms: int, recent_days: int
) -> tuple[int, int]:
    """(impressions, clicks) of the day buckets wholly inside ``[at_ms - recent_days, at_ms)``:
    exactly the batch's recent window when ``at_ms`` is a UTC midnight; between midnights it
    leaves out the part of the oldest day that is still inside the window (at most one day)."""
    start = -(-(at_ms - recent_days * DAY_MS) // DAY_MS)  # first whole day in the window
    impressions = clicks = 0
    for s in range(slots):
        day = state.get(f"d{s}")
        if day is not None and start <= int(day) and int(day) * DAY_MS < at_ms:
            impressions += int(state.get(f"i{s}", 0))
            clicks += int(state.get(f"c{s}", 0))
    return impressions, clicks


def stream_reference(
    ev: EventLog, as_of: int, config: FeatureConfig | None = None
) -> StreamReference:
    """Listener and track counters over the events of ``ev`` strictly before ``as_of``."""
    config = config or FeatureConfig()
    n_u = ev.n_users
    idx = np.nonzero(ev.ts < as_of)[0]
    u = ev.u[idx]

    def count(mask: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(u[mask], weights=weights, minlength=n_u).astype(np.int64)

    ok = ev.lr_ok[idx]
    lrs = np.zeros(n_u, np.int64)
    np.add.at(lrs, u[ok], ev.lr_q[idx][ok])  # integers: exact, unlike float bincount weights
    slots = ring_slots(config)
    last_day = (as_of - 1) // DAY_MS
    days = np.arange(last_day - slots + 1, last_day + 1, dtype=np.int64)
    day = ev.ts[idx] // DAY_MS
    inside = day >= days[0]
    slot = (day - days[0])[inside]
    et = ev.et[idx][inside]
    buckets = np.zeros((n_u, slots, 3), np.int64)
    np.add.at(buckets, (u[inside], slot, 0), 1)
    np.add.at(buckets, (u[inside][et == ET["impression"]], slot[et == ET["impression"]], 1), 1)
    np.add.at(buckets, (u[inside][et == ET["click"]], slot[et == ET["click"]], 2), 1)

    usable = idx[listen_usable(ev.tr[idx] >= 0, ev.et[idx], ev.ms[idx])]
    tr, ts, ms = ev.tr[usable], ev.ts[usable], ev.ms[usable].astype(np.int64)
    n_t = len(ev.track_ids)
    newest = np.full(n_t, np.iinfo(np.int64).min)
    np.maximum.at(newest, tr, ts)
    before = ts < newest[tr]
    tracks = np.zeros((n_t, 5), np.int64)
    tracks[:, 0] = np.bincount(tr, minlength=n_t)
    np.add.at(tracks[:, 1], tr, ms)
    tracks[:, 2] = newest
    tracks[:, 3] = np.bincount(tr[before], minlength=n_t)
    np.add.at(tracks[:, 4], tr[before], ms[before])
    keep = tracks[:, 0] > 0
    return StreamReference(
        as_of=int(as_of),
        user_ids=ev.user_ids,
        lrs=lrs,
        lrn=count(ok),
        ne=count(np.ones(len(idx), bool)),
        nd=count(ev.new_day[idx]),
        signup=ev.signup_ms.astype(np.int64),
        days=days,
        buckets=buckets,
        track_ids=ev.track_ids.filter(pa.array(keep)),
        tracks=tracks[keep],
    )


def seed_tracks(
    client: redis.Redis, reference: StreamReference, prefix: str, chunk: int = 5000
) -> int:
    """Write the reference of every track that has no hash under ``prefix`` yet; returns how
    many were written. Re-runnable: a track the stream already updated keeps its hash."""
    script = client.register_script(SEED_TRACK_LUA)
    written = 0
    ids = reference.track_ids.to_pylist()
    for lo in range(0, len(ids), chunk):
        pipe = client.pipeline(transaction=False)
        for tid, values in zip(
            ids[lo : lo + chunk], reference.tracks[lo : lo + chunk].tolist(), strict=True
        ):
            script(keys=[prefix + tid], args=values, client=pipe)
        written += sum(int(r) for r in pipe.execute())
    return written


def state_key(user_key: str, prefix: str = STATE_PREFIX) -> str:
    return prefix + user_key


def _list(value: Any) -> list:
    """cjson writes an empty list as ``{}``."""
    return list(value) if isinstance(value, list) else []


def track_key(track_id: str, prefix: str = STATE_PREFIX) -> str:
    return prefix + TRACK_KEYS + track_id


SEP = "\x1f"  # joins the ids of ``seen`` and ``ev`` in the hash (ids holding it are quarantined)
LIST_FIELDS = ("h", "hts", "rt", "rts", "f", "fts")
INT_FIELDS = ("at", "ax", "ts", "base", "ni", "nc", "ns", "lrs", "lrn", "ne", "nd", "rf")
RING = ("d", "e", "i", "c")  # day bucket fields: day, events, impressions, clicks (+ slot)


def seed_state(
    batch_row: Mapping[str, Any] | None,
    seed_id: str = "0-0",
    counters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The hash fields a listener's live row starts from: its batch row (or nothing, for a
    listener the batch has not seen yet) and the counters behind the four reference fields
    (:meth:`StreamReference.counters`; without them those fields stay the batch row's, or for
    a listener without a batch row start from zero). Seeded list items get times just before
    the row's ``as_of``, so streamed events (later) go in front of them."""
    row = batch_row or {}
    as_of = _ms(row.get("as_of")) if row.get("as_of") is not None else 0
    history = _list(row.get("history"))
    ages = _list(row.get("history_age_s"))
    hts = [as_of - int(round(float(a) * 1000)) for a in ages[: len(history)]]
    hts += [as_of - 1] * (len(history) - len(hts))
    tracks, follows = _list(row.get("recent_tracks")), _list(row.get("followed"))
    lists = {
        "h": history,
        "hts": hts,
        "rt": tracks,
        "rts": [as_of - 1] * len(tracks),
        "f": follows,
        "fts": [as_of - 1] * len(follows),
    }
    return {
        "id": seed_id,
        "at": 0,  # when the last event was applied (worker clock, ms)
        "ax": 0,  # ... the last one that is not an impression (history, follows, seen)
        "ts": 0,
        "base": as_of,
        **{name: orjson.dumps(v).decode() for name, v in lists.items()},
        "seen": SEP.join(s for s in _list(row.get("seen")) if SEP not in s),
        "ev": "",
        "ni": int(row.get("n_impressions") or 0),
        "nc": int(row.get("n_clicks") or 0),
        "ns": int(row.get("n_streams") or 0),
        **(counters or {**empty_counters(), "rf": int(batch_row is None)}),
    }


def _ms(value: Any) -> int:
    if isinstance(value, int | np.integer):
        return int(value)
    if hasattr(value, "timestamp"):
        return int(round(value.timestamp() * 1000))
    return int(value)


def decode_state(fields: Mapping[bytes, bytes] | None) -> dict[str, Any] | None:
    """A stored live row (the hash's fields), or None when absent or undecodable (then the
    batch row serves)."""
    if not fields:
        return None
    try:
        raw = {k.decode(): v.decode() for k, v in fields.items()}
        state: dict[str, Any] = {"id": raw["id"]}
        for name in INT_FIELDS:
            state[name] = int(float(raw.get(name) or 0))
        for name in LIST_FIELDS:
            state[name] = _list(orjson.loads(raw.get(name) or "[]"))
        state["seen"] = raw["seen"].split(SEP) if raw.get("seen") else []
        state["su"] = int(raw["su"]) if raw.get("su") else None
        for name, value in raw.items():
            if name[:1] in RING and name[1:].isdigit():
                state[name] = int(float(value))
    except (KeyError, ValueError, UnicodeDecodeError, orjson.JSONDecodeError):
        return None
    if len(state["h"]) != len(state["hts"]) or len(state["f"]) != len(state["fts"]):
        return None
    return state


def live_row(
    batch_row: Mapping[str, Any] | None,
    state: Mapping[str, Any],
    as_of_ms: int,
    config: FeatureConfig | None = None,
) -> dict[str, Any]:
    """The listener's fresh online row: the batch row with the live fields over it, ages and
    ``as_of`` at ``as_of_ms``, the dense fields from :func:`data.features.user.dense_values`
    and the segments from its ``activity_code`` / ``tenure_code`` (the batch's own formulas).
    ``listen_ratio``, ``ctr_relative`` and ``activity_level`` are the batch row's where the
    state's counters do not belong to it (``rf`` 0, see :func:`seed_state`)."""
    config = config or FeatureConfig()
    row: dict[str, Any] = dict(batch_row or {})
    history, hts = _list(state.get("h")), _list(state.get("hts"))
    row["as_of"] = as_of_ms
    row["history"] = history
    row["history_age_s"] = [float(np.float32((as_of_ms - t) / 1000.0)) for t in hts[: len(history)]]
    row["recent_tracks"] = _list(state.get("rt"))
    row["followed"] = _list(state.get("f"))
    row["seen"] = _list(state.get("seen"))
    ni, nc, ns = int(state.get("ni", 0)), int(state.get("nc", 0)), int(state.get("ns", 0))
    row["n_impressions"], row["n_clicks"], row["n_streams"] = ni, nc, ns
    ri, rc = recent_counts(state, ring_slots(config), as_of_ms, config.recent_days)
    lrs, lrn = int(state.get("lrs", 0)), int(state.get("lrn", 0))
    dense = dense_values(
        np.array([ni]),
        np.array([nc]),
        np.array([ri]),
        np.array([rc]),
        np.array([lrs], np.float64),
        np.array([lrn]),
        np.array([ns]),
    )
    fields: tuple[str, ...] = ("ctr_per_100", "log_streams")
    if state.get("rf"):
        fields += ("listen_ratio", "ctr_relative")
        ne, nd = np.array([int(state.get("ne", 0))]), np.array([int(state.get("nd", 0))])
        row["activity_level"] = LEVELS[activity_code(ne, nd, config.activity_thresholds)[0]]
    for name in fields:
        row[name] = float(dense[name][0])
    if state.get("su") is not None:
        su = np.array([int(state["su"])], np.int64)
        row["tenure_bucket"] = TENURES[tenure_code(su, as_of_ms, config.new_user_days)[0]]
    return row
