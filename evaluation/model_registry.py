"""The model registry: one row per trained or evaluated model, with its lineage and status.

A table in the workspace (``registry.sqlite``, SQLite) or, when the URL says so, in PostgreSQL
(``postgresql://...``, ``Settings.registry_url``). It never defaults into the account table's
database, which holds PII. One code path for both: SQL written with ``?`` placeholders,
rewritten to ``%s`` for psycopg.

Statuses: ``challenger`` (registered, not yet decided), ``champion`` (the model serving; at
most one), ``rejected`` (kept out by the gate, or rolled back), ``retired`` (a former
champion), ``benchmark`` (a peer the gate scored beside the challenger on the same users; it serves
only once the gate has made it the challenger: a peer ahead of the day's system that beat the
champion, ``jobs.daily.publish``, is set to ``challenger``, then promoted). :meth:`ModelRegistry.promote` and :meth:`ModelRegistry.rollback` change statuses in
one transaction; the caller points the serving bundle at the new champion.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from core.workspace import Workspace
from data.accounts import connect_sql, redact_url

STATUSES = ("champion", "challenger", "rejected", "retired", "benchmark")
_JSON_FIELDS = ("config", "data_snapshot", "metrics", "segment_metrics", "artefacts", "decision")
_COLUMNS = (
    "run_id",
    "model",
    "day",
    "created_at",
    "status",
    "git_sha",
    "bundle_version",
    *_JSON_FIELDS,
)
_SCHEMA = """CREATE TABLE IF NOT EXISTS model_runs (
    run_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    day TEXT,
    created_at TEXT NOT NULL,
    status TEXT NOT NULL,
    git_sha TEXT,
    bundle_version TEXT,
    config TEXT NOT NULL,
    data_snapshot TEXT NOT NULL,
    metrics TEXT NOT NULL,
    segment_metrics TEXT NOT NULL,
    artefacts TEXT NOT NULL,
    decision TEXT NOT NULL,
    status_changed_at TEXT NOT NULL
)"""


class RegistryError(RuntimeError):
    """A registry operation that cannot be done as asked (names the run and the reason)."""


@dataclass(frozen=True)
class ModelRecord:
    run_id: str
    model: str
    status: str = "challenger"
    day: str | None = None  # the daily cycle's date (YYYY-MM-DD), if any
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    git_sha: str | None = None
    bundle_version: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    data_snapshot: Mapping[str, Any] = field(default_factory=dict)  # date range, lake manifests
    metrics: Mapping[str, Any] = field(default_factory=dict)
    segment_metrics: Mapping[str, Any] = field(default_factory=dict)
    artefacts: Mapping[str, Any] = field(default_factory=dict)  # run dir, bundle dir, report
    decision: Mapping[str, Any] = field(default_factory=dict)  # the gate's verdict and reasons

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}; got {self.status!r}")


def default_registry_url(ws: Workspace) -> str:
    """``sqlite:///<workspace>/registry.sqlite``, wherever the account table lives."""
    return f"sqlite:///{ws.registry_db}"


