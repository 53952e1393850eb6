"""Request and response models of the HTTP API (one module, so the OpenAPI docs are one place)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Source = Literal["model", "trending", "backfill"]
MAX_K_DOC = "number of artists to return (1..100)"


class RecommendedArtist(BaseModel):
    rank: int = Field(description="1 = first")
    artist_id: str
    name: str
    score: float | None = Field(description="model score (inner product); null for trending")
    source: Source = Field(description="model, trending (cold start) or backfill (list was short)")
    reason: str = Field(description='e.g. "because you listen to Radiohead" or "trending in DE"')


class RecommendationsResponse(BaseModel):
    user_id: str
    request_id: str = Field(description="echo in click/impression events as request_id")
    bundle_version: str
    source: Literal["model", "trending"] = Field(description="how the list was produced")
    items: list[RecommendedArtist]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    bundle_version: str
    bundle_created_at: str | None
    online_store: bool = Field(description="the online feature store answered")
    artists: int


class ReloadResponse(BaseModel):
    swapped: bool
    version: str
    previous: str
