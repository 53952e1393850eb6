"""Streaming features: the event bus -> each listener's live online row, event by event.

``tastemaker stream-features`` is a Redis Streams consumer group (``tastemaker-features``) on
the stream the raw-object subscriber drains (:mod:`data.ingest.subscriber`, field ``event``).
Each batch of entries is parsed and validated with ingest's own parser and row rules
(:func:`data.ingest.parse.parse_object`, :func:`data.ingest.validate.validate_rows`, the
account table and the catalogue as lookups), the account id is pseudonymised with the same
HMAC (:func:`data.pii.pseudonymise`), and every valid event is applied to the listener's
*live state* (``tastemaker:live:<user_key>``, a JSON document) by one Lua script:

* the recent-artist history and recent tracks (newest first, ``history_len`` long, no
  de-duplication: the batch's :func:`data.features.user.last_per_user` order), follows (a
  pair's last action decides; newest follow first), the seen set (first positive event per
  artist: click, follow, stream of >= ``stream_min_ms``), impression / click / stream counters;
* atomically (one script call on the listener's hash, which an impression touches only in
  its counters), and idempotently by stream id: the state stores the last applied id, and an entry at or below it changes nothing (redelivery after a crash); the
  state also keeps the last ``DEDUPE_EVENTS`` event ids, so a duplicate *delivery* of one
  event (a retried client post: new stream id, same ``event_id``) counts once, as ingest's
  dedupe does.

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

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson
import redis
from prometheus_client import Counter, Gauge, Histogram

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
from data.ingest.validate import IngestRules, Lookups, reason_name, validate_rows
from data.pii import pseudonymise

__all__ = ["FeatureStreamer", "StreamConfig", "live_row", "read_state", "seed_state", "state_key"]

log = logging.getLogger("tastemaker.data")

DEFAULT_GROUP = "tastemaker-features"
DEDUPE_EVENTS = 64  # event ids remembered per listener (duplicate deliveries arrive close)
DROP_REASONS = ("unknown_user", "deleted_user")

EVENTS = Counter(
    "tastemaker_stream_events_total",
    "Stream entries handled by the feature worker, by outcome",
    ["outcome"],  # applied | replayed | duplicate | dropped:<reason> | quarantined:<reason>
)
LAG = Histogram(
    "tastemaker_stream_lag_seconds",
    "Event time (client_ts, as ingest reads it) -> applied to the live row",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 60, 600, 3600, 86400),
)
LAST_LAG = Gauge("tastemaker_stream_last_lag_seconds", "Lag of the newest applied event")
APPLIED_RATE = Gauge(
    "tastemaker_stream_events_per_second", "Entries handled per second in the last batch"
)
RETRIES = Counter("tastemaker_stream_redis_retries_total", "Redis failures the worker rode out")

# KEYS[1] the listener's live row, a hash; KEYS[2] (a stream with a track and ms_played only)
# the track's listen reference, a hash (n, s, t, bn, bs: :mod:`data.features.live`);
# ARGV: 1 stream id, 2 seed JSON ('' = none), 3 type,
# 4 artist, 5 track ('' = none), 6 event ms, 7 ms_played (-1 = none), 8 event_id,
# 9 history_len, 10 stream_min_ms, 11 now ms, 12 dedupe length, 13 day buckets, 14 day ms. Returns 'seed' (no usable
# row: call again with the batch row), 'replayed' (id already applied), 'duplicate' (event_id
# seen) or 'applied'. Hash fields: id, at, ax, ts, base, ni, nc, ns (numbers); h, hts, rt,
# rts, f, fts (JSON lists); seen, ev (ids joined by SEP, so a membership test is a plain find
# and an impression never decodes a list).
APPLY_LUA = r"""
local k = KEYS[1]
local SEP = '\31'
local kind = redis.call('TYPE', k)['ok']
if kind ~= 'hash' and kind ~= 'none' then redis.call('DEL', k) end
local function main()
local id = redis.call('HGET', k, 'id')
if not id then
  if ARGV[2] == '' then return 'seed' end
  redis.call('DEL', k)
  local seed = cjson.decode(ARGV[2])
  for name, v in pairs(seed) do redis.call('HSET', k, name, v) end
  id = seed['id']
