"""PII transforms: age buckets at their edges, stable pseudonyms, the demo-key guard, geo."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from data import geo
from data.accounts import publish_user_view
from data.lake import read_users
from data.pii import (
    DEMO_KEY,
    PseudonymKeyError,
    age_group,
    age_on,
    normalise_gender,
    pseudonym_key,
    pseudonymise,
)


@pytest.mark.parametrize(
    ("age", "group"),
    [
        (None, "unknown"),
        (-1, "unknown"),
        (0, "unknown"),
        (12, "unknown"),
        (13, "<18"),
        (17, "<18"),
        (18, "18-24"),
        (24, "18-24"),
        (25, "25-34"),
        (54, "45-54"),
        (55, "55+"),
        (100, "55+"),
        (101, "unknown"),
        (112, "unknown"),
    ],
)
def test_age_group_edges(age, group):
    assert age_group(age) == group


def test_age_counts_birthdays_exactly():
    assert age_on(date(2000, 6, 2), date(2018, 6, 1)) == 17
    assert age_on(date(2000, 6, 1), date(2018, 6, 1)) == 18
    assert age_on(date(2000, 2, 29), date(2018, 2, 28)) == 17
    assert age_on(None, date(2018, 1, 1)) is None


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("m", "m"),
        ("M", "m"),
        ("Male ", "m"),
        ("female", "f"),
        ("F", "f"),
        ("n", "n"),
        ("x", "n"),
        ("", "unknown"),
        (None, "unknown"),
        ("dunno", "unknown"),
    ],
)
def test_gender_normalisation(raw, canonical):
    assert normalise_gender(raw) == canonical


def test_pseudonyms_are_stable_keyed_and_opaque():
    k1, k2 = b"secret-one-0123456", b"secret-two-0123456"
    a = pseudonymise("10000042", k1)
    assert a == pseudonymise("10000042", k1) == pseudonymise(10000042, k1)
    assert a != pseudonymise("10000042", k2) and a != pseudonymise("10000043", k1)
    assert len(a) == 32 and int(a, 16) >= 0 and "10000042" not in a


def test_demo_key_is_refused_outside_demo_mode(monkeypatch):
    monkeypatch.delenv("TASTEMAKER_DEMO", raising=False)
    monkeypatch.delenv("TASTEMAKER_PSEUDONYM_KEY", raising=False)
    with pytest.raises(PseudonymKeyError, match="TASTEMAKER_PSEUDONYM_KEY"):
        pseudonym_key()
    monkeypatch.setenv("TASTEMAKER_PSEUDONYM_KEY", DEMO_KEY)
    with pytest.raises(PseudonymKeyError):
        pseudonym_key()
    monkeypatch.setenv("TASTEMAKER_PSEUDONYM_KEY", "a-real-secret-of-some-length")
    assert pseudonym_key() == b"a-real-secret-of-some-length"


def test_demo_mode_uses_the_demo_key(demo_mode):
    assert pseudonym_key() == DEMO_KEY.encode()


def test_publishing_users_outside_demo_mode_without_a_key_fails(tiny_world, monkeypatch):
    monkeypatch.delenv("TASTEMAKER_DEMO", raising=False)
    monkeypatch.delenv("TASTEMAKER_PSEUDONYM_KEY", raising=False)
    with pytest.raises(PseudonymKeyError):
        publish_user_view(tiny_world)
    assert not tiny_world.lake_users.exists()


@pytest.mark.parametrize(
    ("lat", "lon", "country", "city"),
    [
        (52.52, 13.405, "DE", None),
        (48.8566, 2.3522, "FR", "Paris"),
        (35.6762, 139.6503, "JP", None),
        (-33.8688, 151.2093, "AU", "Sydney"),
        (-23.5505, -46.6333, "BR", "Sao Paulo"),
        (51.5074, -0.1278, "GB", None),
        (40.7128, -74.0060, "US", "New York City"),
    ],
)
def test_reverse_geocoding_finds_known_cities(lat, lon, country, city):
    c, r, k = geo.reverse_geocode(np.array([lat]), np.array([lon]))
    assert k[0] == country
    assert city is None or c[0] == city
    assert r[0] != "unknown"


def test_missing_coordinates_are_unknown_and_shapes_must_match():
    c, r, k = geo.reverse_geocode(np.array([np.nan, 52.52]), np.array([1.0, np.nan]))
    assert list(c) == list(r) == list(k) == ["unknown", "unknown"]
    with pytest.raises(ValueError, match="differ in shape"):
        geo.reverse_geocode(np.zeros(2), np.zeros(3))


def test_entered_countries_normalise_to_iso():
    assert [geo.normalise_country(c) for c in ("UK", "de", " us ", "", None, "USA", "1x")] == [
        "GB",
        "DE",
        "US",
        "unknown",
        "unknown",
        "unknown",
        "unknown",
    ]


def test_user_view_file_holds_no_raw_pii(tiny_world, demo_mode):
    import sqlite3

    publish_user_view(tiny_world)
    # every file of the view's Delta table: its Parquet files and its log
    blob = b"".join(f.read_bytes() for f in tiny_world.lake_users.rglob("*") if f.is_file())
    text = str(read_users(tiny_world.lake_users).to_pylist())
    with sqlite3.connect(tiny_world.accounts_db) as conn:
        rows = conn.execute("SELECT user_id, email, birth_date, latitude FROM accounts").fetchall()
    assert len(rows) == 150
    for user_id, email, birth, lat in rows:
        for value in (user_id, email, birth):
            if value:
                assert value.encode() not in blob and value not in text
        if lat is not None:
            assert f"{lat:.4f}" not in text
