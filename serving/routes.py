"""The HTTP routes: one ``APIRouter``; what they use comes from ``app.state`` (see serving.app).

The request routes are ``async def`` and run the recommender core inline: it is ~0.5 ms of
CPU, and the thread-pool hop of a plain ``def`` route (plus the GIL hand-offs around it) cost
more than the work itself. Responses are serialised once with orjson, without a pydantic
response-model pass (the models in ``serving.schemas`` still document them in ``/docs``).
``/admin/reload`` stays a plain ``def``: loading a bundle is slow and must not run on the loop.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import State

from core.settings import MAX_K
from index import CorruptBundleError
from serving.events import ServedSlate, SinkUnavailable, validate_events
from serving.metrics import READY, count_served
from serving.recommender import RecommendationList
from serving.schemas import (
    MAX_K_DOC,
    MAX_USER_ID_BYTES,
    EventsRequest,
    EventsResponse,
    Health,
    HistoryRequest,
    Ready,
    RecommendationsResponse,
    ReloadResponse,
    country_problem,
    user_id_problem,
)
from serving.security import REFUSED, bearer, parse_json_body

router = APIRouter()


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _check_country(country: str | None) -> str | None:
    if country is None:
        return None
    if problem := country_problem(country):
        raise HTTPException(status_code=422, detail=problem)
    return country.upper()


def new_request_id() -> str:
    """128 random bits, 32 hex chars: nobody can guess the next one, so a forged click cannot
    take a victim's next request id (~5 us; the per-process prefix and counter it replaced
    could be predicted from one answer)."""
    return secrets.token_hex(16)


def _answer(state: State, result: RecommendationList, user_id: str | None) -> Response:
    request_id = new_request_id()
    items = [
        {
            "rank": rank,
            "artist_id": r.artist_id,
            "name": r.name,
            "score": r.score,
            "source": r.source,
            "reason": r.reason,
        }
        for rank, r in enumerate(result.items, start=1)
    ]
    count_served(result.source, [r.source for r in result.items])
    if user_id is not None and state.events is not None:
        state.events.log_slate(
            ServedSlate(
                user_id,
                request_id,
                result.bundle_version,
                result.source,
                tuple(r.artist_id for r in result.items),
                int(time.time() * 1000),
            )
        )
    return _json(
        {
            "user_id": user_id,
            "request_id": request_id,
            "bundle_version": result.bundle_version,
            "source": result.source,
            "items": items,
        }
    )


def _k(state: State, k: int | None) -> int:
    settings = state.settings
    k = settings.default_k if k is None else k
    if k > settings.max_k:
        raise HTTPException(status_code=422, detail=f"k must be <= {settings.max_k}")
    return k


_PARAMS = [  # documented here because the route parses them itself (see below)
    {
        "name": "user_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": f"account id, at most {MAX_USER_ID_BYTES} bytes, no control characters",
    },
    {
        "name": "k",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_K},
        "description": f"{MAX_K_DOC} Default: settings.default_k.",
    },
    {
        "name": "country",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "ISO 3166-1 alpha-2; a hint for unknown users",
    },
]


@router.get(
    "/v1/users/{user_id}/recommendations",
    response_model=None,
    responses={200: {"model": RecommendationsResponse}, 503: {"description": "shed"}},
    openapi_extra={"parameters": _PARAMS},
)
async def recommendations(request: Request) -> Response:
    """Top-k artists for an account id.

    Parameters are read from the request directly: FastAPI's per-parameter validation cost
    ~0.15 ms a request (profiled), a third of the whole precomputed path. Valid requests
    usually never get here: :class:`HotPath` answers them with the same function before
    Starlette's routing; this route documents the endpoint and answers the invalid ones."""
    return await user_recommendations(
        request.app.state,
        request.path_params["user_id"],
        request.query_params,
        request.headers.get("authorization"),
    )


