"""The HTTP routes: one ``APIRouter``; dependencies come from the app's state.

Endpoints are plain ``def`` so FastAPI runs them in its thread pool: ONNX and FAISS release the
GIL, and a slow request never blocks the event loop.
"""

from __future__ import annotations

from typing import Annotated
from uuid import uuid4

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from core.settings import MAX_K, Settings
from index import CorruptBundleError
from serving.recommender import Recommender
from serving.schemas import (
    MAX_K_DOC,
    Health,
    RecommendationsResponse,
    RecommendedArtist,
    ReloadResponse,
)


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


router = APIRouter()


@router.get("/v1/users/{user_id}/recommendations", response_model=RecommendationsResponse)
def recommendations(
    user_id: str,
    recommender: RecommenderDep,
    settings: SettingsDep,
    k: Annotated[
        int | None, Query(ge=1, le=MAX_K, description=f"{MAX_K_DOC} Default: settings.default_k.")
    ] = None,
    country: Annotated[
        str | None, Query(min_length=2, max_length=2, description="hint for unknown users")
    ] = None,
) -> RecommendationsResponse:
    k = settings.default_k if k is None else k
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


@router.get("/healthz", response_model=Health)
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


@router.post("/admin/reload", response_model=ReloadResponse, dependencies=[Depends(require_admin)])
def reload(recommender: RecommenderDep) -> ReloadResponse:
    try:
        swapped, version, previous = recommender.holder.reload()
    except CorruptBundleError as exc:
        raise HTTPException(
            status_code=409,
            detail=f"refused to swap, still serving {recommender.holder.current.version}: {exc}",
        ) from exc
    return ReloadResponse(swapped=swapped, version=version, previous=previous)