end
local function idnum(x)
  local a, b = string.match(x, '^(%d+)-(%d+)$')
  return tonumber(a), tonumber(b)
end
local ma, sa = idnum(ARGV[1])
local mb, sb = idnum(id)
if ma < mb or (ma == mb and sa <= sb) then return 'replayed' end
local now = ARGV[11]
redis.call('HSET', k, 'id', ARGV[1], 'at', now)
local ev = redis.call('HGET', k, 'ev') or ''
local eid = ARGV[8]
if string.find(SEP .. ev .. SEP, SEP .. eid .. SEP, 1, true) then return 'duplicate' end
ev = (ev == '' and eid) or (ev .. SEP .. eid)
local extra = select(2, string.gsub(ev, SEP, '')) + 1 - tonumber(ARGV[12])
if extra > 0 then
  local cut = 0
  for _ = 1, extra do cut = string.find(ev, SEP, cut + 1, true) end
  ev = string.sub(ev, cut + 1)
end
redis.call('HSET', k, 'ev', ev)
local et, artist, track = ARGV[3], ARGV[4], ARGV[5]
local ts, msp = tonumber(ARGV[6]), tonumber(ARGV[7])
local cap = tonumber(ARGV[9])
local last = tonumber(redis.call('HGET', k, 'ts') or '0')
if ts > last then redis.call('HSET', k, 'ts', ts) end
-- events, active days and this day's bucket (a ring of day % slots)
local day = math.floor(ts / tonumber(ARGV[14]))
local slot = tostring(day % tonumber(ARGV[13]))
redis.call('HINCRBY', k, 'ne', 1)
local held = tonumber(redis.call('HGET', k, 'd' .. slot) or '-1')
if held < day then  -- the day's first event (the slot held an older day, or none)
  redis.call('HSET', k, 'd' .. slot, day, 'e' .. slot, 0, 'i' .. slot, 0, 'c' .. slot, 0)
  redis.call('HINCRBY', k, 'nd', 1)
end
if held <= day then  -- (a day older than the ring: its bucket is gone; counted as active)
  redis.call('HINCRBY', k, 'e' .. slot, 1)
  if et == 'impression' then redis.call('HINCRBY', k, 'i' .. slot, 1) end
  if et == 'click' then redis.call('HINCRBY', k, 'c' .. slot, 1) end
end
if et == 'impression' then
  redis.call('HINCRBY', k, 'ni', 1)
  return 'applied'
end
redis.call('HSET', k, 'ax', now)  -- lists or exclusions may change: slates older are stale
local function load(name)
  local raw = redis.call('HGET', k, name)
  if not raw or raw == '' or raw == '{}' then return {} end
  return cjson.decode(raw)
end
local function store(name, v)
  if #v == 0 then redis.call('HSET', k, name, '[]') else redis.call('HSET', k, name, cjson.encode(v)) end
end
-- newest first by event time; a tie goes before the older arrivals (lake order)
local function insert(name, tname, item)
  local items, times = load(name), load(tname)
  local pos = #items + 1
  for i = 1, #items do
    if times[i] <= ts then pos = i break end
  end
  table.insert(items, pos, item)
  table.insert(times, pos, ts)
  while #items > cap do table.remove(items) table.remove(times) end
  store(name, items)
  store(tname, times)
end
local positive = false
local track_update = nil
if et == 'click' then
  redis.call('HINCRBY', k, 'nc', 1)
  positive = true
