"""Streaming features: the event bus -> each listener's live online row, as events arrive.

``tastemaker stream-features`` is a Redis Streams consumer group (``tastemaker-features``) on
the stream the raw-object subscriber drains (:mod:`data.ingest.subscriber`, field ``event``).
Each batch of entries (read by a script that returns their ids and lines as two strings: no
reply object per entry) is parsed and validated in one vectorised pass with ingest's own
parser and row rules (:func:`data.ingest.parse.parse_object`,
:func:`data.ingest.validate.validate_rows`, the account table and the catalogue as lookups),
each distinct account id is pseudonymised once with the same HMAC
(:func:`data.pii.pseudonymise`, memoised), and the valid events are applied to the listeners'
*live state* (``tastemaker:live:<user_key>``, a hash) in stream order by one Lua call per
``apply_chunk`` events (:data:`APPLY_LUA`; it reads each listener's hash once, applies the
events to it as Lua tables and writes back the fields that changed):

* the recent-artist history and recent tracks (newest first, ``history_len`` long, no
  de-duplication: the batch's :func:`data.features.user.last_per_user` order), follows (a
  pair's last action decides; newest follow first), the seen set (first positive event per
  artist: click, follow, stream of >= ``stream_min_ms``), impression / click / stream counters;
* atomically (a script call is atomic; an impression touches none of the lists), and
  idempotently by stream id: the state stores the last applied id, and an entry at or below it
  changes nothing (redelivery after a crash); the state also keeps the last
  ``DEDUPE_EVENTS`` event ids, so a duplicate *delivery* of one event (a retried client post:
  new stream id, same ``event_id``) counts once, as ingest's dedupe does.

A listener's first event seeds the state from its batch row (the online store); a listener
the account table does not know (``unknown_user``) or has erased (``deleted_user``) is dropped
with that reason; an entry that fails parsing or validation is acknowledged and counted as
quarantined (it never blocks the group). Entries are acknowledged only after their batch is
applied, so a SIGKILL re-delivers them and the stored ids make the replay a no-op. With Redis
down the worker retries with back-off and then resumes from its pending entries.

The same script keeps the counters behind ``listen_ratio``, ``ctr_relative``,
``activity_level`` and ``tenure_bucket`` (:mod:`data.features.live`): per listener the listen
log-ratio sum and count, events, active days and a ring of day buckets; per track (a second
hash, ``<prefix>track:<track_id>``, updated in the same atomic call) the references a
stream's listen ratio is taken against. They start from a :class:`StreamReference` computed
from the lake at the batch rows' ``as_of`` (``FeatureStreamer(reference=...)``; the job
builds it when the lake and the rows are there).

The served row (:func:`live_row`) is the batch row with the live fields over it; its dense
values and segments come from the batch's own formulas. Exact at any time (equal to
:func:`data.features.user.user_features_at` at that time over the same events): ``history``,
``history_age_s``, ``recent_tracks``, ``followed``, ``seen`` (as a set), the counters,
``ctr_per_100``, ``log_streams``, ``listen_ratio``, ``activity_level``, ``tenure_bucket``.
``ctr_relative`` is exact at a UTC midnight (the batch's time) and between midnights counts
only the recent window's whole days (it leaves out what happened in
``[t - recent_days, first midnight after it)``, at most one day; tested). Approximate only for
events older than ones already applied: a late stream of a track takes the reference before
the track's newest time (later streams are not revised) and a late event more than
``recent_days`` days old counts its day as already active. Kept from the batch row: the
account segments, and the four fields above where no reference matched the row.

The listen log-ratio is computed in Lua as ``ln(r) / ln(2)`` where the batch has numpy's
``log2``; both round to 1/65536 and agreed on every one of 2 M random ratios tried.

Ordering: one consumer applies a stream in id order. Events arriving out of event-time order
are placed in the lists by event time; ties keep arrival order (the lake's tie order).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import redis
from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from core.constants import DAY_MS
from data.features.config import FeatureConfig
from data.features.live import (
    SEP,
    STATE_PREFIX,
    StreamReference,
    decode_state,
    live_row,
    ring_slots,
    seed_state,
    seed_tracks,
    state_key,
    track_key,
)
from data.ingest.parse import parse_object
from data.ingest.subscriber import DEFAULT_STREAM, EVENT_FIELD, ensure_group
from data.ingest.validate import IngestRules, Lookups, as_mask, reason_name, validate_rows
from data.pii import pseudonymise

__all__ = ["FeatureStreamer", "StreamConfig", "live_row", "read_state", "seed_state", "state_key"]

log = logging.getLogger("tastemaker.data")

DEFAULT_GROUP = "tastemaker-features"
DEDUPE_EVENTS = 64  # event ids remembered per listener (duplicate deliveries arrive close)
DROP_REASONS = ("unknown_user", "deleted_user")
PSEUDONYM_MEMO = 500_000  # accounts whose pseudonym the worker keeps (~250 bytes each)

EVENTS = Counter(
    "tastemaker_stream_events_total",
    "Stream entries handled by the feature worker, by outcome",
    ["outcome"],  # applied | replayed | duplicate | dropped:<reason> | quarantined:<reason>
)


class _BatchHistogram:
    """A Prometheus histogram observed a batch at a time (one numpy pass; prometheus_client's
    ``Histogram.observe`` takes one value a call, a Python loop over the buckets each)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name, self.documentation = name, documentation
        self._bounds = np.asarray(buckets, dtype=np.float64)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # the last: above them all
        self._sum = 0.0
        self._lock = threading.Lock()
        REGISTRY.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        counts = np.bincount(np.searchsorted(self._bounds, values), minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(np.sum(values))

    def collect(self) -> Any:
        with self._lock:
            cumulative, total = np.cumsum(self._counts).tolist(), self._sum
        buckets = [(floatToGoString(b), c) for b, c in zip(self._bounds, cumulative, strict=False)]
        yield HistogramMetricFamily(
            self.name,
            self.documentation,
            buckets=[*buckets, ("+Inf", cumulative[-1])],
            sum_value=total,
        )


LAG = _BatchHistogram(
    "tastemaker_stream_lag_seconds",
    "Event time (client_ts, as ingest reads it) -> applied to the live row",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 60, 600, 3600, 86400),
)
LAST_LAG = Gauge("tastemaker_stream_last_lag_seconds", "Lag of the newest applied event")
APPLIED_RATE = Gauge(
    "tastemaker_stream_events_per_second", "Entries handled per second in the last batch"
)
RETRIES = Counter("tastemaker_stream_redis_retries_total", "Redis failures the worker rode out")

