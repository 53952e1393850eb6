"""Bring real data in: the HetRec 2011 Last.fm 2K set, and any interactions file.

Both produce the ``data.schemas.INTERACTIONS`` contract (``user_id``, ``artist_id`` as
strings, ``weight`` float32, ``timestamp`` UTC or null) and, for HetRec, ``ARTISTS`` rows.

HetRec quirks handled (see ``../shared/data/lastfm-hetrec-2k/PROVENANCE.md``): ``tags.dat``
is latin-1, most files have CRLF line endings, artist ids are sparse (1..18745), 390 tagged
artists are missing from ``artists.dat`` (their tags are dropped), and 5 tag rows carry
impossible years (before Last.fm existed): they still count as tags but not as dates.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data.schemas import ARTISTS, FRIENDS, INTERACTIONS, USER_TAGS
from data.splits import holdout_mask

log = logging.getLogger("tastemaker.data")
HETREC_FILES = ("user_artists.dat", "artists.dat", "tags.dat", "user_taggedartists.dat")
TOP_TAGS = 10
FIRST_VALID_YEAR = 2002  # Last.fm launched in 2002; earlier tag years are corrupt
# Column names people use instead of ours: a hint in the error, never a silent rename.
ALIASES = {
    "user_id": ("user", "userid", "user_key", "uid", "customer_id", "listener"),
    "artist_id": ("artist", "artistid", "item", "item_id", "itemid", "band", "track_id"),
    "weight": ("plays", "playcount", "count", "rating", "score", "value"),
    "timestamp": ("ts", "time", "datetime", "date", "event_ts", "created_at"),
}


def _read_dat(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """A HetRec ``.dat`` file: tab-separated, one header, CRLF or LF, no quoting."""
    if not path.is_file():
        raise FileNotFoundError(
            f"HetRec file {path} is missing; expected {', '.join(HETREC_FILES)}"
        )
    # the C parser treats CRLF and LF alike; QUOTE_NONE because names contain bare quotes
    return pd.read_csv(
        path, sep="\t", encoding=encoding, dtype=str, quoting=csv.QUOTE_NONE, keep_default_na=False
    )


def import_hetrec(path: str | os.PathLike[str]) -> tuple[pa.Table, pa.Table]:
    """(interactions, artists) from the HetRec 2011 Last.fm 2K folder at ``path``.

    Interactions: one row per user-artist pair, ``weight`` = play count, no timestamp.
    Artists: every artist of ``artists.dat`` with its top tags by assignment count and
    ``created_ts`` = the first valid tag date anyone gave it (null when none).
    """
    root = Path(path)
    ua = _read_dat(root / "user_artists.dat")
    artists = _read_dat(root / "artists.dat")
    tags = _read_dat(root / "tags.dat", encoding="latin-1")
    tagged = _read_dat(root / "user_taggedartists.dat")
    inter = pa.table(
        {
            "user_id": ua["userID"].to_numpy(dtype=object),
            "artist_id": ua["artistID"].to_numpy(dtype=object),
            "weight": ua["weight"].astype(np.float32).to_numpy(),
            "timestamp": pa.nulls(len(ua), type=INTERACTIONS.field("timestamp").type),
        },
        schema=INTERACTIONS,
    )
    known = set(artists["id"])
    orphan = ~tagged["artistID"].isin(known)
    log.info(
        "hetrec: %d tag rows for %d artists not in artists.dat dropped",
        int(orphan.sum()),
        tagged.loc[orphan, "artistID"].nunique(),
    )
    tagged = tagged[~orphan]
    names = dict(zip(tags["tagID"], tags["tagValue"], strict=False))
    counts = tagged.groupby(["artistID", "tagID"]).size().reset_index(name="n")
    counts["tag_int"] = counts["tagID"].astype(int)
    counts = counts.sort_values(["artistID", "n", "tag_int"], ascending=[True, False, True])
    top = counts.groupby("artistID").head(TOP_TAGS)
    top_tags: dict[str, list[str]] = {}
    for artist, tag in zip(top["artistID"].tolist(), top["tagID"].tolist(), strict=False):
        top_tags.setdefault(artist, []).append(names.get(tag, tag))
    year = tagged["year"].astype(int)
    valid = year >= FIRST_VALID_YEAR
    log.info("hetrec: %d tag rows with corrupt years kept without a date", int((~valid).sum()))
    dates = pd.to_datetime(
        pd.DataFrame(
            {
                "year": year[valid],
                "month": tagged.loc[valid, "month"].astype(int),
                "day": tagged.loc[valid, "day"].astype(int),
            }
        ),
        utc=True,
    )
    first_seen = dates.groupby(tagged.loc[valid, "artistID"]).min().to_dict()
    ids = artists["id"].tolist()
    artist_table = pa.table(
        {
            "artist_id": ids,
            "name": artists["name"].to_numpy(dtype=object),
            "tags": [top_tags.get(a, []) for a in ids],
            "created_ts": pa.array(
                [first_seen.get(a) for a in ids], type=ARTISTS.field("created_ts").type
            ),
        },
        schema=ARTISTS,
    )
    log.info(
        "hetrec: %d users, %d artists, %d pairs",
        pa.compute.count_distinct(inter["user_id"]).as_py(),
        artist_table.num_rows,
        inter.num_rows,
    )
    return inter, artist_table


def import_hetrec_social(path: str | os.PathLike[str]) -> tuple[pa.Table, pa.Table]:
    """(friends, user_tags) from the HetRec folder at ``path``: ``FRIENDS`` rows (both
    directions, as stored) and ``USER_TAGS`` rows (every tag assignment, the tag by name;
    assignments on artists missing from ``artists.dat`` dropped, like their artist tags).

    These are *all* of each user's assignments, held-out artists included: what a model may
    read of them is decided against its training split by ``training.user_side``."""
    root = Path(path)
    friends = _read_dat(root / "user_friends.dat")
    tags = _read_dat(root / "tags.dat", encoding="latin-1")
    tagged = _read_dat(root / "user_taggedartists.dat")
    known = set(_read_dat(root / "artists.dat")["id"])
    tagged = tagged[tagged["artistID"].isin(known)]
    names = dict(zip(tags["tagID"], tags["tagValue"], strict=False))
    friend_table = pa.table(
        {
            "user_id": friends["userID"].to_numpy(dtype=object),
            "friend_id": friends["friendID"].to_numpy(dtype=object),
        },
        schema=FRIENDS,
    )
    tag_table = pa.table(
        {
            "user_id": tagged["userID"].to_numpy(dtype=object),
            "artist_id": tagged["artistID"].to_numpy(dtype=object),
            "tag": [names.get(t, t) for t in tagged["tagID"].tolist()],
        },
        schema=USER_TAGS,
    )
    log.info(
        "hetrec: %d friend pairs, %d tag assignments", friend_table.num_rows, tag_table.num_rows
    )
    return friend_table, tag_table


def write_side_table(table: pa.Table, path: str | os.PathLike[str]) -> None:
    """Write a ``FRIENDS`` / ``USER_TAGS`` table as ``.parquet`` or ``.tsv``, atomically."""
    from core.atomic import atomic_path, write_table

    path = Path(path)
    if path.suffix == ".parquet":
        write_table(path, table)
        return
    with atomic_path(path) as tmp:
        table.to_pandas().to_csv(
            tmp, sep="\t", index=False, quoting=csv.QUOTE_NONE, escapechar="\\"
        )


def _read_frame(path: Path) -> pd.DataFrame:
    """A ``.parquet`` file, or a ``.csv``/``.tsv`` one read as strings exactly as written
    (the writers here escape, never quote)."""
    if path.suffix in (".parquet", ".pq"):
        return pq.read_table(path).to_pandas()
    return pd.read_csv(
        path,
        sep="," if path.suffix == ".csv" else "\t",
        dtype=str,
        keep_default_na=False,
        quoting=csv.QUOTE_NONE,
        escapechar="\\",
    )


def read_side_table(path: str | os.PathLike[str], schema: pa.Schema) -> pa.Table:
    """A ``FRIENDS`` or ``USER_TAGS`` file (``.parquet``, ``.tsv`` or ``.csv``) as ``schema``;
    errors name the file and the missing column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    frame = _read_frame(path)
    found = [str(c) for c in frame.columns]
    for name in schema.names:
        if name not in found:
            raise ValueError(
                f"{path} has no {name!r} column{_hint(name, found)}; found: {', '.join(found)}"
            )
    return pa.table(
        {n: frame[n].astype(str).to_numpy(dtype=object) for n in schema.names}, schema=schema
    )