elseif et == 'stream' then
  redis.call('HINCRBY', k, 'ns', 1)
  insert('h', 'hts', artist)
  if track ~= '' then insert('rt', 'rts', track) end
  positive = msp >= tonumber(ARGV[10])
  if KEYS[2] then  -- listen ratio against the earlier streams of the track (any listener)
    local r = redis.call('HMGET', KEYS[2], 'n', 's', 't', 'bn', 'bs')
    local n, s, t = tonumber(r[1] or '0'), tonumber(r[2] or '0'), tonumber(r[3] or '-1')
    local bn, bs = tonumber(r[4] or '0'), tonumber(r[5] or '0')
    local pn, ps = bn, bs  -- a tie with the newest time (or a late stream): those before it
    if ts > t then pn, ps = n, s end
    if pn > 0 and ps > 0 then
      local ratio = msp / (ps / pn)
      local lr = math.log(math.max(ratio, 0.25)) / math.log(2)
      lr = math.min(math.max(lr, -2), 2)
      redis.call('HINCRBY', k, 'lrs', math.floor(lr * 65536 + 0.5))
      redis.call('HINCRBY', k, 'lrn', 1)
    end
    if ts > t then track_update = {'t', ts, 'bn', n, 'bs', s}
    elseif ts < t then track_update = {'bn', bn + 1, 'bs', bs + msp}
    else track_update = {} end
  end
elseif et == 'follow' or et == 'unfollow' then
  local f, fts = load('f'), load('fts')
  local prev = -1
  for i = 1, #f do
    if f[i] == artist then prev = fts[i] table.remove(f, i) table.remove(fts, i) break end
  end
  if et == 'follow' then
    local at = math.max(ts, prev)
    local pos = #f + 1
    for i = 1, #f do if fts[i] <= at then pos = i break end end
    table.insert(f, pos, artist)
    table.insert(fts, pos, at)
    positive = true
  elseif prev > ts then  -- an unfollow older than the follow it would undo: the follow stays
    table.insert(f, 1, artist)
    table.insert(fts, 1, prev)
  end
  store('f', f)
  store('fts', fts)
end
if positive then
  local seen = redis.call('HGET', k, 'seen') or ''
  if not string.find(SEP .. seen .. SEP, SEP .. artist .. SEP, 1, true) then
    redis.call('HSET', k, 'seen', (seen == '' and artist) or (seen .. SEP .. artist))
  end
end
if track_update then  -- last: nothing after it can fail and leave the track counted twice
  redis.call('HINCRBY', KEYS[2], 'n', 1)
  redis.call('HINCRBY', KEYS[2], 's', msp)
  if #track_update > 0 then redis.call('HSET', KEYS[2], unpack(track_update)) end