# One call applies a chunk of a batch's events, in stream order, atomically.
# KEYS: the chunk's listeners' live rows (1..nu, hashes), then the listen references of the
# tracks its usable streams name (hashes n, s, t, bn, bs: :mod:`data.features.live`).
# ARGV: 1 now ms, 2 history_len, 3 stream_min_ms, 4 dedupe length, 5 day buckets, 6 day ms,
# 7 nu, 8 the events as JSON columns (id: stream id, u: listener 1..nu, k: track 1.. or 0,
# t: type, a: artist, r: track or '', ts: event ms, ms: ms_played or -1, e: event_id),
# 8 + i: listener i's seed JSON ('' = none). Returns one letter an event: 'a' applied,
# 'r' replayed (id at or below the row's last applied one), 'd' duplicate (event_id seen),
# 's' seed (no usable row: call again with the batch row), 'u' the seed given is unusable.
# Each listener's hash is read once and written once (HSET of the fields that changed), each
# track's likewise; the rows in between are Lua tables. Hash fields: id, at, ax, ts, base, ni,
# nc, ns (numbers); h, hts, rt, rts, f, fts (JSON lists); seen, ev (ids joined by SEP, so a
# membership test is a plain find and an impression never decodes a list).
APPLY_LUA = r"""
local SEP = '\31'
local now = ARGV[1]
local cap, smin, keep = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local slots, dayms, nu = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local E = cjson.decode(ARGV[8])
local states, tracks, out = {}, {}, {}
local TIMES = {fts = true}  -- a list of event times (the others: of ids)
-- the hash fields each listener's events of this call read (an impression: a few counters)
local BASE = {'id', 'ev', 'evn', 'ts', 'ne', 'nd', 'ni'}
local BY_TYPE = {click = {'nc', 'seen'}, follow = {'f', 'fts', 'seen'}, unfollow = {'f', 'fts'},
  stream = {'ns', 'h', 'hts', 'hn', 'rt', 'rts', 'rtn', 'lrs', 'lrn', 'seen'}, impression = {}}
local RING = {'d', 'e', 'i', 'c'}
local wanted = {}
for j = 1, #E.id do
  local u = E.u[j]
  local w = wanted[u]
  if not w then
    w = {}
    for _, name in ipairs(BASE) do w[name] = true end
    wanted[u] = w
  end
  local slot = tostring(math.floor(E.ts[j] / dayms) % slots)
  for _, p in ipairs(RING) do w[p .. slot] = true end
  for _, name in ipairs(BY_TYPE[E.t[j]] or {}) do w[name] = true end
end
local function idnum(x)
  local a, b = string.match(x, '^(%d+)-(%d+)$')
  return tonumber(a), tonumber(b)
end
-- the listener's row as a table of those fields (nil: none, and no seed; an error: it does
-- not decode)
local function open(i)
  local k = KEYS[i]
  local names = {}
  for name in pairs(wanted[i]) do names[#names + 1] = name end
  local F, fresh = {}, false
  local raw = redis.pcall('HMGET', k, unpack(names))
  if raw['err'] then  -- not a hash: something else was written there
    redis.call('DEL', k)
  else
    for j = 1, #names do if raw[j] then F[names[j]] = raw[j] end end
  end
  if not F['id'] then
    if ARGV[8 + i] == '' then return nil end
    F, fresh = cjson.decode(ARGV[8 + i]), true
  end
  local ma, sa = idnum(F['id'])
  if not ma then error('bad id') end
  return {F = F, D = {}, L = {}, fresh = fresh, ma = ma, sa = sa}
end
local function track(k)
  local T = tracks[k]
  if not T then
    local r = redis.call('HMGET', KEYS[nu + k], 'n', 's', 't', 'bn', 'bs')
    T = {n = tonumber(r[1] or '0'), s = tonumber(r[2] or '0'), t = tonumber(r[3] or '-1'),
         bn = tonumber(r[4] or '0'), bs = tonumber(r[5] or '0')}
    tracks[k] = T
  end
  return T
end
local function add(S, name, n)
  S.F[name], S.D[name] = tonumber(S.F[name] or '0') + n, true
end
-- the follows, decoded once a call; their times keep their JSON number tokens (compared as
-- numbers, written back joined: cjson's number formatting is slow)
local function list(S, name)
  local v = S.L[name]
  if v == nil then
    local raw = S.F[name]
    if not raw or raw == '' or raw == '{}' or raw == '[]' then v = {}
    elseif not TIMES[name] then v = cjson.decode(raw)
    else
      if string.sub(raw, 1, 1) ~= '[' or string.sub(raw, -1) ~= ']' then error('not a list') end
      v = {}
      for tok in string.gmatch(raw, '[^,%[%]]+') do v[#v + 1] = tok end
    end
    S.L[name] = v
  end
  S.D[name] = true
  return v
end
-- the recent lists (ids and their times, newest first; a tie goes before the older arrivals,
-- the lake's order) stay JSON strings: the new item is spliced in and the oldest cut off,
-- their length kept in `nname` (decoding and re-encoding them was the script's main cost)
local function raw_list(raw)
  if not raw or raw == '' or raw == '{}' then return '[]' end
  if string.sub(raw, 1, 1) ~= '[' or string.sub(raw, -1) ~= ']' then error('not a list') end
  return raw
end
local function count(times)
  if times == '[]' then return 0 end
  local n, at = 1, string.find(times, ',', 1, true)
  while at do n, at = n + 1, string.find(times, ',', at + 1, true) end
  return n
end
-- without the last item: cut at the last ',' (in a list of ids, the last ',"': inside a JSON
-- string a '"' is always escaped)
local function cut_last(raw, ids)
  local j = #raw - 1
  while j > 1 and not (string.byte(raw, j) == 44 and (not ids or string.byte(raw, j + 1) == 34)) do
    j = j - 1
  end
  if j <= 1 then error('lists of different lengths') end
  return string.sub(raw, 1, j - 1) .. ']'
end
local function insert(S, name, tname, nname, item, ts)
  local F, D = S.F, S.D
  local ids, times = raw_list(F[name]), raw_list(F[tname])
  local n = tonumber(F[nname] or '') or count(times)
  local pos, at = 1, 2
  while true do
    local _, e, tok = string.find(times, '^(%-?%d+)', at)
    if not tok or tonumber(tok) <= ts then break end
    pos, at = pos + 1, e + 2
  end
  if pos > n + 1 then error('lists of different lengths') end
  local stamp = tostring(ts)
  if n == 0 then
    ids, times = '[' .. cjson.encode(item) .. ']', '[' .. stamp .. ']'
  elseif pos == 1 then  -- the newest (the usual case)
    ids = '[' .. cjson.encode(item) .. ',' .. string.sub(ids, 2)
    times = '[' .. stamp .. ',' .. string.sub(times, 2)
  else  -- a late event: the ids decoded
    local v = cjson.decode(ids)
    if #v ~= n then error('lists of different lengths') end
    table.insert(v, pos, item)
    ids = cjson.encode(v)
    if at > #times then times = string.sub(times, 1, -2) .. ',' .. stamp .. ']'
    else times = string.sub(times, 1, at - 1) .. stamp .. ',' .. string.sub(times, at) end
  end
  n = n + 1
  while n > cap do
    ids, times, n = cut_last(ids, true), cut_last(times, false), n - 1
  end
  F[name], F[tname], F[nname] = ids, times, n
  D[name], D[tname], D[nname] = true, true, true
end
local function apply(j, S)
  local F, D = S.F, S.D
  local ma, sa = idnum(E.id[j])
  if ma < S.ma or (ma == S.ma and sa <= S.sa) then return 'r' end
  S.ma, S.sa = ma, sa
  F['id'], F['at'], D['id'], D['at'] = E.id[j], now, true, true
  local ev = F['ev'] or ''
  local eid = E.e[j]
  local at = string.find(ev, eid, 1, true)  -- seen before: found between separators
  while at do
    local e = at + #eid
    if (at == 1 or string.byte(ev, at - 1) == 31) and (e > #ev or string.byte(ev, e) == 31) then
      return 'd'
    end
    at = string.find(ev, eid, at + 1, true)
  end
  -- the last `keep` event ids; 'evn' counts them (a row without it: counted once here)
  local n = tonumber(F['evn'] or '')
  if not n then n = (ev == '' and 0) or select(2, string.gsub(ev, SEP, '')) + 1 end
  ev, n = (ev == '' and eid) or (ev .. SEP .. eid), n + 1
  if n > keep then
    local cut = 0
    for _ = 1, n - keep do cut = string.find(ev, SEP, cut + 1, true) end
    ev, n = string.sub(ev, cut + 1), keep
  end
  F['ev'], F['evn'], D['ev'], D['evn'] = ev, n, true, true
  local et, artist, tr = E.t[j], E.a[j], E.r[j]
  local ts, msp = E.ts[j], E.ms[j]
  if ts > tonumber(F['ts'] or '0') then F['ts'], D['ts'] = ts, true end
  -- events, active days and this day's bucket (a ring of day % slots)
  local day = math.floor(ts / dayms)
  local slot = tostring(day % slots)
  add(S, 'ne', 1)
  local held = tonumber(F['d' .. slot] or '-1')
  if held < day then  -- the day's first event (the slot held an older day, or none)
    F['d' .. slot], F['e' .. slot], F['i' .. slot], F['c' .. slot] = day, 0, 0, 0
    D['d' .. slot], D['e' .. slot], D['i' .. slot], D['c' .. slot] = true, true, true, true
    add(S, 'nd', 1)
  end
  if held <= day then  -- (a day older than the ring: its bucket is gone; counted as active)
    add(S, 'e' .. slot, 1)
    if et == 'impression' then add(S, 'i' .. slot, 1) end
    if et == 'click' then add(S, 'c' .. slot, 1) end
  end
  if et == 'impression' then
    add(S, 'ni', 1)
    return 'a'
  end
  F['ax'], D['ax'] = now, true  -- lists or exclusions may change: slates older are stale
  local positive = false
  local T, after = nil, nil
  if et == 'click' then
    add(S, 'nc', 1)
    positive = true
  elseif et == 'stream' then
    add(S, 'ns', 1)
    insert(S, 'h', 'hts', 'hn', artist, ts)
    if tr ~= '' then insert(S, 'rt', 'rts', 'rtn', tr, ts) end
    positive = msp >= smin
    if E.k[j] > 0 then  -- listen ratio against the earlier streams of the track (any listener)
      T = track(E.k[j])
      local pn, ps = T.bn, T.bs  -- a tie with the newest time (or a late stream): those before it
      if ts > T.t then pn, ps = T.n, T.s end
      if pn > 0 and ps > 0 then
        local ratio = msp / (ps / pn)
        local lr = math.log(math.max(ratio, 0.25)) / math.log(2)
        lr = math.min(math.max(lr, -2), 2)
        add(S, 'lrs', math.floor(lr * 65536 + 0.5))
        add(S, 'lrn', 1)
      end
      after = {n = T.n + 1, s = T.s + msp, t = T.t, bn = T.bn, bs = T.bs}
      if ts > T.t then after.t, after.bn, after.bs = ts, T.n, T.s
      elseif ts < T.t then after.bn, after.bs = T.bn + 1, T.bs + msp end
    end
  elseif et == 'follow' or et == 'unfollow' then
    local f, fts = list(S, 'f'), list(S, 'fts')
    local prev = -1
    for i = 1, #f do
      if f[i] == artist then
        prev = tonumber(fts[i]) table.remove(f, i) table.remove(fts, i) break
      end
    end
    if et == 'follow' then
      local at = math.max(ts, prev)
      local pos = #f + 1
      for i = 1, #f do if tonumber(fts[i]) <= at then pos = i break end end
      table.insert(f, pos, artist)
      table.insert(fts, pos, tostring(at))
      positive = true
    elseif prev > ts then  -- an unfollow older than the follow it would undo: the follow stays
      table.insert(f, 1, artist)
      table.insert(fts, 1, tostring(prev))
    end
  end
  if positive then
    local seen = F['seen'] or ''
    if not string.find(SEP .. seen .. SEP, SEP .. artist .. SEP, 1, true) then
      F['seen'], D['seen'] = (seen == '' and artist) or (seen .. SEP .. artist), true
    end
  end
  if after then  -- last: nothing after it can fail and leave the track counted twice
    for name, v in pairs(after) do T[name] = v end
    T.dirty = true
  end
  return 'a'
end
for j = 1, #E.id do
  local u = E.u[j]
  local S = states[u]
  if S == nil then
    local ok, res = pcall(open, u)
    if ok then S = res or false else S = 'bad' end
    if S == 'bad' then redis.call('DEL', KEYS[u]) end
    states[u] = S
  end
  local res = nil
  if S and S ~= 'bad' then
    local ok, r = pcall(apply, j, S)
    if ok then res = r else
      -- a row that does not decode is never served: rebuilt from the batch row (its events
      -- of this call so far go with it)
      redis.call('DEL', KEYS[u])
      states[u] = 'bad'
    end
  end
  out[j] = res or (ARGV[8 + u] == '' and 's') or 'u'
end
local function encoded(name, v)
  if #v == 0 then return '[]' end
  if TIMES[name] then return '[' .. table.concat(v, ',') .. ']' end
  return cjson.encode(v)
end
for i = 1, nu do
  local S = states[i]
  if S and S ~= 'bad' then
    local args = {}
    if S.fresh then  -- the whole row (the seed's fields and those the events added)
      for name in pairs(S.F) do S.D[name] = true end
    end
    for name in pairs(S.D) do
      args[#args + 1] = name
      if S.L[name] then args[#args + 1] = encoded(name, S.L[name])
      else args[#args + 1] = S.F[name] end
    end
    if S.fresh then redis.call('DEL', KEYS[i]) end
    if #args > 0 then redis.call('HSET', KEYS[i], unpack(args)) end
  end
end
for k, T in pairs(tracks) do
  if T.dirty then
    redis.call('HSET', KEYS[nu + k], 'n', T.n, 's', T.s, 't', T.t, 'bn', T.bn, 'bs', T.bs)
  end
end
return table.concat(out)
"""

