"""The HTTP app factory. It only wires: settings -> bundle holder + online store -> the routes
of :mod:`serving.routes`. Interactive docs at ``/docs``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from core.settings import Settings
from data.features.online_store import open_online_store
from data.pii import pseudonym_key
from serving.features import OnlineStore
from serving.recommender import Recommender
from serving.reload import ModelHolder, Watcher
from serving.routes import router

log = logging.getLogger("tastemaker.serving")


def create_app(settings: Settings | None = None, store: OnlineStore | None = None) -> FastAPI:
    """Load the bundle now (a missing or corrupt one fails here, before serving starts)."""
    settings = settings or Settings()
    holder = ModelHolder(settings.bundles_path, settings.onnx_threads, settings.faiss_threads)
    owned = store is None
    store = store or open_online_store(settings.online_store_target)
    recommender = Recommender(holder, store, pseudonym_key(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        watcher = None
        if settings.reload_interval_s > 0:
            watcher = Watcher(holder, settings.reload_interval_s)
            watcher.start()
        try:
            yield
        finally:
            if watcher is not None:
                watcher.stop()
            if owned:
                store.close()

    app = FastAPI(
        title="tastemaker",
        summary="Artist recommendations from a two-tower model (ONNX) and a FAISS index.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.recommender = recommender

    app.include_router(router)
    return app