async def user_recommendations(
    state: State, user_id: str, query: Mapping[str, str], authorization: str | None = None
) -> Response:
    """The endpoint's work: validate, authorise, recommend, log the slate, serialise. Raises
    ``HTTPException`` (422 on bad input, 401/403 without the listener's or the service token
    outside demo mode)."""
    if problem := user_id_problem(user_id):
        raise HTTPException(status_code=422, detail=problem)
    state.access.recommendations(authorization, user_id)
    k = _parse_k(query.get("k"))
    result = await state.recommender.recommend_async(
        user_id, _k(state, k), country=_check_country(query.get("country"))
    )
    return _answer(state, result, user_id)


class HotPath:
    """Answers ``GET /v1/users/{user_id}/recommendations`` straight from the ASGI scope.

    Profiled under load on the precomputed path, Starlette's exception wrappers, router and
    ``Request`` plus FastAPI's endpoint machinery were ~22 % of the process's CPU, more than
    the recommendation itself. This middleware sits inside :class:`serving.shed.ShedMiddleware`
    (so shedding and the latency histogram still apply) and calls the same
    :func:`user_recommendations` as the route. Anything it does not accept as is (a bad ``k``,
    an unusual path) goes to the router untouched, which answers with FastAPI's usual errors.
    """

    PREFIX, SUFFIX = "/v1/users/", "/recommendations"

    def __init__(self, app: Any, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and path.startswith(self.PREFIX)
            and path.endswith(self.SUFFIX)
        ):
            user_id = path[len(self.PREFIX) : -len(self.SUFFIX)]
            if user_id and "/" not in user_id:
                query = dict(parse_qsl(scope["query_string"].decode("latin-1"), True))
                authorization = None
                for name, value in scope["headers"]:
                    if name == b"authorization":
                        authorization = value.decode("latin-1")
                try:
                    response = await user_recommendations(self.state, user_id, query, authorization)
                except HTTPException:
                    pass  # the route answers it, in FastAPI's error format
                else:
                    await send(
                        {
                            "type": "http.response.start",
                            "status": response.status_code,
                            "headers": response.raw_headers,
                        }
                    )
                    await send({"type": "http.response.body", "body": response.body})
                    return
        await self.app(scope, receive, send)


