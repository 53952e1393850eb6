"""The synthetic world's people: demographics, coordinates, activity, and the account rows.

Demographics are sampled from the real LFM-1b user table when ``../shared/data`` has it
(country, age with its -1/0/112 dirt, gender m/f/n/empty, signup time); otherwise from the
built-in ``FALLBACK_*`` distributions below, which roughly follows that table's marginals.
Coordinates are a random GeoNames city of the user's country, jittered by ~1 km. Users whose
country is empty or not a known country get NULL coordinates (the app never got a location).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from core.constants import DAY_MS
from data import datasets, geo
from data.pii import age_group
from data.schemas import AGE_GROUPS
from world.config import WorldConfig

log = logging.getLogger("tastemaker.data")

# Fallback marginals (shares of LFM-1b users): 54% empty country, 62% unknown age.
FALLBACK_COUNTRY: dict[str, float] = {
    "": 0.54,
    "US": 0.085,
    "RU": 0.042,
    "DE": 0.038,
    "UK": 0.038,
    "PL": 0.037,
    "BR": 0.032,
    "FI": 0.012,
    "NL": 0.011,
    "ES": 0.010,
    "SE": 0.010,
    "UA": 0.010,
    "FR": 0.009,
    "IT": 0.009,
    "CA": 0.008,
    "JP": 0.007,
    "MX": 0.006,
    "AU": 0.006,
    "IN": 0.005,
    "TR": 0.005,
}
FALLBACK_GENDER: dict[str, float] = {"n": 0.535, "m": 0.332, "f": 0.131, "": 0.002}
FALLBACK_AGE_UNKNOWN = 0.617
FALLBACK_AGE_OUTLIERS: dict[int, float] = {0: 0.004, 112: 0.002}  # shares of all users
FALLBACK_REGISTERED = (1_035_849_600, 1_343_250_546)  # LFM-1b's signup range, epoch s
_FIRST = (
    "alex",
    "sam",
    "maria",
    "jan",
    "li",
    "noor",
    "ola",
    "tomas",
    "yuki",
    "ana",
    "kai",
    "eva",
    "leo",
    "mia",
    "omar",
    "ivy",
    "raj",
    "zoe",
    "finn",
    "lena",
)
_LAST = (
    "smith",
    "novak",
    "garcia",
    "kowalski",
    "ivanova",
    "muller",
    "silva",
    "tanaka",
    "berg",
    "rossi",
    "khan",
    "dubois",
    "jensen",
    "lee",
    "moreau",
    "costa",
)
_DOMAINS = ("example.com", "mail.example.org", "inbox.example.net")
# Raw gender as different app versions stored it: canonical -> (spellings, probabilities)
_GENDER_SPELLINGS = {
    "m": (("m", "M", "male", "Male "), (0.85, 0.05, 0.07, 0.03)),
    "f": (("f", "F", "female", "Female"), (0.85, 0.05, 0.07, 0.03)),
    "n": (("n", "N", "x"), (0.9, 0.05, 0.05)),
    "": (("", None), (0.5, 0.5)),
}


@dataclass(frozen=True)
class People:
    user_id: np.ndarray  # (U,) str, the app's raw account id
    email: np.ndarray  # (U,) str
    birth_date: np.ndarray  # (U,) "YYYY-MM-DD" or None
    gender_raw: np.ndarray  # (U,) str or None, as entered
    country_entered: np.ndarray  # (U,) str, as entered ("" when empty)
    country_iso: np.ndarray  # (U,) ISO alpha-2 or "" (what event payloads carry)
    lat: np.ndarray  # (U,) float64, NaN when unknown
    lon: np.ndarray  # (U,) float64
    signup_ms: np.ndarray  # (U,) int64
    deleted_ms: np.ndarray  # (U,) int64, -1 when not deleted
    age_group: np.ndarray  # (U,) int index into AGE_GROUPS
    utc_offset_min: np.ndarray  # (U,) int, the client's UTC offset in minutes
    device: np.ndarray  # (U,) str
    skew_ms: np.ndarray  # (U,) int64, client clock error (0 for almost everyone)
    active_from_ms: np.ndarray  # (U,) int64
    active_to_ms: np.ndarray  # (U,) int64
    activity: np.ndarray  # (U,) sessions per active day
    depth: np.ndarray  # (U,) listening-depth propensity (logit offset)

    def account_rows(self) -> list[dict]:
        """Rows for :meth:`data.accounts.AccountTable.upsert` (the only PII sink)."""
        out = []
        for i in range(len(self.user_id)):
            out.append(
                {
                    "user_id": self.user_id[i],
                    "email": self.email[i],
                    "birth_date": self.birth_date[i],
                    "gender": self.gender_raw[i],
                    "latitude": None if np.isnan(self.lat[i]) else float(self.lat[i]),
                    "longitude": None if np.isnan(self.lon[i]) else float(self.lon[i]),
                    "country": self.country_entered[i],
                    "signup_ts": _iso(int(self.signup_ms[i])),
                    "deleted_at": None if self.deleted_ms[i] < 0 else _iso(int(self.deleted_ms[i])),
                }
            )
        return out


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")


def _demographics(cfg: WorldConfig, rng: np.random.Generator) -> datasets.Demographics:
    path = datasets.lfm_users_path() if cfg.use_real_demographics else None
    n = cfg.n_users
    if path is not None:
        real = datasets.read_lfm_users(path)
        rows = rng.choice(len(real), size=n, replace=n > len(real))
        log.info("world: demographics sampled from %s", path)
        return datasets.Demographics(
            real.country[rows], real.age[rows], real.gender[rows], real.registered[rows]
        )
    log.info("world: LFM-1b user table not found; using the built-in fallback distribution")
    countries, cp = zip(*FALLBACK_COUNTRY.items(), strict=False)
    genders, gp = zip(*FALLBACK_GENDER.items(), strict=False)
    age = np.clip(np.round(rng.lognormal(np.log(24), 0.3, n)), 13, 80).astype(np.int64)
    age[rng.random(n) < FALLBACK_AGE_UNKNOWN] = -1
    for outlier, share in FALLBACK_AGE_OUTLIERS.items():
        age[rng.random(n) < share] = outlier
    lo, hi = FALLBACK_REGISTERED
    return datasets.Demographics(
        country=np.asarray(countries, dtype=object)[
            rng.choice(len(cp), n, p=np.array(cp) / sum(cp))
        ],
        age=age,
        gender=np.asarray(genders, dtype=object)[rng.choice(len(gp), n, p=gp)],
        registered=rng.integers(lo, hi, n),
    )


def _coordinates(entered: np.ndarray, rng: np.random.Generator):
    n = len(entered)
    lat, lon = np.full(n, np.nan), np.full(n, np.nan)
    iso = np.array([geo.normalise_country(c) for c in entered], dtype=object)
    table = geo.city_table()
    for code in np.unique(iso):
        users = np.flatnonzero(iso == code)
        cities = table.in_country(code) if code != geo.UNKNOWN else np.empty(0, np.int64)
        if len(cities) == 0:
            iso[users] = ""
            continue
        pick = cities[rng.integers(0, len(cities), len(users))]
        lat[users] = table.lat[pick] + rng.normal(0, 0.005, len(users))
        lon[users] = table.lon[pick] + rng.normal(0, 0.005, len(users))
    return iso, lat, lon


def _birth_dates(age: np.ndarray, end: datetime, rng: np.random.Generator) -> np.ndarray:
    out = np.full(len(age), None, dtype=object)
    for i in np.flatnonzero(age >= 0):
        born = end - timedelta(days=int(age[i] * 365.25 + rng.integers(1, 360)))
        out[i] = born.date().isoformat()
    return out


def make_people(cfg: WorldConfig, rng: np.random.Generator) -> People:
    n, start, end = cfg.n_users, cfg.start_ms, cfg.end_ms
    demo = _demographics(cfg, rng)
    iso, lat, lon = _coordinates(demo.country, rng)
    # ids: distinct 8-digit account numbers, as the app issues them
    user_id = (
        (rng.choice(90_000_000, size=n, replace=False) + 10_000_000).astype(str).astype(object)
    )
    first, last = rng.integers(0, len(_FIRST), n), rng.integers(0, len(_LAST), n)
    dom = rng.integers(0, len(_DOMAINS), n)
    email = np.array(
        [
            f"{_FIRST[a]}.{_LAST[b]}{uid[-3:]}@{_DOMAINS[d]}"
            for a, b, d, uid in zip(first, last, dom, user_id, strict=False)
        ],
        dtype=object,
    )
    gender_raw = np.empty(n, dtype=object)
    for canon, (spellings, p) in _GENDER_SPELLINGS.items():
        idx = np.flatnonzero(demo.gender == canon)
        gender_raw[idx] = np.asarray(spellings, dtype=object)[rng.choice(len(p), len(idx), p=p)]
    # signup: LFM-1b's tenure shape ending the day before the window; some sign up inside it
    signup = start - DAY_MS - (demo.registered.max() - demo.registered) * 1000
    new = rng.random(n) < cfg.new_user_frac
    signup[new] = rng.integers(start, end - 7 * DAY_MS, int(new.sum()))
    deleted = np.full(n, -1, dtype=np.int64)
    gone = rng.random(n) < cfg.deleted_frac
    deleted[gone] = rng.integers(end - 7 * DAY_MS, end, int(gone.sum()))
    active_from = np.maximum(signup, start)
    active_to = np.full(n, end, dtype=np.int64)
    churn = rng.random(n) < cfg.churn_frac
    active_to[churn] = active_from[churn] + (
        rng.random(int(churn.sum())) * (end - active_from[churn])
    ).astype(np.int64)
    active_to = np.where(gone, np.minimum(active_to, deleted), active_to)
    # UTC offset from longitude (whole hours), India's half hour kept as a real-world oddity
    offset = np.where(
        np.isnan(lon), rng.choice([-300, 0, 60, 180], n), np.round(np.nan_to_num(lon) / 15) * 60
    )
    offset = np.where(iso == "IN", 330, offset).astype(np.int64)
    skew = np.zeros(n, dtype=np.int64)
    skewed = rng.random(n) < cfg.skewed_client_frac
    skew[skewed] = rng.integers(2 * 3_600_000, 3 * DAY_MS, int(skewed.sum()))
    sigma = cfg.activity_sigma
    activity = rng.lognormal(np.log(cfg.sessions_per_day) - sigma**2 / 2, sigma, n)
    end_dt = datetime.fromtimestamp(end / 1000, tz=timezone.utc)
    groups = np.array([AGE_GROUPS.index(age_group(int(a) if a >= 0 else None)) for a in demo.age])
    return People(
        user_id=user_id,
        email=email,
        birth_date=_birth_dates(demo.age, end_dt, rng),
        gender_raw=gender_raw,
        country_entered=demo.country.astype(object),
        country_iso=iso,
        lat=lat,
        lon=lon,
        signup_ms=signup.astype(np.int64),
        deleted_ms=deleted,
        age_group=groups,
        utc_offset_min=offset,
        device=np.asarray(cfg.devices, dtype=object)[
            rng.choice(len(cfg.devices), n, p=np.array(cfg.device_shares) / sum(cfg.device_shares))
        ],
        skew_ms=skew,
        active_from_ms=active_from.astype(np.int64),
        active_to_ms=active_to,
        activity=activity,
        depth=rng.normal(0.0, 0.7, n),
    )
