"""A tiny real world for the service: a published bundle (ONNX tower, FAISS index, vocab,
catalogue, trending) and a real SQLite online store holding USER_FEATURES rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from data.features.online_store import open_online_store
from data.pii import KEY_ENV, pseudonymise
from data.schemas import USER_DENSE_FIELDS, USER_FEATURES, USER_SEGMENT_FIELDS
from tests.fixtures.synthetic_bundle import SyntheticSpec, artist_ids, publish_synthetic

TEST_KEY = "serving-tests-secret-key-0123456789"
TEST_TOKEN_KEY = "serving-tests-token-key-0123456789"
SPEC = SyntheticSpec(n_artists=24, n_clusters=2, dim=8, history_len=10)
ARTISTS = artist_ids(SPEC)
C0 = [a for a in ARTISTS if a.startswith("c0")]  # 12 artists of cluster 0
C1 = [a for a in ARTISTS if a.startswith("c1")]
TRENDING = {
    "global": [C1[0], C0[0], C1[1], C0[1], C1[2], C0[2], C1[3], C0[3]],
    "by_segment": {"country=DE": [C0[9], C0[10], C1[11]], "country=US": [C1[9], C1[10]]},
}


def feature_row(user_id: str, history=(), followed=(), seen=(), **segments) -> dict:
    """A complete USER_FEATURES row as the online store holds it."""
    row: dict = {name: None for name in USER_FEATURES.names}
    row.update(
        user_key=pseudonymise(user_id, TEST_KEY.encode()),
        as_of=1_700_000_000_000,
        history=list(history),
        history_age_s=[60.0 * i for i in range(len(history))],
        recent_tracks=[],
        followed=list(followed),
        seen=sorted(set(seen) | set(history)),
        region="unknown",
        n_impressions=10,
        n_clicks=1,
        n_streams=len(history),
    )
    row.update({f: segments.get(f, "unknown") for f in USER_SEGMENT_FIELDS})
    row.update({f: 0.5 for f in USER_DENSE_FIELDS})
    return row


# alice streams cluster 0, follows one more of it; bob streams cluster 1; carol is a cold user
# in DE (a features row, no history); anyone else has no row at all.
USERS = {
    "alice": feature_row("alice", C0[:3], followed=[C0[3]], seen=[C0[4]], country="DE"),
    "bob": feature_row("bob", C1[:2], followed=[C1[2]], country="US"),
    "carol": feature_row("carol", country="DE"),
}


@pytest.fixture(autouse=True)
def pseudonym_key(monkeypatch: pytest.MonkeyPatch) -> bytes:
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    monkeypatch.delenv("TASTEMAKER_DEMO", raising=False)
    return TEST_KEY.encode()


@pytest.fixture
def bundles_dir(tmp_path: Path) -> Path:
    root = tmp_path / "bundles"
    publish_synthetic(root, SPEC, trending=TRENDING, version="20240101T000000Z-first")
    return root


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "online" / "users.sqlite"
    store = open_online_store(path)
    store.put_many(USERS.values())
    store.close()
    return path


@pytest.fixture
def settings(tmp_path: Path, bundles_dir: Path, store_path: Path):
    from core.settings import Settings

    # the recommendation calls open (tests/security checks the closed default), and a token
    # key for POST /v1/events (listener_token below)
    return Settings(
        workspace=tmp_path,
        bundle_dir=bundles_dir,
        online_store_url=str(store_path),
        reload_interval_s=0,
        public_recommendations=True,
        token_key=TEST_TOKEN_KEY,
    )


def token_header(user_id: str, ttl_s: int = 600) -> dict[str, str]:
    """The Authorization header of ``user_id``'s listener token (what `tastemaker token` prints)."""
    from core.tokens import issue

    token = issue(pseudonymise(user_id, TEST_KEY.encode()), TEST_TOKEN_KEY.encode(), ttl_s)
    return {"authorization": f"Bearer {token}"}
