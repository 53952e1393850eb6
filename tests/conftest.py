"""Fixtures shared by every package's tests (keep this file small).

* ``tiny_world`` — a freshly generated ``WorldConfig.tiny()`` world (seed 0) in ``tmp_path``,
  returned as the :class:`~tastemaker.workspace.Workspace` (raw events, catalogue, SQLite
  account table, ``raw/world.json``). About a second.
* ``demo_mode`` — ``TASTEMAKER_DEMO=1`` for one test, so ``data.pii.pseudonym_key()`` gives
  the public demo key.
* ``postgres_url`` — a URL into a fresh, uniquely named schema on the test PostgreSQL
  (``$TASTEMAKER_TEST_POSTGRES_URL``); the schema is dropped afterwards. Skips if unreachable.
* ``redis_url`` — the test Redis (``$TASTEMAKER_TEST_REDIS_URL``, DB 15); skips if unreachable.
  Share the DB politely: prefix keys with ``redis_prefix`` and delete what you create.
* ``hetrec_path`` — the HetRec 2011 Last.fm 2K folder; skips if it is absent.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

# pytest puts tests/ on sys.path to import this file; tests/index, tests/data ... (folders
# without __init__.py) would then shadow the real packages as namespace packages unless the
# repository root is on sys.path too (regular packages win over namespace portions).
# Equivalent to `pythonpath = ["."]` in pyproject's [tool.pytest.ini_options].
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(1, _ROOT)

from tastemaker.workspace import Workspace  # noqa: E402

POSTGRES_URL = os.environ.get(
    "TASTEMAKER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TASTEMAKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def tiny_world(tmp_path: Path) -> Workspace:
    from data.world import WorldConfig, generate_world

    ws = Workspace(tmp_path / "ws").ensure()
    generate_world(ws, WorldConfig.tiny(seed=0))
    return ws


@pytest.fixture
def demo_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASTEMAKER_DEMO", "1")
    monkeypatch.delenv("TASTEMAKER_PSEUDONYM_KEY", raising=False)


def postgres_unavailable() -> str | None:
    """Why PostgreSQL cannot be used for tests, or ``None`` when it can."""
    import psycopg

    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        return f"PostgreSQL unreachable at {POSTGRES_URL}: {str(exc).strip().splitlines()[0]}"
    return None


@pytest.fixture
def postgres_url():
    import psycopg

    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    schema = f"tm_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def redis_unavailable() -> str | None:
    """Why Redis cannot be used for tests, or ``None`` when it can."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        return f"Redis unreachable at {REDIS_URL}: {exc}"
    return None


@pytest.fixture
def redis_url() -> str:
    reason = redis_unavailable()
    if reason:
        pytest.skip(reason)
    return REDIS_URL


@pytest.fixture
def redis_prefix() -> str:
    return f"tm-test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def hetrec_path() -> Path:
    from data.datasets import hetrec_dir

    path = hetrec_dir()
    if path is None:
        pytest.skip("HetRec 2011 Last.fm 2K not found (../shared/data/lastfm-hetrec-2k)")
    return path