class ModelRegistry:
    def __init__(self, conn: Any, dialect: str, url: str) -> None:
        self._conn, self.dialect, self.url = conn, dialect, url
        with self._tx() as cur:
            cur.execute(_SCHEMA)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ModelRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        cur = self._conn.cursor()
        try:
            yield _Cursor(cur, self.dialect)
            self._conn.commit()
        except BaseException:
            self._conn.rollback()
            raise
        finally:
            cur.close()

    # --- writes -------------------------------------------------------------------------------
    def register(self, record: ModelRecord) -> None:
        """Insert or replace a run's row (re-running a day re-registers the same run id)."""
        values = [getattr(record, c) for c in _COLUMNS]
        values = [
            json.dumps(v, sort_keys=True, default=str) if c in _JSON_FIELDS else v
            for c, v in zip(_COLUMNS, values, strict=True)
        ]
        cols = ", ".join((*_COLUMNS, "status_changed_at"))
        marks = ", ".join("?" for _ in range(len(_COLUMNS) + 1))
        updates = ", ".join(f"{c} = excluded.{c}" for c in (*_COLUMNS[1:], "status_changed_at"))
        with self._tx() as cur:
            cur.execute(
                f"INSERT INTO model_runs ({cols}) VALUES ({marks}) "
                f"ON CONFLICT (run_id) DO UPDATE SET {updates}",
                (*values, _now()),
            )

    def set_decision(self, run_id: str, status: str, decision: Mapping[str, Any]) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}; got {status!r}")
        self.get(run_id)
        with self._tx() as cur:
            cur.execute(
                "UPDATE model_runs SET status = ?, decision = ?, status_changed_at = ? "
                "WHERE run_id = ?",
                (status, json.dumps(decision, sort_keys=True, default=str), _now(), run_id),
            )

    def set_bundle(self, run_id: str, bundle_version: str) -> None:
        with self._tx() as cur:
            cur.execute(
                "UPDATE model_runs SET bundle_version = ? WHERE run_id = ?",
                (bundle_version, run_id),
            )

    def promote(self, run_id: str) -> ModelRecord | None:
        """Make ``run_id`` the champion; the former champion (returned) becomes ``retired``."""
        target = self.get(run_id)
        if target.status == "champion":
            return None
        if target.status == "benchmark":
            raise RegistryError(
                f"{run_id} is a benchmark the gate scored, not a challenger it promoted; "
                "it cannot serve"
            )
        previous = self.champion()
        now = _now()
        with self._tx() as cur:
            if previous is not None:
                cur.execute(
                    "UPDATE model_runs SET status = 'retired', status_changed_at = ? "
                    "WHERE run_id = ?",
                    (now, previous.run_id),
                )
            cur.execute(
                "UPDATE model_runs SET status = 'champion', status_changed_at = ? WHERE run_id = ?",
                (now, run_id),
            )
        return previous

    def rollback(self) -> tuple[ModelRecord, ModelRecord]:
        """Retire the champion in favour of the most recently retired one that has a bundle;
        the demoted champion is marked ``rejected``. Returns ``(demoted, restored)``."""
        current = self.champion()
        if current is None:
            raise RegistryError("no champion to roll back from")
        candidates = [r for r in self.runs(status="retired") if r.bundle_version]
        if not candidates:
            raise RegistryError(
                f"champion {current.run_id} has no retired predecessor with a bundle to restore"
            )
        restored = max(candidates, key=lambda r: r.created_at)
        now = _now()
        with self._tx() as cur:
            cur.execute(
                "UPDATE model_runs SET status = 'rejected', status_changed_at = ? WHERE run_id = ?",
                (now, current.run_id),
            )
            cur.execute(
                "UPDATE model_runs SET status = 'champion', status_changed_at = ? WHERE run_id = ?",
                (now, restored.run_id),
            )
        return self.get(current.run_id), self.get(restored.run_id)

    # --- reads --------------------------------------------------------------------------------
    def get(self, run_id: str) -> ModelRecord:
        rows = self._select("WHERE run_id = ?", (run_id,))
        if not rows:
            raise RegistryError(f"run {run_id!r} is not in the registry at {redact_url(self.url)}")
        return rows[0]

    def champion(self) -> ModelRecord | None:
        rows = self._select("WHERE status = 'champion'", ())
        if len(rows) > 1:
            raise RegistryError(
                f"{len(rows)} champions in the registry: {[r.run_id for r in rows]}"
            )
        return rows[0] if rows else None

    def runs(self, status: str | None = None) -> list[ModelRecord]:
        if status is None:
            return self._select("", ())
        return self._select("WHERE status = ?", (status,))

    def _select(self, where: str, params: tuple) -> list[ModelRecord]:
        with self._tx() as cur:
            cur.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM model_runs {where} ORDER BY created_at, run_id",
                params,
            )
            rows = cur.fetchall()
        out = []
        for row in rows:
            kw = dict(zip(_COLUMNS, row, strict=True))
            for c in _JSON_FIELDS:
                kw[c] = json.loads(kw[c])
            out.append(ModelRecord(**kw))
        return out


class _Cursor:
    """``?`` placeholders for both dialects (psycopg wants ``%s``)."""

    def __init__(self, cur: Any, dialect: str) -> None:
        self._cur, self._dialect = cur, dialect

    def execute(self, sql: str, params: tuple = ()) -> None:
        if self._dialect == "postgresql":
            sql = sql.replace("?", "%s")
        self._cur.execute(sql, params)

    def fetchall(self) -> list[tuple]:
        return list(self._cur.fetchall())


def open_registry(url: str) -> ModelRegistry:
    """``sqlite:///path`` or ``postgresql://...`` (:func:`data.accounts.connect_sql`)."""
    conn, dialect = connect_sql(url, "model registry")
    return ModelRegistry(conn, dialect, url)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()