end
return 'applied'
end
local ok, res = pcall(main)
if ok then return res end
redis.call('DEL', k)  -- a row that does not decode is never served: rebuilt from the batch row
if ARGV[2] == '' then return 'seed' end
return 'unusable_seed'
"""


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
class _Event:
    entry_id: str
    user_key: str
    type: str
    artist: str
    track: str
    ts: int
    ms_played: int
    event_id: str


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

    def events(self, entries: Sequence[tuple[bytes, Mapping]]) -> list[_Event]:
        """Valid events of ``entries`` in stream order; the rest counted (quarantined/dropped)."""
        lines = []
        for _, fields in entries:
            line = (fields.get(EVENT_FIELD) or b"").replace(b"\n", b" ").strip()
            lines.append(line or b"{}")
        parsed = parse_object(b"\n".join(lines))
        for reason in parsed.rejected.reason:
            self.stats.add(f"quarantined:{reason}")
        table = parsed.table
        if not table.num_rows:
            return []
        codes, event_ms = validate_rows(table, self.rules, self.lookups, int(time.time() * 1000))
        cols = {
            n: table[n].to_pylist()
            for n in ("event_type", "user_id", "artist_id", "track_id", "ms_played", "event_id")
        }
        keys: dict[str, str] = {}
        out = []
        for r, (line_no, code) in enumerate(
            zip(parsed.line_no.tolist(), codes.tolist(), strict=True)
        ):
            if code:
                reason = reason_name(code)
                kind = "dropped" if reason in DROP_REASONS else "quarantined"
                self.stats.add(f"{kind}:{reason}")
                continue
            if any(SEP in (cols[c][r] or "") for c in ("artist_id", "event_id", "track_id")):
                self.stats.add("quarantined:separator_in_id")
                continue
            uid = cols["user_id"][r]
            user_key = keys.get(uid) or keys.setdefault(uid, pseudonymise(uid, self.key))
            ms = cols["ms_played"][r]
            out.append(
                _Event(
                    entry_id=entries[line_no - 1][0].decode(),
                    user_key=user_key,
                    type=cols["event_type"][r],
                    artist=cols["artist_id"][r],
                    track=cols["track_id"][r] or "",
                    ts=int(event_ms[r]),
                    ms_played=-1 if ms is None else int(ms),
                    event_id=cols["event_id"][r],
                )
            )
        return out

    def _apply(self, events: list[_Event], seeds: Mapping[str, str]) -> list[str]:
        now = str(int(time.time() * 1000))
        h, smin = str(self.features.history_len), str(self.features.stream_min_ms)
        slots, prefix = ring_slots(self.features), self.config.state_prefix
        pipe = self.state.pipeline(transaction=False)
        for e in events:
            keys = [state_key(e.user_key, prefix)]
            if e.type == "stream" and e.track and e.ms_played >= 0:
                keys.append(track_key(e.track, prefix))
            self._script(
                keys=keys,
                args=[
                    e.entry_id,
                    seeds.get(e.user_key, ""),
                    e.type,
                    e.artist,
                    e.track,
                    e.ts,
                    e.ms_played,
                    e.event_id,
                    h,
                    smin,
                    now,
                    DEDUPE_EVENTS,
                    slots,
                    DAY_MS,
                ],
                client=pipe,
            )
        return [r.decode() if isinstance(r, bytes) else str(r) for r in pipe.execute()]

    def process(self, entries: Sequence[tuple[bytes, Mapping]]) -> None:
        """Apply one batch of entries and acknowledge them (all of them, valid or not)."""
        if not entries:
            return
        t0 = time.perf_counter()
        if self._reload is not None and time.monotonic() - self._loaded_at > self._reload_every_s:
            self.lookups, self._loaded_at = self._reload(), time.monotonic()
        events = self.events(entries)
        # listeners without a live state get their seed with their events, so every event is
        # applied in stream order (the track references depend on the order across listeners)
        users = sorted({e.user_key for e in events})
        pipe = self.state.pipeline(transaction=False)
        for u in users:
            pipe.hexists(state_key(u, self.config.state_prefix), "id")
        held = pipe.execute(raise_on_error=False)  # another type: seeded (the script resets it)
        missing = [u for u, h in zip(users, held, strict=True) if isinstance(h, Exception) or not h]
        results = self._apply(events, self.seeds(missing) if missing else {})
        need = [e for e, r in zip(events, results, strict=True) if r == "seed"]
        if need:  # a state dropped in between (undecodable): seed from the batch row again
            seeds = self.seeds(sorted({e.user_key for e in need}))
            again = iter(self._apply(need, seeds))
            results = [next(again) if r == "seed" else r for r in results]
        now = time.time()
        for e, r in zip(events, results, strict=True):
            self.stats.add(r)
            if r == "applied":
                LAG.observe(max(0.0, now - e.ts / 1000.0))
        if events:
            LAST_LAG.set(max(0.0, now - events[-1].ts / 1000.0))
        self.client.xack(self.config.stream, self.config.group, *[i for i, _ in entries])
        self.stats.entries += len(entries)
        rate = len(entries) / max(time.perf_counter() - t0, 1e-9)
        APPLIED_RATE.set(rate)
        report: dict[Any, Any] = {"applied_ms": str(int(now * 1000)), "rate": f"{rate:.0f}"}
        if events:
            report["lag_s"] = f"{max(0.0, now - events[-1].ts / 1000.0):.3f}"
        pipe = self.state.pipeline(transaction=False)
        pipe.hset(self.config.status_key, mapping=report)
        pipe.hincrby(self.config.status_key, "events", len(entries))
        pipe.execute()

    def _read(self, start: str, block: int | None) -> list[tuple[bytes, Mapping]]:
        cfg = self.config
        reply: Any = self.client.xreadgroup(
            cfg.group, cfg.consumer, {cfg.stream: start}, count=cfg.batch_size, block=block
        )
        return [(i, f) for _, messages in reply or [] for i, f in messages if f is not None]

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
                    batch = self._read(">", self.config.block_ms)
                    if batch:
                        self.process(batch)
                    elif self.config.exit_when_idle:
                        return self.stats
                    backoff = 0.1
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
