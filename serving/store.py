"""The online store as the service sees it: bounded in time, honest about its health.

* Opening (:func:`open_serving_store`, over :mod:`core.kv`): a SQLite store file must exist (a
  missing file is a deployment error, not an empty database created on the spot); a Redis store
  gets socket and connect timeouts; messages show URLs with credentials redacted.
* Every lookup is bounded (Redis: ``store_timeout_ms``; SQLite is a local file read). A failing
  call is counted, the request degrades to trending, and the store is skipped for
  ``store_cooldown_s`` so that a hung Redis costs one timeout per cool-down, not one per request.
* :meth:`GuardedStore.probe` (run by a background thread, never on a request) checks that the
  store answers *and holds rows*: corrupt or empty counts as failing. ``/readyz`` reads the last
  probe's verdict, so it never waits on the store itself.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Generic, TypeVar

from core.kv import Reader, sqlite_path
from core.urls import redact_url
from data.features.online_store import OnlineStore, open_online_store
from serving.metrics import STORE_ERRORS
from serving.periodic import Periodic

log = logging.getLogger("tastemaker.serving")
T = TypeVar("T")


class StoreUnavailableError(RuntimeError):
    """The online store cannot be opened (missing file, unreachable server)."""


def open_serving_store(target: str, timeout_ms: float) -> OnlineStore:
    """Open the configured online store for serving; raise if it is not there."""
    try:
        return open_online_store(target, timeout_s=timeout_ms / 1000.0, create=False)
    except FileNotFoundError:
        raise StoreUnavailableError(
            f"online store file {sqlite_path(target)} does not exist; run `tastemaker features` "
            "to publish user features, or point --online-store / TASTEMAKER_ONLINE_STORE_URL "
            "at the store"
        ) from None
    except sqlite3.Error as exc:
        raise StoreUnavailableError(
            f"online store file {sqlite_path(target)} is unusable: {exc}"
        ) from exc
    except Exception as exc:  # ConnectionError, TimeoutError: both mean "not there"
        raise StoreUnavailableError(f"online store at {redact_url(target)}: {exc}") from exc


class GuardedStore(Generic[T]):
    """Wraps a store (online rows or slates: any :class:`core.kv.Reader`) with a cool-down
    after failures and a cached health verdict."""

    def __init__(self, store: Reader[T], timeout_ms: float, cooldown_s: float) -> None:
        self.store = store
        self.timeout_s = timeout_ms / 1000.0
        self.cooldown_s = cooldown_s
        self._down_until = 0.0
        self.healthy = True  # the last probe's verdict (optimistic until the first probe)
        self.reason = ""

    def get(self, user_key: str) -> tuple[T | None, bool]:
        """(row or None, ok). ``ok`` is False when the store failed or is cooling down."""
        if time.monotonic() < self._down_until:
            STORE_ERRORS.labels(kind="skipped").inc()
            return None, False
        try:
            return self.store.get(user_key), True
        except Exception as exc:
            kind = "timeout" if "timeout" in type(exc).__name__.lower() else "error"
            STORE_ERRORS.labels(kind=kind).inc()
            self._down_until = time.monotonic() + self.cooldown_s
            self.healthy = False
            self.reason = f"lookup failed: {type(exc).__name__}: {exc}"[:200]
            log.warning("online store %s; serving trending for %.1f s", kind, self.cooldown_s)
            return None, False

    def probe(self) -> tuple[bool, str]:
        """Does the store answer and hold rows? Sets :attr:`healthy`; called off-request."""
        try:
            row = self.store.sample(self.timeout_s)
        except Exception as exc:  # corrupt file, closed handle, timeout, undecodable row
            ok, reason = False, f"{type(exc).__name__}: {exc}"[:200]
        else:
            ok, reason = (
                (row is not None),
                ("" if row is not None else "the online store holds no users"),
            )
        if ok and not self.healthy:
            log.info("online store answers again")
            self._down_until = 0.0
        elif not ok and self.healthy:
            log.error("online store failing: %s", reason)
        self.healthy, self.reason = ok, reason
        return ok, reason

    def close(self) -> None:
        self.store.close()


class Prober(Periodic):
    """Runs :meth:`GuardedStore.probe` now and then every ``interval_s`` in a daemon thread."""

    def __init__(self, store: GuardedStore, interval_s: float) -> None:
        super().__init__("store-prober", interval_s)
        self.store = store

    def start(self) -> None:
        self.store.probe()
        super().start()

    def tick(self) -> None:
        self.store.probe()
