"""Feature freshness in the A/B simulation: a model arm whose rows move with its listeners.

An arm ``model@streamed`` or ``model@day-old`` (also ``retrieval@...``) posts every session's
impressions, clicks, streams and follows as raw events to its own Redis stream, and the
streaming-features worker itself (:class:`data.features.stream.FeatureStreamer`: parse,
validate, pseudonymise, the Lua update; seeded from the online store and the lake's
reference counters, as ``tastemaker stream-features`` is) keeps the arm's live rows. The
served model then ranks from :func:`data.features.live.live_row`:

* ``streamed``: at every session, the row as it is now (a click reaches the next session);
* ``day-old``: once a day, the row as of that day's midnight, which the parity test shows is
  the batch features the nightly job would publish (a click reaches the next day).

The arm's keys live under a prefix of their own and are deleted at the end.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson

from core.constants import DAY_MS
from core.settings import Settings
from core.workspace import Workspace

log = logging.getLogger("tastemaker.simulate")

FRESHNESS = ("day-old", "streamed")
FRESH_POLICIES = ("model", "retrieval")  # the served bundle as it is, or without its ranker


def parse_arm(arm: str) -> tuple[str, str | None]:
    """``policy@freshness`` -> (policy, freshness); a plain policy has no freshness (its list
    is computed once, from the online store as published)."""
    policy, sep, fresh = arm.partition("@")
    if not sep:
        return policy, None
    if fresh not in FRESHNESS or policy not in FRESH_POLICIES:
        raise ValueError(
            f"arm {arm!r}: freshness is {' or '.join(FRESHNESS)}, for policies "
            f"{', '.join(FRESH_POLICIES)} (e.g. model@streamed)"
        )
    return policy, fresh


class LiveArm:
    """One arm's live rows: its stream, its worker, and the served model ranking from them."""

    def __init__(
        self,
        ws: Workspace,
        settings: Settings,
        redis_url: str,
        policy: str,
        freshness: str,
        population: Any,
        members: np.ndarray,
        list_len: int,
    ) -> None:
        import redis

        from data.features.online_store import open_online_store
        from data.features.stream import FeatureStreamer, StreamConfig
        from data.ingest.job import load_lookups
        from data.pii import pseudonym_key, pseudonymise
        from jobs.stream import load_reference
        from serving.reload import ModelHolder

        self.freshness, self.population, self.list_len = freshness, population, list_len
        self.model = ModelHolder(settings.bundles_path).current
        if policy == "retrieval":
            self.model = dataclasses.replace(self.model, ranker=None)
        self.client = redis.Redis.from_url(redis_url)
        self.tag = f"tastemaker:sim:{uuid.uuid4().hex[:10]}:"
        self.config = StreamConfig(
            stream=self.tag + "events",
            state_prefix=self.tag + "live:",
            batch_size=2000,
            block_ms=5,
            exit_when_idle=True,
        )
        self.store = open_online_store(settings.online_store_target)
        key = pseudonym_key(settings)
        ids = np.asarray(population.people.user_id, dtype=object)[members]
        self.user_ids = ids
        self.user_keys = [pseudonymise(str(u), key) for u in ids]
        self.worker = FeatureStreamer(
            self.client,
            self.store,
            key,
            load_lookups(ws, settings.accounts_url),
            self.config,
            reference=load_reference(
                settings.model_copy(update={"workspace": ws.root}), self.store
            ),
        )
        self.index = {a: i for i, a in enumerate(population.catalogue.artist_id)}
        self.cached: dict[int, tuple[int, np.ndarray]] = {}  # member -> (day, list)
        self.events = 0
        self.worker_s = 0.0

    def lists(self, rows_of: np.ndarray, day: int, t_ms: int, day_ms: int) -> np.ndarray:
        """``(len(rows_of), list_len)`` world artist indices for the arm's listeners
        ``rows_of`` (positions in ``members``) at a session at ``t_ms`` of ``day``."""
        from data.features.stream import live_row, read_state
        from serving.pipeline import score_rows
        from serving.recommender import answer_from_picks, trending_list

        out = np.full((len(rows_of), self.list_len), -1, dtype=np.int64)
        todo = []
        for j, i in enumerate(rows_of.tolist()):
            hit = self.cached.get(i)
            if self.freshness == "day-old" and hit is not None and hit[0] == day:
                out[j] = hit[1]
            else:
                todo.append(j)
        at = t_ms if self.freshness == "streamed" else day_ms
        rows: list[dict[str, Any] | None] = []
        for j in todo:
            key = self.user_keys[rows_of[j]]
            row, state = self.store.get(key), read_state(self.client, key, self.config.state_prefix)
            rows.append(live_row(row, state, at) if state is not None else row)
        scored = [r for r in rows if r is not None]
        picks = iter(score_rows(self.model, scored, self.list_len) if scored else [])
        for j, row in zip(todo, rows, strict=True):
            if row is None:
                recs = trending_list(self.model, self.list_len, None)
            else:
                recs = answer_from_picks(self.model, row, self.list_len, next(picks))
            found = [self.index[r.artist_id] for r in recs.items if r.artist_id in self.index]
            out[j, : len(found)] = found
            self.cached[int(rows_of[j])] = (day, out[j].copy())
        return out

    def post(
        self, rows_of: np.ndarray, slates: np.ndarray, out: dict[str, np.ndarray], t_ms: int
    ) -> None:
        """The session's events as raw lines on the arm's stream, then the worker drains it."""
        from data.ingest.subscriber import EVENT_FIELD

        cat = self.population.catalogue
        artists = np.asarray(cat.artist_id, dtype=object)
        pipe = self.client.pipeline(transaction=False)
        n = 0
        for j, i in enumerate(rows_of.tolist()):
            uid = str(self.user_ids[i])
            for p, a in enumerate(slates[j].tolist()):
                if a < 0:
                    continue
                base = {"user_id": uid, "artist_id": artists[a]}
                eid = f"{self.tag}{t_ms}-{i}-{p}"
                kinds: list[tuple[str, int, dict[str, Any]]] = [("impression", 0, {})]
                if out["clicked"][j, p]:
                    kinds.append(("click", 1000, {}))
                ms = int(out["ms_played"][j, p])
                if ms > 0:
                    tr = int(out["track"][j, p])
                    stream = {"track_id": f"{artists[a]}-t{tr:02d}", "ms_played": ms}
                    dur = int(cat.duration_ms[a, tr])
                    if dur > 0:
                        stream["track_duration_ms"] = dur
                    kinds.append(("stream", 2000, stream))
                if out["followed"][j, p]:
                    kinds.append(("follow", 3000, {}))
                for kind, dt, extra in kinds:
                    event = {**base, **extra, "event_id": f"{eid}-{kind}", "event_type": kind}
                    event["client_ts"] = _iso(t_ms + dt)
                    event["server_ts"] = t_ms + dt + 100
                    pipe.xadd(self.config.stream, {EVENT_FIELD: orjson.dumps(event)})
                    n += 1
        pipe.execute()
        started = time.process_time()
        self.worker.run(threading.Event())
        self.worker_s += time.process_time() - started
        self.events += n

    def cost(self) -> dict[str, Any]:
        """Events streamed, worker CPU per event, and Redis memory of the live rows per
        listener with one (``MEMORY USAGE`` summed; the track references reported apart)."""
        rows = tracks = n_rows = 0
        for k in self.client.scan_iter(f"{self.config.state_prefix}*", count=1000):
            size = int(self.client.memory_usage(k, samples=0) or 0)
            if k.decode().startswith(f"{self.config.state_prefix}track:"):
                tracks += size
            else:
                rows, n_rows = rows + size, n_rows + 1
        return {
            "stream_events": self.events,
            "worker_cpu_us_per_event": round(1e6 * self.worker_s / max(self.events, 1), 1),
            "live_rows": n_rows,
            "redis_bytes_per_listener": round(rows / max(n_rows, 1)),
            "redis_track_bytes": tracks,
            "outcomes": dict(self.worker.stats.outcomes),
        }

    def close(self) -> None:
        for k in self.client.scan_iter(f"{self.tag}*", count=1000):
            self.client.delete(k)
        self.store.close()
        self.client.close()


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()


def day_start(start_ms: int, day: int) -> int:
    return start_ms + day * DAY_MS