# KEYS: live rows. Returns one character a key: '1' it holds an applied id, '0' it does not
# (absent, or not a hash: the apply script resets it).
HELD_LUA = r"""
local out = {}
for i = 1, #KEYS do
  out[i] = (redis.pcall('HEXISTS', KEYS[i], 'id') == 1 and '1') or '0'
end
return table.concat(out)
"""
# KEYS[1] the stream; ARGV: group, consumer, count, field. New entries for the consumer (the
# script never blocks), as {their ids joined by ',', their `field` values joined by '\n'} (a
# value's own newlines become spaces; a missing or blank value is '{}'); {} when none.
READ_LUA = r"""
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS',
  KEYS[1], '>')
if not r then return {} end
local ids, lines = {}, {}
for i, m in ipairs(r[1][2]) do
  ids[i] = m[1]
  local line, f = nil, m[2]
  for j = 1, #f, 2 do if f[j] == ARGV[4] then line = f[j + 1] break end end
  if not line or not string.find(line, '%S') then line = '{}'
  elseif string.find(line, '\n', 1, true) then line = string.gsub(line, '\n', ' ') end
  lines[i] = line
end
return {table.concat(ids, ','), table.concat(lines, '\n')}
"""
OUTCOMES = {"a": "applied", "r": "replayed", "d": "duplicate", "s": "seed", "u": "unusable_seed"}


