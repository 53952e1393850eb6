"""The web pages: a listener view, a new-listener mode and the dashboard, served by the API app.

Static HTML + a small script (``serving/static``), no build step and nothing from a CDN, so
the pages work offline. They talk to the public API (``/v1/...``) and to three page helpers
under ``/ui/api``:

* ``GET /ui/api/listener?account=ID&k=10`` — a listener's segment (age group, country,
  tenure, activity: never raw PII), recent artists, follows and a served slate with tags. The
  account id is pseudonymised here, as the API does, and is **not** echoed back. It and the
  listener page (``/``) exist only in demo mode or with ``X-Admin-Token`` (404 otherwise);
  a page view is not an impression (nothing is logged), and in demo mode the answer carries
  the listener's short-lived token, with which the page posts its clicks;
* ``GET /ui/api/artists?q=TEXT`` / ``?ids=A,B`` — catalogue search and lookup (name, tags);
* ``GET /ui/api/dashboard`` — the batch jobs' snapshot (``Workspace.dashboard_state``) plus
  the serving bundle and the store's health.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import pyarrow.parquet as pq
from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import FileResponse, Response

from core.settings import MAX_K
from core.tokens import issue
from core.workspace import Workspace
from index import FILES, load_bundle
from serving.metrics import count_served
from serving.routes import new_request_id
from serving.schemas import user_id_problem

STATIC = Path(__file__).resolve().parent / "static"
PAGES = {"/": "listener.html", "/new": "new.html", "/dashboard": "dashboard.html"}
SEGMENT_FIELDS = ("age_group", "country", "tenure_bucket", "activity_level")
MAX_QUERY = 64

router = APIRouter(include_in_schema=False)


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


class Catalogue:
    """Names and tags of the served bundle's artists, reloaded when the bundle changes."""

    def __init__(self) -> None:
        self.version: str | None = None
        self.rows: dict[str, dict[str, Any]] = {}

    def for_model(self, model: Any, bundles: Path) -> dict[str, dict[str, Any]]:
        if model.version != self.version:
            bundle = load_bundle(bundles / model.version)
            table = pq.read_table(bundle.file(FILES.artists), columns=["artist_id", "name", "tags"])
            self.rows = {
                r["artist_id"]: {
                    "artist_id": r["artist_id"],
                    "name": r["name"],
                    "tags": list(r["tags"] or [])[:5],
                }
                for r in table.to_pylist()
            }
            self.version = model.version
        return self.rows


def _catalogue(request: Request) -> dict[str, dict[str, Any]]:
    state = request.app.state
    if not hasattr(state, "catalogue"):
        state.catalogue = Catalogue()
    return state.catalogue.for_model(state.recommender.holder.current, state.settings.bundles_path)


def _artists(request: Request, ids: list[str]) -> list[dict[str, Any]]:
    cat = _catalogue(request)
    return [cat.get(a, {"artist_id": a, "name": a, "tags": []}) for a in ids]


@router.get("/")
@router.get("/new")
@router.get("/dashboard")
async def page(
    request: Request, x_admin_token: Annotated[str | None, Header()] = None
) -> FileResponse:
    if request.url.path == "/":
        request.app.state.access.page(x_admin_token)
    return FileResponse(STATIC / PAGES[request.url.path], media_type="text/html")


@router.get("/ui/api/listener")
async def listener(
    request: Request,
    account: str,
    k: int = 10,
    x_admin_token: Annotated[str | None, Header()] = None,
) -> Response:
    access = request.app.state.access
    access.page(x_admin_token)
    if problem := user_id_problem(account):
        raise HTTPException(status_code=422, detail=problem)
    if not 1 <= k <= MAX_K:
        raise HTTPException(status_code=422, detail=f"k must be in 1..{MAX_K}")
    rec = request.app.state.recommender
    row = rec.features(account)
    result = rec.recommend(account, k)
    request_id = new_request_id()
    items = []
    for rank, r in enumerate(result.items, start=1):
        meta = _artists(request, [r.artist_id])[0]
        items.append(
            {
                "rank": rank,
                "artist_id": r.artist_id,
                "name": r.name,
                "tags": meta["tags"],
                "score": r.score,
                "source": r.source,
                "reason": r.reason,
            }
        )
    count_served(result.source, [r.source for r in result.items])
    # a page view is not an impression: nothing is logged (it would lower the listener's
    # clicks-per-100 feature and the engagement numbers)
    settings = request.app.state.settings
    token = None
    if access.demo and access.keys:
        token = issue(access.user_key(account), access.keys[0], settings.token_ttl_s)
    body = {
        "known": row is not None,
        "segment": {f: (row or {}).get(f) for f in SEGMENT_FIELDS},
        # the history repeats an artist once per stream; the page lists each artist once
        "recent": _artists(request, list(dict.fromkeys((row or {}).get("history") or []))[:10]),
        "follows": _artists(request, list((row or {}).get("followed") or [])[:10]),
        "request_id": request_id,
        "token": token,
        "bundle_version": result.bundle_version,
        "source": result.source,
        "items": items,
    }
    return _json(body)


@router.get("/ui/api/artists")
async def artists(
    request: Request, q: str | None = None, ids: str | None = None, limit: int = 20
) -> Response:
    cat = _catalogue(request)
    if ids is not None:
        wanted = [a for a in ids.split(",") if a][:MAX_K]
        return _json(_artists(request, wanted))
    if q is None or not q.strip() or len(q) > MAX_QUERY:
        raise HTTPException(status_code=422, detail=f"q must be 1..{MAX_QUERY} characters")
    needle = q.strip().lower()
    hits = [r for r in cat.values() if needle in (r["name"] or "").lower()]
    hits.sort(key=lambda r: (not (r["name"] or "").lower().startswith(needle), r["name"]))
    return _json(hits[: max(1, min(limit, 50))])


@router.get("/ui/api/dashboard")
async def dashboard(request: Request) -> Response:
    state = request.app.state
    path = Workspace(state.settings.workspace).dashboard_state
    snapshot = orjson.loads(path.read_bytes()) if path.is_file() else None
    model = state.recommender.holder.current
    return _json(
        {
            "snapshot": snapshot,
            "snapshot_path": str(path.name),
            "serving": {
                "bundle_version": model.version,
                "bundle_created_at": model.created_at,
                "artists": model.index.ntotal,
                "store_healthy": state.recommender.store.healthy,
                "run_id": model.manifest.get("run_id"),
                # what answers: two-tower, two-tower+ranker, two-stage, "<peer> (precomputed
                # slates)"; bundles exported before the field: the two-tower or its stages
                "system": model.manifest.get("system"),
                "streaming": live.status() if (live := state.recommender.live) else None,
            },
        }
    )
