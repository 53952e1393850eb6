"""The account table: the one place PII lives, and the PII-safe view that leaves it.

One code path serves SQLite (``sqlite:///path``, the embedded default) and PostgreSQL
(``postgresql://...`` through psycopg 3): SQL is written once with ``?`` placeholders and a
thin adapter rewrites them for psycopg. The schema is versioned SQL applied by
:meth:`AccountTable.migrate` and recorded in ``schema_migrations``. To isolate a schema on
Postgres, pass ``?options=-csearch_path%3Dmyschema`` in the URL.

Email and birth date never leave this module: :meth:`AccountTable.pii_safe_view` returns
only ``data.schemas.USERS`` columns (pseudonymous key, age group, gender, geography, signup).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa

from core.urls import redact_url
from core.workspace import Workspace
from data import geo
from data.pii import age_group, age_on, normalise_gender, pseudonym_key, pseudonymise
from data.schemas import USERS

log = logging.getLogger("tastemaker.data")

COLUMNS = (
    "user_id",
    "email",
    "birth_date",
    "gender",
    "latitude",
    "longitude",
    "country",
    "signup_ts",
    "deleted_at",
)
REQUIRED = ("user_id", "email", "signup_ts")
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """CREATE TABLE accounts (
            user_id TEXT PRIMARY KEY,
            email TEXT NOT NULL,
            birth_date DATE,
            gender TEXT,
            latitude DOUBLE PRECISION,
            longitude DOUBLE PRECISION,
            country TEXT NOT NULL DEFAULT '',
            signup_ts TIMESTAMP WITH TIME ZONE NOT NULL,
            deleted_at TIMESTAMP WITH TIME ZONE
        )""",
    ),
    (2, "CREATE INDEX accounts_deleted_at ON accounts (deleted_at)"),
)


def _to_utc(value: Any) -> datetime | None:
    """A timestamp as SQLite (ISO text) or Postgres (datetime) returns it -> aware UTC."""
    if value is None or value == "":
        return None
    ts = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def _to_date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None  # a dirty birth date is an unknown birth date


def _iso(value: Any) -> str | None:
    ts = _to_utc(value)
    return None if ts is None else ts.isoformat(timespec="milliseconds")


class AccountTable:
    """Accounts behind a DB-API connection; construct with :func:`open_accounts`."""

    def __init__(self, conn: Any, dialect: str, url: str):
        self._conn, self.dialect, self.url = conn, dialect, redact_url(url)

    def _sql(self, query: str) -> str:
        return query.replace("?", "%s") if self.dialect == "postgresql" else query

    def _execute(self, query: str, params: Iterable[Any] = ()) -> list[tuple]:
        cur = self._conn.cursor()
        cur.execute(self._sql(query), tuple(params))
        rows = cur.fetchall() if cur.description else []
        cur.close()
        return rows

    def migrate(self) -> list[int]:
        """Apply pending migrations in order, each in its own transaction; return them."""
        self._execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        self._conn.commit()
        done = {r[0] for r in self._execute("SELECT version FROM schema_migrations")}
        applied = []
        for version, statement in MIGRATIONS:
            if version in done:
                continue
            try:
                self._execute(statement)
                self._execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, datetime.now(timezone.utc).isoformat()),
                )
                self._conn.commit()
            except Exception:
                self._conn.rollback()
                raise
            applied.append(version)
            log.info("accounts: applied migration %d on %s", version, self.url)
        return applied

    def upsert(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert or update accounts by ``user_id``; returns the number of rows written."""
        params = []
        for i, row in enumerate(rows):
            missing = [c for c in REQUIRED if row.get(c) in (None, "")]
            if missing:
                raise ValueError(f"account row {i} has no {missing}; found: {sorted(row)}")
            values = {c: row.get(c) for c in COLUMNS}
            values["country"] = values["country"] or ""
            values["signup_ts"], values["deleted_at"] = (
                _iso(row["signup_ts"]),
                _iso(row.get("deleted_at")),
            )
            bd = _to_date(values["birth_date"])
            values["birth_date"] = None if bd is None else bd.isoformat()
            params.append(tuple(values[c] for c in COLUMNS))
        update = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:])
        query = (
            f"INSERT INTO accounts ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
            f"ON CONFLICT (user_id) DO UPDATE SET {update}"
        )
        try:
            cur = self._conn.cursor()
            cur.executemany(self._sql(query), params)
            cur.close()
            self._conn.commit()
        except Exception:
            self._conn.rollback()
            raise
        return len(params)

    def delete_all(self) -> None:
        """Empty the table (used when a synthetic world replaces the previous one)."""
        self._execute("DELETE FROM accounts")
        self._conn.commit()

    def erase(self, user_id: str) -> dict[str, Any] | None:
        """Remove one account for good (the right to be forgotten); returns its email (for the
        caller's check that nothing is left) or None when there was no such account. SQLite
        is vacuumed, so the freed pages no longer hold the row."""
        rows = self._execute("SELECT email FROM accounts WHERE user_id = ?", (user_id,))
        self._execute("DELETE FROM accounts WHERE user_id = ?", (user_id,))
        self._conn.commit()
        if self.dialect == "sqlite":
            self._conn.execute("VACUUM")
        return {"email": rows[0][0]} if rows else None

    def email_of(self, user_id: str) -> str | None:
        rows = self._execute("SELECT email FROM accounts WHERE user_id = ?", (user_id,))
        return str(rows[0][0]) if rows and rows[0][0] else None

    def user_ids(self) -> set[str]:
        """Account ids that are not deleted."""
        return {
            r[0] for r in self._execute("SELECT user_id FROM accounts WHERE deleted_at IS NULL")
        }

    def deleted_user_ids(self) -> set[str]:
        return {
            r[0] for r in self._execute("SELECT user_id FROM accounts WHERE deleted_at IS NOT NULL")
        }

    def pii_safe_view(self, key: bytes, as_of: datetime | None = None) -> pa.Table:
        """Accounts alive at ``as_of`` (default now) as ``USERS`` rows; no raw PII leaves.

        Ages are taken at ``as_of``; impossible ones (<13, >100) and missing ones are
        ``unknown``. Geography comes from the coordinates (nearest GeoNames city); without
        coordinates the entered country code (normalised) is used and city/region are
        ``unknown``.
        """
        now = _to_utc(as_of) or datetime.now(timezone.utc)
        rows = self._execute(
            "SELECT user_id, birth_date, gender, latitude, longitude, country, signup_ts, "
            "deleted_at FROM accounts ORDER BY user_id"
        )
        rows = [r for r in rows if (gone := _to_utc(r[7])) is None or gone > now]
        lat = np.array([np.nan if r[3] is None else float(r[3]) for r in rows], dtype=np.float64)
        lon = np.array([np.nan if r[4] is None else float(r[4]) for r in rows], dtype=np.float64)
        city, region, country = geo.reverse_geocode(lat, lon)
        entered = np.array([geo.normalise_country(r[5]) for r in rows], dtype=object)
        country = np.where(np.isnan(lat) | np.isnan(lon), entered, country)
        today = now.date()
        columns = {
            "user_key": [pseudonymise(r[0], key) for r in rows],
            "age_group": [age_group(age_on(_to_date(r[1]), today)) for r in rows],
            "gender": [normalise_gender(r[2]) for r in rows],
            "country": country.tolist(),
            "region": region.tolist(),
            "city": city.tolist(),
            "signup_ts": [_to_utc(r[6]) for r in rows],
        }
        return pa.Table.from_pydict(columns, schema=USERS)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> AccountTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect_sql(url: str, what: str) -> tuple[Any, str]:
    """``(connection, dialect)`` for ``sqlite:///path`` or
    ``postgresql://user[:pw]@host[:port]/db[?options]``; ``what`` names the table in errors.

    An unreachable database raises :class:`ConnectionError` naming the URL without password.
    Shared by the account table and the model registry.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        path = Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None
        if path is None or not str(path):
            raise ValueError(f"SQLite {what} URL must look like sqlite:///path/to.db; got {url!r}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return sqlite3.connect(path), "sqlite"
        except (OSError, sqlite3.Error) as exc:
            raise ConnectionError(f"cannot open the {what} at {url}: {exc}") from exc
    if scheme in ("postgresql", "postgres"):
        import psycopg

        try:
            conn = psycopg.connect(url, connect_timeout=5)
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            password = urlsplit(url).password
            if password:
                reason = reason.replace(password, "***")
            raise ConnectionError(
                f"cannot reach the {what} at {redact_url(url)}: {reason}"
            ) from None
        return conn, "postgresql"
    raise ValueError(f"unsupported {what} URL {redact_url(url)!r}: use sqlite:/// or postgresql://")


def open_accounts(url: str) -> AccountTable:
    """The account table at ``url`` (see :func:`connect_sql`)."""
    conn, dialect = connect_sql(url, "account table")
    return AccountTable(conn, dialect, url)


def default_accounts_url(ws: Workspace) -> str:
    return f"sqlite:///{ws.accounts_db}"


def publish_user_view(
    ws: Workspace,
    accounts_url: str | None = None,
    key: bytes | None = None,
    as_of: datetime | None = None,
) -> int:
    """Publish the PII-safe user view to the ``ws.lake_users`` Delta table (one overwrite
    commit, none when the view is unchanged: :func:`data.lake.publish_users`); returns its
    row count."""
    from data.lake import publish_users

    url = accounts_url or default_accounts_url(ws)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        raise FileNotFoundError(f"no account table at {url}; run `tastemaker world` first")
    key = key if key is not None else pseudonym_key()
    with open_accounts(url) as table:
        table.migrate()
        view = table.pii_safe_view(key, as_of)
    published = publish_users(ws.lake_users, view, f"accounts:{redact_url(url)}")
    log.info(
        "accounts: published %d users to %s (version %d)",
        view.num_rows,
        ws.lake_users,
        published["version"],
    )
    return view.num_rows
