"""Who may call what, and what a hostile request gets instead of a 500 (issue 20).

* :class:`GuardMiddleware` (the outermost ASGI layer): headers over ``max_header_bytes`` -> 431,
  a body over ``max_body_bytes`` -> 413, both before anything parses them; every response gets
  the security headers (CSP, ``nosniff``, ``X-Frame-Options``, no referrer); any exception
  that escapes the app is answered with a bare 500 that says nothing about it (and logged).
* :func:`validation_error` -- the 422 handler: names the field, never echoes the input
  (``input`` and ``ctx`` are dropped, so a NaN or a 10 MB value cannot break or bloat it).
* :func:`parse_json_body` -- request bodies are parsed with orjson (depth limit, strict UTF-8,
  no lone surrogates, 64-bit integers) into the pydantic model; every failure is a 422.
* :class:`Access` -- listener tokens (:mod:`core.tokens`), the service token and the admin
  token; :class:`RateLimiter` -- events per minute per listener and per client address.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

import orjson
from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError

from core.settings import Settings
from core.tokens import TokenError, token_keys, verify
from data.pii import pseudonymise

log = logging.getLogger("tastemaker.serving")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

REFUSED = Counter(
    "tastemaker_refused_requests_total",
    "Requests refused by the guards (size, token, other listener, rate limit)",
    ["reason"],
)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
# /docs (demo mode only) is FastAPI's Swagger UI, which loads its script from jsDelivr
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: "
    "https://fastapi.tiangolo.com; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), *_COMMON]
DOCS_HEADERS = [(b"content-security-policy", DOCS_CSP.encode()), *_COMMON]


class _BodyTooLarge(Exception):
    pass


def _plain(status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None) -> tuple:
    body = orjson.dumps({"detail": detail})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
        *(extra or []),
    ]
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


class GuardMiddleware:
    """Size limits before parsing, security headers on every response, no leaking 500s."""

    def __init__(self, app: Any, max_body_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_headers = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        size = sum(len(k) + len(v) + 4 for k, v in headers) + len(scope.get("raw_path") or b"")
        size += len(scope.get("query_string") or b"")
        if size > self.max_headers:
            REFUSED.labels(reason="headers_too_large").inc()
            for message in _plain(431, f"request headers over {self.max_headers} bytes"):
                await send(message)
            return
        declared = None
        for k, v in headers:
            if k == b"content-length":
                declared = int(v) if v.isdigit() else -1
        if declared is not None and (declared < 0 or declared > self.max_body):
            REFUSED.labels(reason="body_too_large").inc()
            for message in _plain(413, f"request body over {self.max_body} bytes"):
                await send(message)
            return
        extra = DOCS_HEADERS if scope.get("path", "").startswith("/docs") else SECURITY_HEADERS
        seen = 0
        started = False

        async def bounded_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _BodyTooLarge
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                # a copy: some senders reuse one message dict (the shedder's 503)
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, bounded_receive, send_with_headers)
        except _BodyTooLarge:
            REFUSED.labels(reason="body_too_large").inc()
            if not started:
                for message in _plain(413, f"request body over {self.max_body} bytes"):
                    await send(message)
        except Exception:
            log.exception("unhandled error on %s", route_name(scope))
            if not started:
                for message in _plain(500, "internal error"):
                    await send(message)


def route_name(scope: Scope) -> str:
    """The route of a request for a log line: never a raw id, never a control character."""
    from serving.shed import route_label

    return route_label(str(scope.get("path", "")))


# --- 422s --------------------------------------------------------------------------------------
MAX_LOC_CHARS = 64


def _clean_loc(loc: Any) -> list[Any]:
    out: list[Any] = []
    for part in loc or ():
        if isinstance(part, int) and not isinstance(part, bool):
            out.append(part)
        else:
            text = str(part)
            text = text.encode("utf-8", errors="replace").decode("utf-8", errors="replace")
            printable = "".join(c if c.isprintable() else "?" for c in text)
            out.append(printable[:MAX_LOC_CHARS])
    return out


def clean_errors(errors: Any) -> list[dict[str, Any]]:
    """Pydantic's errors without ``input``, ``ctx`` or ``url``: where and what, not the value."""
    clean = []
    for e in list(errors)[:20]:
        clean.append(
            {
                "loc": _clean_loc(e.get("loc")),
                "type": str(e.get("type", "invalid"))[:MAX_LOC_CHARS],
                "msg": _safe_msg(e),
            }
        )
    return clean


