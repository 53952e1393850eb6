"""The HTTP app. It only wires: settings -> bundle holder + online store -> routes.

Interactive docs at ``/docs``. Endpoints are plain ``def`` so FastAPI runs them in its thread
pool: ONNX and FAISS release the GIL, and a slow request never blocks the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated
from uuid import uuid4

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from data.online_store import open_online_store
from index import CorruptBundleError
from serving.features import OnlineStore
from serving.recommender import Recommender
from serving.reload import ModelHolder, Watcher
from serving.schemas import (
    MAX_K_DOC,
    Health,
    RecommendationsResponse,
    RecommendedArtist,
    ReloadResponse,
)
from serving.settings import MAX_K, Settings

log = logging.getLogger("tastemaker.serving")


def get_recommender(request: Request) -> Recommender:
    return request.app.state.recommender


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def require_admin(
    settings: SettingsDep, x_admin_token: Annotated[str | None, Header()] = None
) -> None:
    if settings.admin_token and x_admin_token != settings.admin_token:
        raise HTTPException(status_code=403, detail="missing or wrong X-Admin-Token")


def create_app(settings: Settings | None = None, store: OnlineStore | None = None) -> FastAPI:
    """Load the bundle now (a missing or corrupt one fails here, before serving starts)."""
    settings = settings or Settings()
    holder = ModelHolder(settings.bundles_path, settings.onnx_threads, settings.faiss_threads)
    owned = store is None
    store = store or open_online_store(settings.online_store_target)
    recommender = Recommender(holder, store, settings.pseudonym_key())

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

    @app.get("/v1/users/{user_id}/recommendations", response_model=RecommendationsResponse)
    def recommendations(
        user_id: str,
        recommender: RecommenderDep,
        k: Annotated[int, Query(ge=1, le=MAX_K, description=MAX_K_DOC)] = settings.default_k,
        country: Annotated[
            str | None, Query(min_length=2, max_length=2, description="hint for unknown users")
        ] = None,
    ) -> RecommendationsResponse:
        if k > settings.max_k:
            raise HTTPException(status_code=422, detail=f"k must be <= {settings.max_k}")
        result = recommender.recommend(user_id, k, country=country.upper() if country else None)
        return RecommendationsResponse(
            user_id=user_id,
            request_id=uuid4().hex,
            bundle_version=result.bundle_version,
            source=result.source,
            items=[
                RecommendedArtist(rank=rank, **vars(item))
                for rank, item in enumerate(result.items, start=1)
            ],
        )

    @app.get("/healthz", response_model=Health)
    def healthz(recommender: RecommenderDep) -> JSONResponse:
        model = recommender.holder.current
        reachable = recommender.store_reachable()
        body = Health(
            status="ok" if reachable else "degraded",
            bundle_version=model.version,
            bundle_created_at=model.created_at,
            online_store=reachable,
            artists=model.index.ntotal,
        )
        return JSONResponse(body.model_dump(), status_code=200 if reachable else 503)

    @app.post("/admin/reload", response_model=ReloadResponse, dependencies=[Depends(require_admin)])
    def reload(recommender: RecommenderDep) -> ReloadResponse:
        try:
            swapped, version, previous = recommender.holder.reload()
        except CorruptBundleError as exc:
            raise HTTPException(
                status_code=409,
                detail=f"refused to swap, still serving {recommender.holder.current.version}: {exc}",
            ) from exc
        return ReloadResponse(swapped=swapped, version=version, previous=previous)

    return app
