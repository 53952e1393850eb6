"""The live rows ``tastemaker stream-features`` writes, as the service reads them.

One bounded Redis ``GET`` per request that reaches the store (``store_timeout_ms``); a failure
is counted, the request goes on with the batch row, and the reader rests for
``store_cooldown_s``. A live row that fails to decode is never served: the batch row is
(:func:`data.features.stream.read_state`, which also drops it so the next event re-seeds it).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from core.urls import redact_url
from data.features.stream import STATE_PREFIX, read_state, worker_status
from serving.metrics import STORE_ERRORS

log = logging.getLogger("tastemaker.serving")


class LiveRows:
    def __init__(self, url: str, timeout_ms: float, cooldown_s: float, prefix: str = STATE_PREFIX):
        self.url = redact_url(url)
        timeout = timeout_ms / 1000.0
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self.prefix, self.cooldown_s = prefix, cooldown_s
        self._down_until = 0.0

    def get(self, user_key: str) -> dict[str, Any] | None:
        """The listener's live state, or None (none yet, undecodable, or Redis failing)."""
        if time.monotonic() < self._down_until:
            return None
        try:
            return read_state(self.client, user_key, self.prefix)
        except redis.RedisError as exc:
            STORE_ERRORS.labels(kind="live_rows").inc()
            self._down_until = time.monotonic() + self.cooldown_s
            log.warning("live rows at %s failing (%s); batch rows only", self.url, exc)
            return None

    def status(self) -> dict[str, Any] | None:
        """The worker's last report (lag, events applied, when), or None (none, or failing)."""
        try:
            return worker_status(self.client)
        except redis.RedisError:
            return None

    def close(self) -> None:
        self.client.close()
