"""The HTTP app factory. It only wires: settings -> bundle holder, guarded online store, slates,
event sink, load shedder, access checks and guards (:mod:`serving.security`) -> the routes of
:mod:`serving.routes`. Interactive docs at ``/docs`` in demo mode only (Swagger UI loads its
script from a CDN); ``/openapi.json`` is always there."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles

from core.settings import Settings
from data.features.online_store import OnlineStore
from data.pii import pseudonym_key
from serving.batcher import MicroBatcher
from serving.bundle_store import BundlePuller, start_mirror
from serving.events import EventSink
from serving.live import LiveRows
from serving.recommender import Recommender
from serving.reload import ModelHolder, Watcher
from serving.routes import HotPath, router
from serving.security import (
    Access,
    GuardMiddleware,
    RateLimiter,
    internal_error,
    validation_error,
)
from serving.shed import ASGIApp, LoadState, Receive, Scope, Send, ShedMiddleware
from serving.slates import BundleSlates
from serving.store import GuardedStore, Prober, open_serving_store
from serving.web import STATIC
from serving.web import router as web_router

log = logging.getLogger("tastemaker.serving")
# The request path releases the GIL in SQLite, ONNX Runtime and FAISS calls; when it wants it
# back while a background thread (the impression sink, the prober) holds it, it waits up to
# the switch interval, 5 ms by default (profiled under load: 12-14 % of the samples sat in the
# slate lookup's return). 0.2 ms bounds that wait at a small cost in switches.
GIL_SWITCH_S = 0.0002


class Service(FastAPI):
    """The FastAPI app with its front door outside the framework.

    The service's own layers (:class:`GuardMiddleware` outermost, then the shedder, then
    :class:`HotPath`) wrap FastAPI instead of sitting inside its middleware stack: every request
    passes them once, in that order, and a valid recommendation GET is answered by ``HotPath``
    without entering FastAPI at all: not its app call, its error, telemetry and body-limit
    middleware, nor their ``send`` wrappers (in-process A/B on the precomputed path, the same
    requests through both wirings: 87-94 against 97-106 us of CPU a request). Everything else
    still goes through them after the front door."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is None or scope["type"] == "lifespan":
            await super().__call__(scope, receive, send)
        else:
            await self.front(scope, receive, send)

    async def framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        """What the front door hands on: FastAPI's own stack (routing, errors, docs)."""
        await super().__call__(scope, receive, send)


def _slates(settings: Settings) -> BundleSlates:
    """Each bundle's precomputed slates (``serving.slates``); none yet: real time."""
    return BundleSlates(
        settings.slate_store_target,
        timeout_s=settings.store_timeout_ms / 1000.0,
        cooldown_s=settings.store_cooldown_s,
    )


def create_app(settings: Settings | None = None, store: OnlineStore | None = None) -> Service:
    """Load the bundle and open the store now (missing or corrupt ones fail here)."""
    settings = settings or Settings()
    mirror = start_mirror(settings)  # with a bundle store: wait for a verified bundle first
    holder = ModelHolder(settings.bundles_path, settings.onnx_threads, settings.faiss_threads)
    owned = store is None
    raw_store = store or open_serving_store(settings.online_store_target, settings.store_timeout_ms)
    guarded = GuardedStore(raw_store, settings.store_timeout_ms, settings.store_cooldown_s)
    slates = _slates(settings)
    key = pseudonym_key(settings)
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
    recommender = Recommender(holder, guarded, key, slates, settings.slate_max_age_s, batcher, live)
    events = EventSink(
        settings.event_bus_url,
        settings.events_store_target,
        stream=settings.event_stream,
        max_bytes=settings.event_queue_bytes,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sys.setswitchinterval(GIL_SWITCH_S)
        watcher = puller = None
        if settings.reload_interval_s > 0:
            watcher = Watcher(holder, settings.reload_interval_s)
            watcher.start()
            if mirror is not None:
                puller = BundlePuller(mirror, settings.reload_interval_s)
                puller.start()
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
            if puller is not None:
                puller.stop()
            if owned:
                guarded.close()
            if slates is not None:
                slates.close()
            if live is not None:
                live.close()

    app = Service(
        title="tastemaker",
        summary="Artist recommendations from a two-tower model (ONNX) and a FAISS index.",
        lifespan=lifespan,
        docs_url="/docs" if settings.demo else None,
        redoc_url=None,
    )
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, internal_error)  # the guard's body, inside FastAPI too
    app.state.settings = settings
    app.state.access = Access(settings, key)
    app.state.listener_limit = RateLimiter(settings.events_per_listener_per_min)
    app.state.client_limit = RateLimiter(settings.events_per_client_per_min)
    app.state.recommender = recommender
    app.state.events = events
    app.state.load = load
    app.front = GuardMiddleware(  # outermost: limits before anything parses, headers always
        ShedMiddleware(HotPath(app.framework, app.state), load),
        max_body_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
    )
    app.include_router(router)
    app.include_router(web_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
