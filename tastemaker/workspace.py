"""Where generated state lives: one git-ignored workspace folder.

Every job takes a :class:`Workspace` and reads or writes only below its root, so a whole
pipeline can be pointed at a temp folder (tests) or a mounted volume (production).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = "workspace"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def from_env(cls, root: str | os.PathLike[str] | None = None) -> Workspace:
        """Use ``root`` if given, else ``$TASTEMAKER_WORKSPACE``, else ``./workspace``."""
        chosen = root or os.environ.get("TASTEMAKER_WORKSPACE") or DEFAULT_ROOT
        return cls(Path(chosen).resolve())

    # object store (raw zone, as another team delivers it); may be overridden by an fsspec URL
    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def raw_events(self) -> Path:
        return self.raw / "events"

    @property
    def raw_catalog(self) -> Path:
        return self.raw / "catalog"

    # PII zone: the account table (SQLite by default)
    @property
    def accounts_db(self) -> Path:
        return self.root / "pii" / "accounts.sqlite"

    # lake: PII-free from here on
    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def lake_events(self) -> Path:
        return self.lake / "events"

    @property
    def quarantine(self) -> Path:
        """Rejected raw lines, verbatim (so they may hold raw ids): a restricted zone beside
        the account table, never inside the PII-free lake."""
        return self.root / "pii" / "quarantine"

    @property
    def lake_artists(self) -> Path:
        return self.lake / "artists.parquet"

    @property
    def lake_users(self) -> Path:
        return self.lake / "users.parquet"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def online(self) -> Path:
        return self.root / "online"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def bundles(self) -> Path:
        return self.root / "bundles"

    def ensure(self) -> Workspace:
        self.root.mkdir(parents=True, exist_ok=True)
        return self