STATUS_KEY = "tastemaker:stream-features:status"  # the worker's last report (the dashboard's)


def worker_status(client: redis.Redis, key: str = STATUS_KEY) -> dict[str, Any] | None:
    """The worker's last report: ``lag_s`` (event time -> applied, newest event), ``events``
    (entries handled since the key was made), ``rate`` (entries/s, last batch), ``applied_at``."""
    raw: Any = client.hgetall(key)
    if not raw:
        return None
    fields = {_text(k): _text(v) for k, v in raw.items()}
    return {
        "lag_s": round(float(fields.get("lag_s", "nan")), 3),
        "events": int(fields.get("events", 0)),
        "rate": round(float(fields.get("rate", 0.0))),
        "applied_at": datetime.fromtimestamp(
            int(fields.get("applied_ms", 0)) / 1000, tz=timezone.utc
        ).isoformat(timespec="seconds"),
    }


def _as_of_ms(value: Any) -> int | None:
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return int(round(value.timestamp() * 1000))
    return int(value)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_state(
    client: redis.Redis, user_key: str, prefix: str = STATE_PREFIX
) -> dict[str, Any] | None:
    """The listener's live state; an undecodable one is deleted (the batch row serves, and
    the next event re-seeds it) and None is returned."""
    key = state_key(user_key, prefix)
    try:
        fields = client.hgetall(key)
    except redis.exceptions.ResponseError:  # WRONGTYPE: something else was written there
        fields = {b"?": b"?"}
    state = decode_state(fields)  # type: ignore[arg-type]
    if fields and state is None:
        log.warning("live row of a listener failed to decode; serving its batch row")
        client.delete(key)
        EVENTS.labels(outcome="rebuilt_from_batch").inc()
    return state


