"""Where generated state lives: one git-ignored workspace folder.

Every job takes a :class:`Workspace` and reads or writes only below its root, so a whole
pipeline can be pointed at a temp folder (tests) or a mounted volume (production).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core import atomic

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

    @property
    def dashboard_state(self) -> Path:
        """The snapshot the batch jobs write for the web dashboard (no PII in it)."""
        return self.root / "dashboard" / "state.json"

    @property
    def daily(self) -> Path:
        return self.root / "daily"

    @property
    def registry_db(self) -> Path:
        return self.root / "registry.sqlite"

    @property
    def latest_run_pointer(self) -> Path:
        """``runs/LATEST``: the id of the last run a training job finished, written by that job."""
        return self.runs / "LATEST"

    def latest_run(self) -> Path:
        """The run dir the last finished training job recorded (never guessed from mtimes)."""
        pointer = self.latest_run_pointer
        if not pointer.is_file():
            raise FileNotFoundError(
                f"no finished run recorded in {pointer}; run `tastemaker train` first"
            )
        run_dir = self.runs / pointer.read_text().strip()
        if not run_dir.is_dir():
            raise FileNotFoundError(
                f"{pointer} names {run_dir.name!r}, which is not in {self.runs}"
            )
        return run_dir

    def set_latest_run(self, run_dir: Path) -> None:
        if run_dir.parent.resolve() != self.runs.resolve():
            raise ValueError(f"{run_dir} is not a run dir of {self.runs}")
        atomic.write_bytes(self.latest_run_pointer, (run_dir.name + "\n").encode())

    def ensure(self) -> Workspace:
        self.root.mkdir(parents=True, exist_ok=True)
        return self
