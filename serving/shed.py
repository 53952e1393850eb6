"""Shed, don't queue: answer 503 + ``Retry-After`` instead of serving a request too late.

The recommendation core runs inline on the event loop (0.5 ms of CPU; a thread-pool hop cost
more than it saved), so when requests arrive faster than one core serves them they queue as
event-loop tasks. :class:`ArrivalStampingProtocol` (uvicorn's httptools protocol, passed as
``http=``) stamps each request when its headers are parsed; :class:`ShedMiddleware`, a pure
ASGI middleware, compares that stamp with the time the request's turn comes and answers 503 at
once when it waited longer than ``max_queue_ms`` (a shed costs ~20 us, so the backlog drains
fast and the served requests keep a bounded latency). It also caps requests in flight
(``max_inflight``), which bites when handlers await I/O. Probes (``/healthz``, ``/readyz``),
``/metrics`` and ``/admin`` are never shed, and only wait behind at most one queue budget of
work. It records the per-route latency histogram and the shed counter.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.metrics import LATENCY, SHED

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ARRIVAL = "tastemaker.arrival"  # scope key: time.perf_counter() when the request was parsed
NEVER_SHED = ("/healthz", "/readyz", "/metrics", "/admin/", "/docs", "/openapi.json")
ROUTES = {  # path prefix -> route label for the latency histogram (never a raw user id)
    "/v1/users/": "/v1/users/{user_id}/recommendations",
    "/v1/recommendations": "/v1/recommendations",
    "/v1/events": "/v1/events",
    "/healthz": "/healthz",
    "/readyz": "/readyz",
    "/metrics": "/metrics",
    "/admin/reload": "/admin/reload",
}


class ArrivalStampingProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, plus an arrival time in each request's scope."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[ARRIVAL] = time.perf_counter()  # type: ignore[literal-required]


_children: dict[tuple[str, int], Any] = {}


def _latency(route: str, status: int) -> Any:
    """The histogram child for (route, status), cached (``labels()`` costs ~3 us)."""
    child = _children.get((route, status))
    if child is None:
        child = _children[(route, status)] = LATENCY.labels(route=route, status=str(status))
    return child


def route_label(path: str) -> str:
    for prefix, label in ROUTES.items():
        if path.startswith(prefix):
            return label
    return "other"


class LoadState:
    """What the shedder knows, shared with ``/readyz``."""

    def __init__(self, max_queue_ms: float, max_inflight: int, retry_after_s: int) -> None:
        self.max_queue_s = max_queue_ms / 1000.0
        self.max_inflight = max_inflight
        self.retry_after_s = retry_after_s
        self.inflight = 0
        self.last_shed = 0.0  # perf_counter of the last shed request

    def overloaded(self, window_s: float = 1.0) -> bool:
        """Shed anything in the last ``window_s``? (``/readyz`` says not ready meanwhile.)"""
        return self.last_shed > 0 and time.perf_counter() - self.last_shed < window_s


class ShedMiddleware:
    def __init__(self, app: ASGIApp, state: LoadState) -> None:
        self.app = app
        self.state = state
        retry_after_s = state.retry_after_s
        body = b'{"detail":"overloaded, retry later"}'
        self._start = {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after_s).encode()),
            ],
        }
        self._body = {"type": "http.response.body", "body": body}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        path: str = scope["path"]
        label = route_label(path)
        state = self.state
        if not path.startswith(NEVER_SHED):
            waited = t0 - scope.get(ARRIVAL, t0)
            reason = (
                "queue_time"
                if waited > state.max_queue_s
                else "inflight"
                if state.inflight >= state.max_inflight
                else None
            )
            if reason is not None:
                state.last_shed = t0
                await send(self._start)
                await send(self._body)
                SHED.labels(reason=reason).inc()
                _latency(label, 503).observe(time.perf_counter() - t0)
                return
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        state.inflight += 1
        try:
            await self.app(scope, receive, send_status)
        finally:
            state.inflight -= 1
            _latency(label, status[0]).observe(time.perf_counter() - t0)
