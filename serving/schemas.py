"""Request and response models of the HTTP API (one module, so the OpenAPI docs are one place)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

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
    user_id: str | None = Field(description="null for POST /v1/recommendations without one")
    request_id: str = Field(description="echo in click/impression events as request_id")
    bundle_version: str
    source: Literal["precomputed", "model", "trending"] = Field(
        description="how the list was produced"
    )
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


# --- input hygiene ---------------------------------------------------------------------------
MAX_USER_ID_BYTES = 128  # account ids are short; anything longer is a bug or an attack
# ISO 3166-1 alpha-2, the officially assigned codes (249)
ISO_COUNTRIES = frozenset(
    [
        "AD",
        "AE",
        "AF",
        "AG",
        "AI",
        "AL",
        "AM",
        "AO",
        "AQ",
        "AR",
        "AS",
        "AT",
        "AU",
        "AW",
        "AX",
        "AZ",
        "BA",
        "BB",
        "BD",
        "BE",
        "BF",
        "BG",
        "BH",
        "BI",
        "BJ",
        "BL",
        "BM",
        "BN",
        "BO",
        "BQ",
        "BR",
        "BS",
        "BT",
        "BV",
        "BW",
        "BY",
        "BZ",
        "CA",
        "CC",
        "CD",
        "CF",
        "CG",
        "CH",
        "CI",
        "CK",
        "CL",
        "CM",
        "CN",
        "CO",
        "CR",
        "CU",
        "CV",
        "CW",
        "CX",
        "CY",
        "CZ",
        "DE",
        "DJ",
        "DK",
        "DM",
        "DO",
        "DZ",
        "EC",
        "EE",
        "EG",
        "EH",
        "ER",
        "ES",
        "ET",
        "FI",
        "FJ",
        "FK",
        "FM",
        "FO",
        "FR",
        "GA",
        "GB",
        "GD",
        "GE",
        "GF",
        "GG",
        "GH",
        "GI",
        "GL",
        "GM",
        "GN",
        "GP",
        "GQ",
        "GR",
        "GS",
        "GT",
        "GU",
        "GW",
        "GY",
        "HK",
        "HM",
        "HN",
        "HR",
        "HT",
        "HU",
        "ID",
        "IE",
        "IL",
        "IM",
        "IN",
        "IO",
        "IQ",
        "IR",
        "IS",
        "IT",
        "JE",
        "JM",
        "JO",
        "JP",
        "KE",
        "KG",
        "KH",
        "KI",
        "KM",
        "KN",
        "KP",
        "KR",
        "KW",
        "KY",
        "KZ",
        "LA",
        "LB",
        "LC",
        "LI",
        "LK",
        "LR",
        "LS",
        "LT",
        "LU",
        "LV",
        "LY",
        "MA",
        "MC",
        "MD",
        "ME",
        "MF",
        "MG",
        "MH",
        "MK",
        "ML",
        "MM",
        "MN",
        "MO",
        "MP",
        "MQ",
        "MR",
        "MS",
        "MT",
        "MU",
        "MV",
        "MW",
        "MX",
        "MY",
        "MZ",
        "NA",
        "NC",
        "NE",
        "NF",
        "NG",
        "NI",
        "NL",
        "NO",
        "NP",
        "NR",
        "NU",
        "NZ",
        "OM",
        "PA",
        "PE",
        "PF",
        "PG",
        "PH",
        "PK",
        "PL",
        "PM",
        "PN",
        "PR",
        "PS",
        "PT",
        "PW",
        "PY",
        "QA",
        "RE",
        "RO",
        "RS",
        "RU",
        "RW",
        "SA",
        "SB",
        "SC",
        "SD",
        "SE",
        "SG",
        "SH",
        "SI",
        "SJ",
        "SK",
        "SL",
        "SM",
        "SN",
        "SO",
        "SR",
        "SS",
        "ST",
        "SV",
        "SX",
        "SY",
        "SZ",
        "TC",
        "TD",
        "TF",
        "TG",
        "TH",
        "TJ",
        "TK",
        "TL",
        "TM",
        "TN",
        "TO",
        "TR",
        "TT",
        "TV",
        "TW",
        "TZ",
        "UA",
        "UG",
        "UM",
        "US",
        "UY",
        "UZ",
        "VA",
        "VC",
        "VE",
        "VG",
        "VI",
        "VN",
        "VU",
        "WF",
        "WS",
        "YE",
        "YT",
        "ZA",
        "ZM",
        "ZW",
    ]
)


def user_id_problem(user_id: str) -> str | None:
    """Why ``user_id`` is not acceptable (never quoting it), or None."""
    if not user_id:
        return "user_id is empty"
    if len(user_id.encode("utf-8", errors="replace")) > MAX_USER_ID_BYTES:
        return f"user_id is longer than {MAX_USER_ID_BYTES} bytes"
    if any(ord(c) < 32 or ord(c) == 127 for c in user_id):
        return "user_id contains control characters"
    try:
        user_id.encode("utf-8")
    except UnicodeEncodeError:
        return "user_id is not valid Unicode text (a lone surrogate)"
    return None


def country_problem(country: str) -> str | None:
    if country.upper() not in ISO_COUNTRIES:
        return "country must be an ISO 3166-1 alpha-2 code, e.g. DE"
    return None


class HistoryRequest(BaseModel):
    """A listener known only by what they played (a brand-new or anonymous listener)."""

    history: list[Annotated[str, Field(max_length=128)]] = Field(
        max_length=500, description="artist ids, most recent first"
    )
    k: int | None = Field(default=None, ge=1, le=100, description=MAX_K_DOC)
    country: str | None = Field(default=None, description="ISO 3166-1 alpha-2 hint")
    user_id: str | None = Field(
        default=None, description="when known: the served slate is logged as impressions"
    )


class EventsRequest(BaseModel):
    """Raw events as the app emits them (docs/CONTRACTS.md raw events); ``server_ts`` is
    stamped on receipt. At most 1,000 per call."""

    events: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


class EventsResponse(BaseModel):
    accepted: int
    rejected: list[dict[str, Any]] = Field(description="[{index, reason}] of refused events")
    sink: Literal["stream", "object_store"]


class Ready(BaseModel):
    ready: bool
    bundle_version: str
    online_store: bool
    overloaded: bool
    reason: str