def _hint(name: str, found: list[str]) -> str:
    lowered = {c.lower(): c for c in found}
    for alias in ALIASES.get(name, ()):
        if alias in lowered:
            return f" (rename {lowered[alias]!r} to {name!r}?)"
    return ""


def _read_any(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pq.read_table(path).to_pandas()
    if suffix not in (".csv", ".tsv", ".txt", ".dat"):
        raise ValueError(f"interactions file {path} must be .csv, .tsv or .parquet; got {suffix!r}")
    return pd.read_csv(
        path, sep="," if suffix == ".csv" else "\t", dtype=str, keep_default_na=False
    )


def _timestamps(values: pd.Series, path: Path) -> pa.Array:
    """Epoch seconds, ISO-8601 strings (any offset) or datetimes -> UTC; blanks -> null."""
    ts_type = INTERACTIONS.field("timestamp").type
    if pd.api.types.is_datetime64_any_dtype(values):
        ts = values if values.dt.tz is not None else values.dt.tz_localize("UTC")
    else:
        raw = values
        if not pd.api.types.is_numeric_dtype(values):
            raw = values.mask(values.astype(str).str.strip().isin(["", "nan", "None"]))
        numeric = pd.to_numeric(raw, errors="coerce")
        if numeric.notna().sum() == raw.notna().sum():
            ts = pd.to_datetime(numeric, unit="s", utc=True)  # epoch seconds
        else:
            try:
                ts = pd.to_datetime(raw, utc=True, format="ISO8601")
            except (ValueError, TypeError):
                bad = raw[numeric.isna() & raw.notna()].iloc[0]
                raise ValueError(
                    f"{path}: column 'timestamp' holds {bad!r}, which is neither "
                    "epoch seconds nor ISO-8601"
                ) from None
    return pa.array(ts.dt.tz_convert("UTC"), type=ts_type, from_pandas=True)


def read_interactions(path: str | os.PathLike[str]) -> pa.Table:
    """An interactions file (CSV/TSV/Parquet) as an ``INTERACTIONS`` table.

    Needs ``user_id`` and ``artist_id``; ``weight`` defaults to 1, ``timestamp`` (epoch seconds
    or ISO-8601) to null. Errors name the file, the column and what was found instead.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"interactions file {path} does not exist")
    frame = _read_any(path)
    found = [str(c) for c in frame.columns]
    for name in ("user_id", "artist_id"):
        if name not in found:
            raise ValueError(
                f"interactions file {path} has no {name!r} column{_hint(name, found)}; "
                f"found: {', '.join(found) or '(no columns)'}"
            )
    n = len(frame)
    out = {}
    for name in ("user_id", "artist_id"):
        col = frame[name].astype(str).str.strip()
        empty = (col == "") | frame[name].isna().to_numpy()
        if empty.any():
            raise ValueError(f"{path}: column {name!r} is empty on row {int(np.argmax(empty)) + 1}")
        out[name] = col.to_numpy(dtype=object)
    if "weight" in frame:
        weight = pd.to_numeric(frame["weight"], errors="coerce")
        bad = weight.isna() | ~np.isfinite(weight)
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            raise ValueError(
                f"{path}: column 'weight' has a non-numeric value "
                f"{frame['weight'].iloc[row]!r} on row {row + 1}"
            )
        out["weight"] = weight.to_numpy(dtype=np.float32)
    else:
        out["weight"] = np.ones(n, dtype=np.float32)
    ts_type = INTERACTIONS.field("timestamp").type
    out["timestamp"] = (
        _timestamps(frame["timestamp"], path) if "timestamp" in frame else pa.nulls(n, ts_type)
    )
    return pa.table(out, schema=INTERACTIONS)


def holdout_split(
    table: pa.Table, test_frac: float = 0.2, seed: int = 0
) -> tuple[pa.Table, pa.Table]:
    """Per-user random holdout: ``round(test_frac × n)`` of each user's rows go to test.

    The rule is :func:`data.splits.holdout_mask` (every user keeps at least one row), the
    one the evaluation protocol uses too. Same input and seed, same split.
    """
    users = table["user_id"].to_numpy(zero_copy_only=False)
    codes = np.unique(users, return_inverse=True)[1]
    test = holdout_mask(codes, test_frac, seed)
    return table.filter(pa.array(~test)), table.filter(pa.array(test))


def write_interactions(table: pa.Table, path: str | os.PathLike[str]) -> None:
    """Write an ``INTERACTIONS`` table as ``.parquet`` or ``.tsv`` (by suffix), atomically."""
    from core.atomic import atomic_path, write_table

    path = Path(path)
    if path.suffix == ".parquet":
        write_table(path, table)
        return
    frame = table.to_pandas()
    frame["timestamp"] = frame["timestamp"].map(lambda t: "" if pd.isna(t) else t.isoformat())
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)


def write_artists(table: pa.Table, path: str | os.PathLike[str]) -> None:
    """Write an ``ARTISTS`` table as ``.parquet`` or ``.tsv`` (tags joined with ``|``)."""
    from core.atomic import atomic_path, write_table

    path = Path(path)
    if path.suffix == ".parquet":
        write_table(path, table)
        return
    frame = table.to_pandas()
    frame["tags"] = frame["tags"].map(lambda tags: "|".join(t.replace("|", "/") for t in tags))
    frame["created_ts"] = frame["created_ts"].map(lambda t: "" if pd.isna(t) else t.isoformat())
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, quoting=csv.QUOTE_NONE, escapechar="\\")


def read_artists(path: str | os.PathLike[str]) -> pa.Table:
    """Artist metadata written by :func:`write_artists` (or any file with ``artist_id``)."""
    path = Path(path)
    frame = _read_frame(path)
    if "artist_id" not in frame:
        raise ValueError(
            f"artist file {path} has no 'artist_id' column{_hint('artist_id', list(frame.columns))}; "
            f"found: {', '.join(map(str, frame.columns))}"
        )
    n = len(frame)
    tags = frame["tags"] if "tags" in frame else pd.Series([[]] * n)
    tags = [list(t) if not isinstance(t, str) else [x for x in t.split("|") if x] for t in tags]
    created = frame.get("created_ts", pd.Series([None] * n)).replace("", None)
    return pa.table(
        {
            "artist_id": frame["artist_id"].astype(str).to_numpy(dtype=object),
            "name": frame.get("name", pd.Series([""] * n)).astype(str).to_numpy(dtype=object),
            "tags": tags,
            "created_ts": pa.array(
                pd.to_datetime(created, utc=True, format="ISO8601"),
                type=ARTISTS.field("created_ts").type,
                from_pandas=True,
            ),
        },
        schema=ARTISTS,
    )
