"""Where generated state lives: one git-ignored workspace folder.

Every job takes a :class:`Workspace` and reads or writes only below its root, so a whole
pipeline can be pointed at a temp folder (tests) or a mounted volume (production).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core import atomic


@dataclass(frozen=True)
class Workspace:
    root: Path

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
        the account table, never inside the PII-free lake. A Delta table (``data.lake``)."""
        return self.root / "pii" / "quarantine"

    @property
    def erasure(self) -> Path:
        """Erasure requests (raw ids only while open) and their append-only audit log."""
        return self.root / "pii" / "erasure"

    @property
    def lake_artists(self) -> Path:
        return self.lake / "artists.parquet"

    @property
    def lake_users(self) -> Path:
        """The PII-free user view: a Delta table (``data.lake.USERS_TABLE``)."""
        return self.lake / "users"

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
    def registry_db(self) -> Path:
        """The model registry's SQLite file (its default database; never the account table's)."""
        return self.root / "registry.sqlite"

    @property
    def daily(self) -> Path:
        """The daily cycle's folder: one sub-folder per day (report, plots, summary)."""
        return self.root / "daily"

    @property
    def simulations(self) -> Path:
        """The A/B simulator's result files (``jobs.simulate``)."""
        return self.root / "simulations"

    @property
    def tuning(self) -> Path:
        """``tastemaker tune``'s results: one ``<dataset>.json`` of best params per model."""
        return self.root / "tuning"

    @property
    def ingest_ledger(self) -> Path:
        """Ingest's ledger: one entry per raw object committed (``data.ingest.ledger``)."""
        return self.lake / "_ledger"

    @property
    def ingest_manifests(self) -> Path:
        """One manifest per ingest run (counts in = counts out)."""
        return self.lake / "_manifests"

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

    def run(self, run_id: str) -> RunDir:
        """The run dir ``runs/<run_id>/`` (it may not exist yet)."""
        return RunDir(self.runs / run_id)

    @property
    def world_manifest(self) -> Path:
        """``raw/world.json``: the generated world's config and summary counts (no PII)."""
        return self.raw / "world.json"

    @property
    def online_users(self) -> Path:
        """The default online feature store (SQLite), when no store URL is configured."""
        return self.online / "users.sqlite"

    @property
    def online_slates(self) -> Path:
        """The default precomputed-slate store (SQLite), when no slate store URL is configured."""
        return self.online / "slates.sqlite"

    # the feature job's tables (``data.features.build``), named once in :class:`FeatureDir`
    @property
    def feature_dir(self) -> FeatureDir:
        return FeatureDir(self.features)


@dataclass(frozen=True)
class FeatureDir:
    """The files of a feature folder (``features/``), named once."""

    path: Path

    @property
    def examples(self) -> Path:
        return self.path / "examples.parquet"

    @property
    def sequences(self) -> Path:
        return self.path / "sequences.parquet"

    @property
    def eval_users(self) -> Path:
        """Valid and test users frozen at their cutoffs (the temporal protocol)."""
        return self.path / "eval.parquet"

    @property
    def user_features(self) -> Path:
        return self.path / "user_features.parquet"

    @property
    def artist_features(self) -> Path:
        return self.path / "artist_features.parquet"

    @property
    def trending(self) -> Path:
        return self.path / "trending.parquet"

    @property
    def meta(self) -> Path:
        return self.path / "meta.json"

    @property
    def state(self) -> Path:
        """What the incremental daily build carries (``data.features.incremental``)."""
        return self.path / "state"

    def lineage_inputs(self) -> tuple[Path, ...]:
        """What a training run's lineage checksums: every table it reads, and the summary."""
        return (
            self.examples,
            self.sequences,
            self.eval_users,
            self.artist_features,
            self.trending,
            self.meta,
        )


@dataclass(frozen=True)
class RunDir:
    """The files inside one run (``runs/<run_id>/``), named once, as ``index.FILES`` names a
    bundle's. Two-tower runs have ``config``, ``vocab`` and ``checkpoint``; baseline runs
    ``config``, ``interactions`` and ``model``; both get ``metrics``, ``report`` and plots."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def vocab(self) -> Path:
        return self.path / "vocab.json"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.ckpt"

    @property
    def interactions(self) -> Path:
        return self.path / "interactions.npz"

    @property
    def model(self) -> Path:
        return self.path / "model.npz"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def lineage(self) -> Path:
        return self.path / "lineage.json"

    @property
    def report(self) -> Path:
        return self.path / "report.md"

    @property
    def ranker(self) -> Path:
        """The ranker fitted against this run's two-tower (``training.ranker``)."""
        return self.path / "ranker"

    def plot(self, name: str) -> Path:
        """``<name>.png`` (``recall_at_k``, ``train_test_gap``, ``segments``)."""
        return self.path / f"{name}.png"
