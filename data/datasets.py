"""Where the real research data sets live, and readers for the ones the world samples from.

The data is never copied into the repository: it sits beside it in ``../shared/data`` (or
``Settings.data_dir``, ``$TASTEMAKER_DATA_DIR``), and everything that needs it treats a
missing folder as "not available" rather than an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from core.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
HETREC_DIRNAME = "lastfm-hetrec-2k"
LFM_USERS_RELPATH = Path("lfm-1b-users") / "LFM-1b_users.txt"


def shared_data_dir(data_dir: Path | None = None) -> Path:
    """``data_dir`` if given, else ``Settings.data_dir`` ($TASTEMAKER_DATA_DIR), else
    ``<repo root>/../shared/data`` (may not exist)."""
    chosen = data_dir or Settings().data_dir
    return Path(chosen).resolve() if chosen else (REPO_ROOT.parent / "shared" / "data").resolve()


def hetrec_dir(data_dir: Path | None = None) -> Path | None:
    """The HetRec 2011 Last.fm 2K folder, or ``None`` when it is not present."""
    path = shared_data_dir(data_dir) / HETREC_DIRNAME
    return path if (path / "user_artists.dat").is_file() else None


def lfm_users_path(data_dir: Path | None = None) -> Path | None:
    """The LFM-1b user table (``LFM-1b_users.txt``), or ``None`` when it is not present."""
    path = shared_data_dir(data_dir) / LFM_USERS_RELPATH
    return path if path.is_file() else None


@dataclass(frozen=True)
class Demographics:
    """Columns of a user table, one entry per user (raw, dirty values as the source has them).

    ``country`` is the code as entered ("" when empty; LFM-1b writes ``UK`` for Britain),
    ``age`` is -1 when unknown and may hold impossible values (0, 112), ``gender`` is one of
    ``m``/``f``/``n``/"" and ``registered`` is the signup time in epoch seconds.
    """

    country: np.ndarray  # (N,) str
    age: np.ndarray  # (N,) int
    gender: np.ndarray  # (N,) str
    registered: np.ndarray  # (N,) int64 epoch seconds

    def __len__(self) -> int:
        return len(self.age)


def read_lfm_users(path: str | os.PathLike[str]) -> Demographics:
    """Read ``LFM-1b_users.txt`` (tab-separated, header ``user_id country age gender ...``)."""
    path = Path(path)
    table = pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(delimiter="\t"),
        convert_options=pacsv.ConvertOptions(
            column_types={"country": pa.string(), "gender": pa.string()},
            strings_can_be_null=False,
        ),
    )
    needed = ("country", "age", "gender", "registered_unixtime")
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise ValueError(
            f"{path} has no column(s) {missing}; found: {', '.join(table.column_names)}"
        )
    return Demographics(
        country=np.asarray(table["country"].to_pylist(), dtype=object),
        age=table["age"].to_numpy().astype(np.int64),
        gender=np.asarray(table["gender"].to_pylist(), dtype=object),
        registered=table["registered_unixtime"].to_numpy().astype(np.int64),
    )
