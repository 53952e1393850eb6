"""Every stage on a tiny world: raw events -> lake -> features -> train -> evaluate -> export ->
the HTTP API. One pipeline run is shared by the end-to-end and the PII-scan tests."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from core.workspace import Workspace
from data.accounts import default_accounts_url, open_accounts
from data.features.online_store import open_online_store
from data.pii import pseudonym_key, pseudonymise

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(pipeline):
    from core.settings import Settings
    from serving.app import create_app

    ws, _ = pipeline
    with TestClient(create_app(Settings(workspace=ws.root, reload_interval_s=0))) as c:
        yield c


def _users_with_follows(ws: Workspace) -> list[tuple[str, set[str]]]:
    """Real account ids whose online features hold followed artists."""
    key = pseudonym_key()
    store = open_online_store(ws.online / "users.sqlite")
    found = []
    for user_id in sorted(open_accounts(default_accounts_url(ws)).user_ids()):
        row = store.get(pseudonymise(user_id, key))
        if row and row["followed"]:
            found.append((user_id, set(row["followed"])))
    store.close()
    return found


def test_model_beats_random_on_recall(pipeline):
    _, out = pipeline
    models = out["metrics"]["models"]
    two_tower, random = models["two-tower"]["test/recall@20"], models["random"]["test/recall@20"]
    # the tiny world has ~120 artists, so random is not negligible there (~0.15 Recall@20)
    assert two_tower > 1.3 * random, (two_tower, random)
    assert out["bundle"].joinpath("manifest.json").exists()


def test_served_lists_are_k_distinct_known_artists_without_followed(pipeline, client):
    ws, out = pipeline
    known = set(pq.read_table(ws.lake_artists).column("artist_id").to_pylist())
    users = _users_with_follows(ws)
    assert len(users) >= 2, "the tiny world should have users who follow artists"
    answers = {}
    for user_id, followed in users[:5]:
        r = client.get(f"/v1/users/{user_id}/recommendations", params={"k": 10})
        assert r.status_code == 200, r.text
        body = r.json()
        ids = [item["artist_id"] for item in body["items"]]
        assert len(ids) == 10 and len(set(ids)) == 10
        assert set(ids) <= known
        assert not set(ids) & followed, "followed artists must be left out"
        assert body["source"] == "model"
        answers[user_id] = ids
    first, *rest = answers.values()
    assert any(ids != first for ids in rest), "different users should get different lists"


def test_unknown_user_gets_trending(client):
    r = client.get("/v1/users/no-such-account-0000/recommendations", params={"k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["source"] == "trending" and len(body["items"]) == 5


def test_bad_k_is_rejected(client):
    assert client.get("/v1/users/x/recommendations", params={"k": 0}).status_code == 422
    assert client.get("/v1/users/x/recommendations", params={"k": 101}).status_code == 422


def test_health_reports_the_exported_bundle(pipeline, client):
    _, out = pipeline
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["bundle_version"] == Path(out["bundle"]).name


def test_on_the_demo_world_the_best_system_serves_as_the_readme_says(demo_pipeline):
    """What the README claims for `make demo` (same preset and seed): the two-tower is well
    ahead of most-popular on Recall@20 (0.285 vs 0.161 when measured), and the gate weighed
    the day's systems as the daily loop does: what serves beat most-popular, and no tuned
    peer is ahead of it on the gate's users."""
    from evaluation.gate import DEFAULT_BENCHMARKS, Decision
    from index import load_bundle

    ws, out = demo_pipeline
    models = out["metrics"]["models"]
    two_tower, popular = models["two-tower"]["test/recall@20"], models["popular"]["test/recall@20"]
    assert two_tower > 1.3 * popular, (two_tower, popular)
    assert ws.latest_run() == out["run_dir"]  # not the two-stage system's no-refit sibling
    decision = out["decision"]
    assert decision.benchmark, "the demo's gate must weigh the benchmark peers"
    assert "benchmark itemknn (tuned)" in decision.benchmark["scores"]
    served = decision if decision.promote else Decision(**decision.instead)
    assert served.promote and out["bundle"].is_dir()
    best_peer = max(decision.benchmark["scores"].values())
    assert served.challenger_score >= max(best_peer, decision.challenger_score) - 1e-9
    serving = out["serving"]
    peer = serving.model in DEFAULT_BENCHMARKS
    manifest = load_bundle(out["bundle"]).manifest
    assert (manifest["system"] == f"{serving.model} (precomputed slates)") == peer
    assert serving.bundle_version == out["bundle"].name