def _safe_msg(error: Any) -> str:
    # pydantic's messages name the expected type or bound ("Input should be a valid integer"),
    # except a few that quote allowed values; those are ours (schemas), never the client's
    msg = str(error.get("msg", "invalid"))
    return msg if len(msg) <= 200 else msg[:200] + "..."


async def internal_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer to an unhandled error: the guard's body, never the error itself (the
    guard, outside FastAPI, logs it and adds the security headers)."""
    return Response(orjson.dumps({"detail": "internal error"}), 500, media_type="application/json")


async def validation_error(request: Request, exc: RequestValidationError) -> Response:
    return Response(
        orjson.dumps({"detail": clean_errors(exc.errors())}),
        status_code=422,
        media_type="application/json",
    )


M = TypeVar("M", bound=BaseModel)


def parse_json_body(raw: bytes, model: type[M]) -> M:
    """``raw`` -> ``model``; every way it can be wrong is a :class:`RequestValidationError`."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RequestValidationError(
            [{"loc": ("body",), "type": "json_invalid", "msg": "body is not valid JSON (UTF-8)"}]
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


# --- who may call what -------------------------------------------------------------------------
def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class Access:
    """The checks the routes make; built once from :class:`Settings` in the app factory."""

    def __init__(self, settings: Settings, pseudonym_key: bytes) -> None:
        self.demo = settings.demo
        self.open_recommendations = settings.demo or settings.public_recommendations
        self.keys = token_keys(settings)
        self.pseudonym_key = pseudonym_key
        self.service = (
            settings.service_token.get_secret_value().encode() if settings.service_token else None
        )
        self.admin = settings.admin_token.encode() if settings.admin_token else None

    def user_key(self, user_id: str) -> str:
        return pseudonymise(user_id, self.pseudonym_key)

    def is_service(self, token: str | None) -> bool:
        return bool(token and self.service and hmac.compare_digest(token.encode(), self.service))

    def is_admin(self, token: str | None) -> bool:
        return bool(token and self.admin and hmac.compare_digest(token.encode(), self.admin))

    def listener(self, token: str | None) -> str:
        """The pseudonymous id a listener token names; 401 when there is none or it is bad."""
        if not self.keys:
            REFUSED.labels(reason="intake_off").inc()
            raise HTTPException(
                status_code=403, detail="listener tokens are off: set TASTEMAKER_TOKEN_KEY"
            )
        if token is None:
            REFUSED.labels(reason="no_token").inc()
            raise HTTPException(
                status_code=401,
                detail="a listener token is required (Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            return verify(token, self.keys)
        except TokenError as exc:
            REFUSED.labels(reason=f"token_{exc.reason}").inc()
            raise HTTPException(
                status_code=401,
                detail=f"listener token refused: {exc.reason}",
                headers={"WWW-Authenticate": "Bearer"},
            ) from None

    def recommendations(self, authorization: str | None, user_id: str | None) -> None:
        """Outside demo mode: the listener's own token, or the service token."""
        if self.open_recommendations:
            return
        token = bearer(authorization)
        if self.is_service(token):
            return
        subject = self.listener(token)
        if user_id is not None and not hmac.compare_digest(subject, self.user_key(user_id)):
            REFUSED.labels(reason="other_listener").inc()
            raise HTTPException(status_code=403, detail="the token is for another listener")

    def page(self, admin_token: str | None) -> None:
        """The listener page's API: demo mode, or the admin token."""
        if self.demo or self.is_admin(admin_token):
            return
        REFUSED.labels(reason="page_closed").inc()
        raise HTTPException(status_code=404, detail="Not Found")


class RateLimiter:
    """Fixed one-minute windows of a cost per key; the table is cleared every window, so it
    holds at most one window's keys."""

    def __init__(self, per_minute: int, window_s: float = 60.0) -> None:
        self.per_minute = per_minute
        self.window_s = window_s
        self._window = -1
        self._used: dict[str, int] = {}

    def retry_after(self, key: str, cost: int, now: float | None = None) -> int:
        """0 when ``cost`` more fits in ``key``'s window (and is taken), else seconds to wait."""
        now = time.monotonic() if now is None else now
        window = int(now // self.window_s)
        if window != self._window:
            self._window, self._used = window, {}
        used = self._used.get(key, 0)
        if used + cost > self.per_minute:
            return max(1, math.ceil((window + 1) * self.window_s - now))
        self._used[key] = used + cost
        return 0

    def refund(self, key: str, cost: int) -> None:
        if key in self._used:
            self._used[key] = max(0, self._used[key] - cost)
