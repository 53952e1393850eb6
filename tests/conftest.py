"""Fixtures shared by every package's tests (keep this file small).

* ``tiny_world`` — a freshly generated ``WorldConfig.tiny()`` world (seed 0) in ``tmp_path``,
  returned as the :class:`~core.workspace.Workspace` (raw events, catalogue, SQLite
  account table, ``raw/world.json``). About a second.
* ``demo_mode`` — ``TASTEMAKER_DEMO=1`` for one test, so ``data.pii.pseudonym_key()`` gives
  the public demo key.
* ``postgres_url`` — a URL into a fresh, uniquely named schema on the test PostgreSQL
  (``$TASTEMAKER_TEST_POSTGRES_URL``); the schema is dropped afterwards. Skips if unreachable.
* ``redis_url`` — the test Redis (``$TASTEMAKER_TEST_REDIS_URL``, DB 15); skips if unreachable.
  Share the DB politely: prefix keys with ``redis_prefix`` and delete what you create.
* ``hetrec_path`` — the HetRec 2011 Last.fm 2K folder; skips if it is absent.
* ``chromium`` — ``/usr/bin/chromium`` for the browser tests; skips if it is absent.
* ``spark`` — one local[2] SparkSession for the whole test session (the feature engine's
  :func:`data.features.spark.spark_session`); skips without Java or pyspark.

On a laptop without these, the tests that need them skip with the reason. Under
``TASTEMAKER_REQUIRE_SERVICES=postgres,redis,hetrec,browser,spark`` (any subset; ``.ci/run`` sets it) the
named fixtures fail instead, so a CI machine that lost a service cannot pass green.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from core.workspace import Workspace

POSTGRES_URL = os.environ.get(
    "TASTEMAKER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TASTEMAKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_SERVICES_ENV = "TASTEMAKER_REQUIRE_SERVICES"


def skip_unless_required(service: str, reason: str) -> None:
    """Skip for ``reason``; a failure instead when ``$TASTEMAKER_REQUIRE_SERVICES`` names
    ``service``."""
    required = {s.strip() for s in os.environ.get(REQUIRE_SERVICES_ENV, "").split(",")}
    if service in required:
        pytest.fail(f"{reason} ({REQUIRE_SERVICES_ENV} requires {service})", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def tiny_world(tmp_path: Path) -> Workspace:
    from world.generate import WorldConfig, generate_world

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
        skip_unless_required("postgres", reason)
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
        skip_unless_required("redis", reason)
    return REDIS_URL


@pytest.fixture
def redis_prefix() -> str:
    return f"tm-test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium for the browser tests (the project never runs `playwright install`)."""
    path = Path("/usr/bin/chromium")
    if not path.is_file():
        skip_unless_required("browser", f"{path} not installed (apt-get install chromium)")
    return str(path)


@pytest.fixture
def hetrec_path() -> Path:
    from data.datasets import hetrec_dir

    path = hetrec_dir()
    if path is None:
        skip_unless_required(
            "hetrec", "HetRec 2011 Last.fm 2K not found (../shared/data/lastfm-hetrec-2k)"
        )
    return path


@pytest.fixture(scope="session")
def demo_pipeline(tmp_path_factory: pytest.TempPathFactory):
    """`make demo`'s pipeline (demo world, seed 7, through the gate), once per session; yields
    ``(workspace, run_pipeline's result)``. The README's claims and the web pages' render
    times are checked on it."""
    from jobs.demo import run_pipeline

    mp = pytest.MonkeyPatch()
    mp.setenv("TASTEMAKER_DEMO", "1")
    mp.delenv("TASTEMAKER_PSEUDONYM_KEY", raising=False)
    ws = Workspace(tmp_path_factory.mktemp("demo") / "ws").ensure()
    out = run_pipeline(ws, preset="demo", seed=7)
    yield ws, out
    mp.undo()


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory):
    """Every stage (world → ingest → features → train → evaluate → export) on a tiny world,
    once per session; yields ``(workspace, run_pipeline's result)``. Log lines the pipeline
    emits are captured to ``logs/pipeline.log`` in the workspace (the PII scan reads them)."""
    import logging

    from jobs.demo import run_pipeline

    mp = pytest.MonkeyPatch()
    mp.setenv("TASTEMAKER_DEMO", "1")
    mp.delenv("TASTEMAKER_PSEUDONYM_KEY", raising=False)
    ws = Workspace(tmp_path_factory.mktemp("e2e") / "ws").ensure()
    log_path = ws.root / "logs" / "pipeline.log"
    log_path.parent.mkdir(parents=True)
    handler = logging.FileHandler(log_path)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        out = run_pipeline(ws, preset="tiny", seed=3, gate=False)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
    yield ws, out
    mp.undo()


@pytest.fixture(scope="session")
def spark():
    """A local[2] session shared by every Spark test (starting one costs ~5 s)."""
    from core.settings import Settings
    from data.features.spark import SparkUnavailable, spark_session

    try:
        session = spark_session(Settings(), "local[2]")
    except SparkUnavailable as exc:
        skip_unless_required("spark", str(exc))
    yield session
    session.stop()
