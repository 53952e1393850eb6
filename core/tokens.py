"""Listener tokens: a short-lived HMAC-SHA256 signature over a pseudonymous id and an expiry.

``tm1.<user_key>.<expires_unix_s>.<signature>``, the signature (base64url, no padding) over
``tm1.<user_key>.<expires_unix_s>``. The subject is the *pseudonymous* id (``data.pii``), so a
token leaks no account id. Issued by ``tastemaker token --user ID`` (or the login service,
with the same key); checked by the API on ``POST /v1/events`` and, outside demo mode, on the
recommendation calls.

Rotation: :func:`verify` accepts a signature by any of the given keys (the current one and the
previous one); :func:`issue` always signs with the first. Rotate by moving the current key to
``TASTEMAKER_TOKEN_KEY_PREVIOUS``, setting a new ``TASTEMAKER_TOKEN_KEY``, and dropping the
previous key one token lifetime later.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Sequence

from core.settings import Settings

PREFIX = "tm1"
MAX_TOKEN_CHARS = 256
_USER_KEY = re.compile(r"^[0-9a-f]{32}$")  # data.pii.pseudonymise: 128 bits, hex
_EXPIRES = re.compile(r"^[0-9]{1,12}$")


class TokenError(ValueError):
    """A token that is malformed, forged or expired; ``reason`` is a short machine name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _sign(payload: str, key: bytes) -> str:
    mac = hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def issue(user_key: str, key: bytes, ttl_s: int, now_s: float | None = None) -> str:
    """A token for ``user_key`` valid for ``ttl_s`` seconds from ``now_s`` (default: now)."""
    if not _USER_KEY.match(user_key):
        raise ValueError("user_key must be a pseudonymous id (32 hex characters)")
    expires = int((time.time() if now_s is None else now_s) + ttl_s)
    payload = f"{PREFIX}.{user_key}.{expires}"
    return f"{payload}.{_sign(payload, key)}"


def verify(token: str, keys: Sequence[bytes], now_s: float | None = None) -> str:
    """The token's ``user_key`` when one of ``keys`` signed it and it has not expired; raises
    :class:`TokenError` (``malformed``, ``bad_signature``, ``expired``) otherwise."""
    if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise TokenError("malformed")
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != PREFIX:
        raise TokenError("malformed")
    _, user_key, expires, signature = parts
    if not _USER_KEY.match(user_key) or not _EXPIRES.match(expires):
        raise TokenError("malformed")
    payload = f"{PREFIX}.{user_key}.{expires}"
    # compare against every key (no early exit), so timing does not say which key matched
    good = False
    for key in keys:
        good |= hmac.compare_digest(_sign(payload, key), signature)
    if not good:
        raise TokenError("bad_signature")
    if int(expires) <= (time.time() if now_s is None else now_s):
        raise TokenError("expired")
    return user_key


DEMO_TOKEN_KEY = "tastemaker-demo-token-key-not-secret"


def token_keys(settings: Settings) -> list[bytes]:
    """The keys that verify listener tokens, the signing one first; empty (intake off) when
    none is set outside demo mode. Demo mode falls back to a public demo key, like the
    pseudonymisation key (``data.pii``)."""
    keys = [
        k.get_secret_value().encode()
        for k in (settings.token_key, settings.token_key_previous)
        if k is not None
    ]
    if not settings.token_key and settings.demo:
        keys.insert(0, DEMO_TOKEN_KEY.encode())
    if not settings.demo and DEMO_TOKEN_KEY.encode() in keys:
        raise ValueError("the public demo token key is for demo mode only")
    return keys