@dataclass(frozen=True)
class StreamConfig:
    stream: str = DEFAULT_STREAM
    group: str = DEFAULT_GROUP
    consumer: str = "features-1"
    batch_size: int = 2000
    block_ms: int = 1000
    apply_chunk: int = 50  # events a script call applies (~2 ms in which Redis serves no one else)
    claim_idle_ms: int = 60_000
    exit_when_idle: bool = False  # stop when nothing new arrives (tests, replays)
    max_backoff_s: float = 5.0
    state_prefix: str = STATE_PREFIX  # key prefix of the live rows
    status_key: str = STATUS_KEY  # where the worker reports lag and progress


@dataclass
class StreamStats:
    entries: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    retries: int = 0

    def add(self, outcome: str, n: int = 1) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + n
        EVENTS.labels(outcome=outcome).inc(n)


@dataclass(frozen=True)
class _Events:
    """A batch's valid events in stream order, as columns (no object per event)."""

    entry_id: list[str]
    user: np.ndarray  # (N,) int64 index into user_keys
    user_keys: list[str]  # the batch's distinct listeners (pseudonymised)
    type: list[str]
    artist: list[str]
    track: list[str]  # '' = none
    track_ref: np.ndarray  # (N,) int64 index into track_ids of a usable stream, else -1
    track_ids: list[str]
    ts: np.ndarray  # (N,) int64 event time, epoch ms
    ms_played: np.ndarray  # (N,) int64, -1 = none
    event_id: list[str]

    def __len__(self) -> int:
        return len(self.entry_id)

    @classmethod
    def empty(cls) -> _Events:
        none = np.zeros(0, dtype=np.int64)
        return cls([], none, [], [], [], [], none, [], none, none, [])

    def take(self, rows: np.ndarray) -> _Events:
        """The events at ``rows`` (in that order), listeners renumbered."""
        r = rows.tolist()
        listeners, user = np.unique(self.user[rows], return_inverse=True)
        return _Events(
            entry_id=[self.entry_id[i] for i in r],
            user=user.astype(np.int64).reshape(-1),
            user_keys=[self.user_keys[i] for i in listeners.tolist()],
            type=[self.type[i] for i in r],
            artist=[self.artist[i] for i in r],
            track=[self.track[i] for i in r],
            track_ref=self.track_ref[rows],
            track_ids=self.track_ids,
            ts=self.ts[rows],
            ms_played=self.ms_played[rows],
            event_id=[self.event_id[i] for i in r],
        )


