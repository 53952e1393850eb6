"""The HTTP app factory. It only wires: settings -> bundle holder, guarded online store, slates,
event sink, load shedder -> the routes of :mod:`serving.routes`. Interactive docs at ``/docs``."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from core.kv import is_redis, sqlite_path
from core.settings import Settings
from data.features.online_store import OnlineStore
from data.pii import pseudonym_key
from serving.batcher import MicroBatcher
from serving.events import EventSink
from serving.live import LiveRows
from serving.recommender import Recommender
from serving.reload import ModelHolder, Watcher
from serving.routes import HotPath, router
from serving.shed import LoadState, ShedMiddleware
from serving.slates import SlateStore, open_slate_store
from serving.store import GuardedStore, Prober, open_serving_store
from serving.web import STATIC
from serving.web import router as web_router

log = logging.getLogger("tastemaker.serving")
# The request path releases the GIL in SQLite, ONNX Runtime and FAISS calls; when it wants it
# back while a background thread (the impression sink, the prober) holds it, it waits up to
# the switch interval, 5 ms by default (profiled under load: 12-14 % of the samples sat in the
# slate lookup's return). 0.2 ms bounds that wait at a small cost in switches.
GIL_SWITCH_S = 0.0002


def _slates(settings: Settings) -> SlateStore | None:
    target = settings.slate_store_target
    if not is_redis(target) and not sqlite_path(target).is_file():
        log.info("no precomputed slates at %s: every request is computed in real time", target)
        return None
    return open_slate_store(target, timeout_s=settings.store_timeout_ms / 1000.0)


def create_app(settings: Settings | None = None, store: OnlineStore | None = None) -> FastAPI:
    """Load the bundle and open the store now (missing or corrupt ones fail here)."""
    settings = settings or Settings()
    holder = ModelHolder(settings.bundles_path, settings.onnx_threads, settings.faiss_threads)
    owned = store is None
    raw_store = store or open_serving_store(settings.online_store_target, settings.store_timeout_ms)
    guarded = GuardedStore(raw_store, settings.store_timeout_ms, settings.store_cooldown_s)
    slates = _slates(settings)
    load = LoadState(settings.max_queue_ms, settings.max_inflight, settings.retry_after_s)
    batcher = (
        MicroBatcher(settings.batch_max_wait_ms, settings.batch_max_rows, lambda: load.inflight)
        if settings.batch_max_wait_ms > 0
        else None
    )
    live = (  # rows `tastemaker stream-features` keeps fresh, read over the batch rows
        LiveRows(settings.stream_state_target, settings.store_timeout_ms, settings.store_cooldown_s)
        if settings.stream_state_target
        else None
    )
    recommender = Recommender(
        holder, guarded, pseudonym_key(settings), slates, settings.slate_max_age_s, batcher, live
    )
    events = EventSink(
        settings.event_bus_url, settings.events_store_target, stream=settings.event_stream
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sys.setswitchinterval(GIL_SWITCH_S)
        watcher = None
        if settings.reload_interval_s > 0:
            watcher = Watcher(holder, settings.reload_interval_s)
            watcher.start()
        prober = Prober(guarded, settings.health_interval_s)
        prober.start()
        events.start()
        try:
            yield
        finally:
            events.stop()
            events.close()
            prober.stop()
            if watcher is not None:
                watcher.stop()
            if owned:
                guarded.close()
            if slates is not None:
                slates.close()
            if live is not None:
                live.close()

    app = FastAPI(
        title="tastemaker",
        summary="Artist recommendations from a two-tower model (ONNX) and a FAISS index.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.recommender = recommender
    app.state.events = events
    app.state.load = load
    app.add_middleware(HotPath, state=app.state)  # inside the shedder: added first
    app.add_middleware(ShedMiddleware, state=load)
    app.include_router(router)
    app.include_router(web_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
