"""PII transforms. Raw identifiers and personal data never leave ``data/``.

* account ids -> pseudonymous ``user_key`` by HMAC-SHA256 with a secret key;
* birth dates -> age groups (impossible ages -> ``"unknown"``);
* coordinates -> city / region / country (offline reverse geocoding, :mod:`data.geo`).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import date

from core.settings import Settings
from data.schemas import AGE_GROUPS, GENDERS

DEMO_KEY = "tastemaker-demo-key-not-secret"
KEY_ENV = "TASTEMAKER_PSEUDONYM_KEY"
DEMO_ENV = "TASTEMAKER_DEMO"
MIN_AGE, MAX_AGE = 13, 100  # outside this range an age is treated as impossible


class PseudonymKeyError(RuntimeError):
    """Raised when the pseudonymisation secret is missing outside demo mode."""


def pseudonym_key(settings: Settings | None = None) -> bytes:
    """The HMAC secret of ``settings`` (default: read now from ``$TASTEMAKER_PSEUDONYM_KEY``).

    Outside demo mode (``TASTEMAKER_DEMO=1``) the built-in demo key is refused, so a real
    deployment can never silently pseudonymise with a public key.
    """
    settings = settings if settings is not None else Settings()
    key = settings.pseudonym_key.get_secret_value() if settings.pseudonym_key else None
    demo = settings.demo
    if key and (key != DEMO_KEY or demo):
        return key.encode()
    if demo:
        return DEMO_KEY.encode()
    raise PseudonymKeyError(
        f"set {KEY_ENV} to a secret (at least 16 characters), or {DEMO_ENV}=1 to use the "
        "public demo key on synthetic data"
    )


def pseudonymise(user_id: str, key: bytes) -> str:
    """Stable pseudonymous key for an account id (first 128 bits of HMAC-SHA256, hex)."""
    return hmac.new(key, str(user_id).encode(), hashlib.sha256).hexdigest()[:32]


def age_on(birth: date | None, today: date) -> int | None:
    if birth is None:
        return None
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def age_group(age: int | None) -> str:
    """Bucket an age; missing or impossible ages (<13 or >100) become ``"unknown"``."""
    if age is None or age < MIN_AGE or age > MAX_AGE:
        return AGE_GROUPS[-1]
    if age < 18:
        return "<18"
    for upper, label in ((24, "18-24"), (34, "25-34"), (44, "35-44"), (54, "45-54")):
        if age <= upper:
            return label
    return "55+"


_GENDER_SPELLINGS = {
    "m": "m",
    "male": "m",
    "man": "m",
    "f": "f",
    "female": "f",
    "woman": "f",
    "n": "n",
    "x": "n",
    "nonbinary": "n",
    "non-binary": "n",
    "other": "n",
}


def normalise_gender(raw: str | None) -> str:
    """Free-text gender as apps stored it (``"M"``, ``"Female "``, ``"x"``) -> m/f/n/unknown."""
    return _GENDER_SPELLINGS.get((raw or "").strip().lower(), GENDERS[-1])