class FeatureStreamer:
    """The consumer: read -> validate -> apply (Lua) -> ack, with seeds from the batch rows."""

    def __init__(
        self,
        client: redis.Redis,
        batch_rows: Any,  # an OnlineStore-like ``get_many(keys) -> rows``
        key: bytes,
        lookups: Lookups,
        config: StreamConfig = StreamConfig(),
        features: FeatureConfig | None = None,
        rules: IngestRules | None = None,
        state: redis.Redis | None = None,
        reload_lookups: Callable[[], Lookups] | None = None,
        reload_every_s: float = 60.0,
        reference: StreamReference | None = None,
    ) -> None:
        # accounts made (or erased) after the start: the lookups are reloaded this often
        self._reload, self._reload_every_s = reload_lookups, reload_every_s
        self._loaded_at = time.monotonic()
        self.client, self.batch_rows, self.key = client, batch_rows, key
        self.state = state if state is not None else client  # where the live rows are
        self.lookups, self.config = lookups, config
        self.features = features or FeatureConfig()
        self.rules = rules or IngestRules()
        self.stats = StreamStats()
        self.reference = reference  # counters as of the batch rows (None: see seed_state)
        self._tracks_seeded = False
        self._script = self.state.register_script(APPLY_LUA)
        self._held_script = self.state.register_script(HELD_LUA)
        self._read_script = self.client.register_script(READ_LUA)
        self._user_keys: dict[str, str] = {}  # account id -> pseudonym, bounded

    def seed_tracks(self) -> int:
        """The reference's per-track listen state, for tracks the stream has not touched."""
        if self.reference is None:
            return 0
        return seed_tracks(self.state, self.reference, track_key("", self.config.state_prefix))

    def seeds(self, users: Sequence[str]) -> dict[str, str]:
        """Seed JSON of ``users``: each one's batch row and the reference's counters for it."""
        rows = self.batch_rows.get_many(users)
        out = {}
        for u, row in zip(users, rows, strict=True):
            counters = None
            if self.reference is not None:
                as_of = None if row is None else _as_of_ms(row.get("as_of"))
                counters = self.reference.counters(u, as_of)
            out[u] = orjson.dumps(seed_state(row, counters=counters)).decode()
        return out

    def ensure_group(self) -> None:
        ensure_group(self.client, self.config.stream, self.config.group)

    def events(self, ids: Sequence[str], body: bytes) -> _Events:
        """Valid events of the entries ``ids`` (their raw lines: ``body``, one a line) in stream
        order; the rest counted (quarantined/dropped). One vectorised pass: parse, validate,
        pseudonymise each distinct listener once."""
        parsed = parse_object(body)
        for reason, n in collections.Counter(parsed.rejected.reason).items():
            self.stats.add(f"quarantined:{reason}", n)
        table = parsed.table
        if not table.num_rows:
            return _Events.empty()
        users = table["user_id"].combine_chunks().dictionary_encode()
        codes, event_ms = validate_rows(
            table, self.rules, self.lookups, int(time.time() * 1000), users=users
        )
        for code, n in zip(*np.unique(codes[codes != 0], return_counts=True), strict=True):
            reason = reason_name(int(code))
            kind = "dropped" if reason in DROP_REASONS else "quarantined"
            self.stats.add(f"{kind}:{reason}", int(n))
        ok = codes == 0
        sep = np.zeros(len(ok), dtype=bool)
        for name in ("artist_id", "event_id", "track_id"):
            sep |= as_mask(pc.match_substring(table[name], SEP))
        if (ok & sep).any():
            self.stats.add("quarantined:separator_in_id", int((ok & sep).sum()))
        rows = np.flatnonzero(ok & ~sep)
        if not len(rows):
            return _Events.empty()
        t = table.take(pa.array(rows))
        listener, who = np.unique(
            pc.fill_null(users.indices, 0).to_numpy(zero_copy_only=False)[rows],
            return_inverse=True,
        )
        user_keys = self.user_keys(users.dictionary.take(pa.array(listener)).to_pylist())
        ms = pc.fill_null(t["ms_played"], -1).to_numpy(zero_copy_only=False).astype(np.int64)
        track = pc.fill_null(t["track_id"], "").combine_chunks()
        # a usable stream (a track and its ms_played) updates the track's listen reference
        usable = as_mask(pc.and_(pc.equal(t["event_type"], "stream"), pc.not_equal(track, "")))
        usable &= ms >= 0
        tracks = track.dictionary_encode()
        tr = tracks.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        tr[~usable] = -1
        line_no = parsed.line_no[rows] - 1
        return _Events(
            entry_id=[ids[i] for i in line_no.tolist()],
            user=who.astype(np.int64).reshape(-1),
            user_keys=user_keys,
            type=t["event_type"].to_pylist(),
            artist=t["artist_id"].to_pylist(),
            track=track.to_pylist(),
            track_ref=tr,
            track_ids=tracks.dictionary.to_pylist(),
            ts=np.ascontiguousarray(event_ms[rows], dtype=np.int64),
            ms_played=ms,
            event_id=t["event_id"].to_pylist(),
        )

    def user_keys(self, user_ids: Sequence[str]) -> list[str]:
        """Pseudonyms of ``user_ids`` (:func:`data.pii.pseudonymise`), each account hashed once
        while the memo holds it (it is cleared past ``PSEUDONYM_MEMO`` accounts)."""
        memo = self._user_keys
        if len(memo) > PSEUDONYM_MEMO:
            memo.clear()
        out = []
        for uid in user_ids:
            key = memo.get(uid)
            if key is None:
                key = memo[uid] = pseudonymise(uid, self.key)
            out.append(key)
        return out

    def _held(self, user_keys: Sequence[str]) -> list[bool]:
        """Whether each listener has a live row with an applied id (one script call)."""
        prefix = self.config.state_prefix
        keys = [state_key(u, prefix) for u in user_keys]
        return [c == ord("1") for c in self._held_script(keys=keys, client=self.state)]

    def _apply(self, events: _Events, seeds: Mapping[str, str]) -> bytes:
        """Apply ``events`` in order, one script call a chunk (pipelined); seeds go with a
        listener's first chunk. Returns one outcome letter an event (:data:`OUTCOMES`)."""
        now = str(int(time.time() * 1000))
        common: list[str | int] = [now, self.features.history_len, self.features.stream_min_ms]
        common += [DEDUPE_EVENTS, ring_slots(self.features), DAY_MS]
        prefix, chunk = self.config.state_prefix, self.config.apply_chunk
        track_prefix = track_key("", prefix)
        given: set[int] = set()
        pipe = self.state.pipeline(transaction=False)
        for lo in range(0, len(events), chunk):
            hi = min(lo + chunk, len(events))
            listeners, u = np.unique(events.user[lo:hi], return_inverse=True)
            refs = events.track_ref[lo:hi]
            usable = refs >= 0
            tracks, k = np.unique(refs[usable], return_inverse=True)
            track_col = np.zeros(hi - lo, dtype=np.int64)
            track_col[usable] = k.reshape(-1) + 1
            keys = [state_key(events.user_keys[i], prefix) for i in listeners.tolist()]
            keys += [track_prefix + events.track_ids[i] for i in tracks.tolist()]
            seed_args = []
            for i in listeners.tolist():
                seed_args.append("" if i in given else seeds.get(events.user_keys[i], ""))
                given.add(i)
            columns = {
                "id": events.entry_id[lo:hi],
                "u": u.reshape(-1).astype(np.int64) + 1,
                "k": track_col,
                "t": events.type[lo:hi],
                "a": events.artist[lo:hi],
                "r": events.track[lo:hi],
                "ts": events.ts[lo:hi],
                "ms": events.ms_played[lo:hi],
                "e": events.event_id[lo:hi],
            }
            payload = orjson.dumps(columns, option=orjson.OPT_SERIALIZE_NUMPY)
            self._script(
                keys=keys, args=[*common, len(listeners), payload, *seed_args], client=pipe
            )
        return b"".join(pipe.execute())

    def process(self, entries: Sequence[tuple[bytes, Mapping]]) -> None:
        """Apply one batch of entries (as XREADGROUP gives them) and acknowledge them (all of
        them, valid or not)."""
        if not entries:
            return
        lines = [
            (f.get(EVENT_FIELD) or b"").replace(b"\n", b" ").strip() or b"{}" for _, f in entries
        ]
        ids = b"\0".join(i for i, _ in entries).decode().split("\0")
        self._process(ids, b"\n".join(lines))

    def _process(self, ids: Sequence[str], body: bytes) -> None:
        t0 = time.perf_counter()
        if self._reload is not None and time.monotonic() - self._loaded_at > self._reload_every_s:
            self.lookups, self._loaded_at = self._reload(), time.monotonic()
        events = self.events(ids, body)
        now = time.time()
        if len(events):
            # listeners without a live state get their seed with their events, so every event
            # is applied in stream order (the track references depend on the order across
            # listeners)
            held = self._held(events.user_keys)
            missing = [u for u, h in zip(events.user_keys, held, strict=True) if not h]
            outcome = np.frombuffer(
                self._apply(events, self.seeds(missing) if missing else {}), np.uint8
            ).copy()
            need = np.flatnonzero(outcome == ord("s"))
            if len(need):  # a state dropped in between (undecodable): seed from the batch row
                again = events.take(need)
                seeds = self.seeds(again.user_keys)
                outcome[need] = np.frombuffer(self._apply(again, seeds), np.uint8)
            letters, counts = np.unique(outcome, return_counts=True)
            for letter, n in zip(letters.tolist(), counts.tolist(), strict=True):
                self.stats.add(OUTCOMES[chr(letter)], n)
            now = time.time()
            lag = np.maximum(0.0, now - events.ts / 1000.0)
            LAG.observe_many(lag[outcome == ord("a")])
            LAST_LAG.set(float(lag[-1]))
        self.client.xack(self.config.stream, self.config.group, *ids)
        self.stats.entries += len(ids)
        rate = len(ids) / max(time.perf_counter() - t0, 1e-9)
        APPLIED_RATE.set(rate)
        report: dict[Any, Any] = {"applied_ms": str(int(now * 1000)), "rate": f"{rate:.0f}"}
        if len(events):
            report["lag_s"] = f"{max(0.0, now - int(events.ts[-1]) / 1000.0):.3f}"
        pipe = self.state.pipeline(transaction=False)
        pipe.hset(self.config.status_key, mapping=report)
        pipe.hincrby(self.config.status_key, "events", len(ids))
        pipe.execute()

    def _read(self, start: str, block: int | None) -> list[tuple[bytes, Mapping]]:
        cfg = self.config
        reply: Any = self.client.xreadgroup(
            cfg.group, cfg.consumer, {cfg.stream: start}, count=cfg.batch_size, block=block
        )
        return [(i, f) for _, messages in reply or [] for i, f in messages if f is not None]

    def _drain(self) -> int:
        """Apply the next batch of new entries, read by a script (never blocks) that hands
        them over as two strings (no reply object per entry); returns how many there were."""
        cfg = self.config
        reply: Any = self._read_script(
            keys=[cfg.stream], args=[cfg.group, cfg.consumer, cfg.batch_size, EVENT_FIELD]
        )
        if not reply:
            return 0
        ids = reply[0].decode().split(",")
        self._process(ids, reply[1])
        return len(ids)

    def _recover(self) -> None:
        """Our own pending entries (a previous life's), then those dead consumers left."""
        while batch := self._read("0", None):
            self.process(batch)
        cfg, cursor = self.config, "0-0"
        while True:
            reply = self.client.xautoclaim(
                cfg.stream, cfg.group, cfg.consumer, cfg.claim_idle_ms, cursor, count=cfg.batch_size
            )
            cursor = reply[0]
            self.process([(i, f) for i, f in reply[1] if f is not None])
            if cursor in (b"0-0", "0-0"):
                return

    def run(self, stop: Any) -> StreamStats:
        """Until ``stop`` is set (or idle, with ``exit_when_idle``); Redis errors -> back-off,
        then resume from the pending entries."""
        backoff = 0.1
        while not stop.is_set():
            try:
                if not self._tracks_seeded:
                    log.info("track references: %d seeded", self.seed_tracks())
                    self._tracks_seeded = True
                self.ensure_group()
                self._recover()
                while not stop.is_set():
                    backoff = 0.1
                    if self._drain():
                        continue
                    batch = self._read(">", self.config.block_ms)  # idle: wait for entries
                    if batch:
                        self.process(batch)
                    elif self.config.exit_when_idle:
                        return self.stats
                return self.stats
            except redis.exceptions.ResponseError as exc:
                # the stream or its group was deleted under us: recreate them and go on
                if not any(m in str(exc) for m in ("NOGROUP", "UNBLOCKED")):
                    raise
                self.stats.retries += 1
                RETRIES.inc()
                log.warning("stream or group gone (%s); recreating them", exc)
                stop.wait(backoff)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                self.stats.retries += 1
                RETRIES.inc()
                log.warning("Redis unavailable (%s); retrying in %.1f s", exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, self.config.max_backoff_s)
        return self.stats