def _parse_k(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        k = int(raw)
    except ValueError:
        raise HTTPException(status_code=422, detail="k must be an integer") from None
    if not 1 <= k <= MAX_K:
        raise HTTPException(status_code=422, detail=f"k must be in 1..{MAX_K}")
    return k


def _body_doc(model: type[Any]) -> dict[str, Any]:
    """OpenAPI for a body the route parses itself (orjson: strict UTF-8, depth-limited)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


@router.post(
    "/v1/recommendations",
    response_model=None,
    responses={200: {"model": RecommendationsResponse}, 503: {"description": "shed"}},
    openapi_extra=_body_doc(HistoryRequest),
)
async def recommendations_for_history(request: Request) -> Response:
    """Recommendations for a listener known only by a history of artist ids."""
    body = parse_json_body(await request.body(), HistoryRequest)
    if body.user_id is not None and (problem := user_id_problem(body.user_id)):
        raise HTTPException(status_code=422, detail=problem)
    state = request.app.state
    state.access.recommendations(request.headers.get("authorization"), body.user_id)
    result = await state.recommender.recommend_history_async(
        body.history, _k(state, body.k), country=_check_country(body.country)
    )
    return _answer(state, result, body.user_id)


@router.post(
    "/v1/events",
    response_model=EventsResponse,
    status_code=202,
    openapi_extra=_body_doc(EventsRequest),
    responses={
        401: {"description": "no, a forged or an expired listener token"},
        403: {"description": "an event for another listener (nothing of the call is kept)"},
        429: {"description": "rate limited per listener or per client address; Retry-After"},
        503: {"description": "the event bus is down or the queue is full; Retry-After"},
    },
)
async def events(request: Request) -> Response:
    """Impressions, clicks, streams, follows of the token's own listener, validated like
    ingest. ``Authorization: Bearer <token>`` (``tastemaker token --user ID``)."""
    state = request.app.state
    sink = state.events
    if sink is None:
        raise HTTPException(status_code=503, detail="no event sink configured")
    subject = state.access.listener(bearer(request.headers.get("authorization")))
    body = parse_json_body(await request.body(), EventsRequest)
    for event in body.events:
        user_id = event.get("user_id") if isinstance(event, dict) else None
        if (
            isinstance(user_id, str)
            and not user_id_problem(user_id)
            and not hmac.compare_digest(state.access.user_key(user_id), subject)
        ):
            REFUSED.labels(reason="other_listener").inc()
            raise HTTPException(status_code=403, detail="an event is for another listener")
    cost = len(body.events)
    client = request.client.host if request.client else "unknown"
    wait = state.listener_limit.retry_after(subject, cost)
    if not wait:
        wait = state.client_limit.retry_after(client, cost)
        if wait:
            state.listener_limit.refund(subject, cost)
    if wait:
        REFUSED.labels(reason="rate_limited").inc()
        raise HTTPException(
            status_code=429, detail="too many events", headers={"Retry-After": str(wait)}
        )
    accepted, rejected = validate_events(body.events, int(time.time() * 1000))
    try:
        sink.submit(accepted)
    except SinkUnavailable as exc:
        REFUSED.labels(reason="sink_unavailable").inc()
        raise HTTPException(
            status_code=503,
            detail=str(exc),
            headers={"Retry-After": str(state.settings.retry_after_s)},
        ) from None
    reply = {
        "accepted": len(accepted),
        "rejected": [{"index": i, "reason": r} for i, r in rejected],
        "sink": sink.sink,
    }
    return _json(reply, status=202 if accepted else 422)


@router.get("/healthz", response_model=Health)
async def healthz(request: Request) -> Response:
    """Liveness: the process answers. Never touches the store (the prober's verdict is cached)."""
    recommender = request.app.state.recommender
    model = recommender.holder.current
    healthy = recommender.store.healthy
    body = Health(
        status="ok" if healthy else "degraded",
        bundle_version=model.version,
        bundle_created_at=model.created_at,
        online_store=healthy,
        artists=model.index.ntotal,
    )
    return _json(body.model_dump())


@router.get("/readyz", response_model=Ready, responses={503: {"model": Ready}})
async def readyz(request: Request) -> Response:
    """Readiness: bundle loaded, store answering and holding rows, not shedding."""
    recommender = request.app.state.recommender
    store = recommender.store
    overloaded = request.app.state.load.overloaded()
    sink = request.app.state.events
    sink_ok = sink is None or sink.healthy
    ready = store.healthy and not overloaded and sink_ok
    reason = (
        ""
        if ready
        else "overloaded: shedding requests"
        if overloaded
        else "the event sink is not answering"
        if not sink_ok
        else store.reason
    )
    READY.set(1 if ready else 0)
    body = Ready(
        ready=ready,
        bundle_version=recommender.holder.current.version,
        online_store=store.healthy,
        overloaded=overloaded,
        reason=reason,
    )
    return _json(body.model_dump(), status=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Demo mode, or with X-Admin-Token; none here when ``metrics_port`` serves them apart."""
    state = request.app.state
    if state.settings.metrics_port:
        raise HTTPException(status_code=404, detail="Not Found")
    if not state.settings.demo:
        require_admin(request, request.headers.get("x-admin-token"))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def require_admin(request: Request, token: str | None) -> None:
    configured = request.app.state.settings.admin_token
    if not configured:
        raise HTTPException(
            status_code=403, detail="admin endpoints are off: set TASTEMAKER_ADMIN_TOKEN"
        )
    if token is None or not hmac.compare_digest(token.encode(), configured.encode()):
        raise HTTPException(status_code=403, detail="missing or wrong X-Admin-Token")


@router.post("/admin/reload", response_model=ReloadResponse)
def reload(
    request: Request, x_admin_token: Annotated[str | None, Header()] = None
) -> ReloadResponse:
    """Swap to the bundle CURRENT names (a no-op when it is the served one)."""
    require_admin(request, x_admin_token)
    holder = request.app.state.recommender.holder
    try:
        swapped, version, previous = holder.reload()
    except (CorruptBundleError, OSError, ValueError) as exc:
        raise HTTPException(
            status_code=409,
            detail=f"refused to swap, still serving {holder.current.version}: {exc}"[:500],
        ) from exc
    return ReloadResponse(swapped=swapped, version=version, previous=previous)
