"""One pipeline: the request path (one row) and precompute (many rows) give the same answer.

On every user of the tiny world (the trained end-to-end bundle and its online store) and on
the synthetic bundles, with and without a ranker, for k in {1, 10, 100}: the same artists,
scores to 1e-6 and reasons, whether a user is scored alone, in a batch, or from a slate.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import USERS
from test_ranker_serving import publish, worst_first_ranker

from data.features.online_store import open_online_store, rows_from_table, table_from_rows
from index import load_bundle
from serving.model import ServingModel
from serving.pipeline import score_rows
from serving.precompute import precompute, score_table
from serving.recommender import Recommendation, Recommender, reason_for, recommend_from_row
from serving.reload import ModelHolder
from serving.slates import Slate, open_slate_store

KS = (1, 10, 100)


def _model_part(items: tuple[Recommendation, ...]) -> list[Recommendation]:
    return [r for r in items if r.source == "model"]


def assert_same(got: list[Recommendation], want: list[Recommendation]) -> None:
    assert [r.artist_id for r in got] == [r.artist_id for r in want]
    assert [r.score for r in got] == pytest.approx([r.score for r in want], abs=1e-6)
    assert [r.reason for r in got] == [r.reason for r in want]


def check_paths_agree(model: ServingModel, rows: list[dict], k: int) -> int:
    """Request path vs batch pipeline vs encoded slates for every row; returns how many rows
    got model picks."""
    batch = score_rows(model, rows, k)
    slates = {key: Slate.from_blob(b) for key, b in score_table(model, table_from_rows(rows), k)}
    tokens, scored = model.encoder.artist_tokens, 0
    for row, picks in zip(rows, batch, strict=True):
        realtime = recommend_from_row(model, row, k)
        if picks is None:
            assert realtime.source == "trending" and row["user_key"] not in slates
            continue
        scored += 1
        model_part = _model_part(realtime.items)
        from_batch = [
            Recommendation(tokens[i], model.name(tokens[i]), s, "model", reason_for(model, b))
            for i, s, b in zip(picks.ids, picks.scores, picks.because, strict=True)
        ]
        assert_same(from_batch, model_part)
        slate = slates[row["user_key"]]
        from_slate = [
            Recommendation(tokens[i], model.name(tokens[i]), s, "model", reason_for(model, b))
            for i, s, b in zip(slate.ids, slate.scores, slate.because, strict=True)
        ]
        assert_same(from_slate, model_part)
        assert len(realtime.items) == min(k, len(realtime.items)) and len(model_part) <= k
    return scored


@pytest.mark.parametrize("k", KS)
def test_synthetic_users_agree(bundles_dir: Path, k: int) -> None:
    model = ModelHolder(bundles_dir).current
    assert check_paths_agree(model, list(USERS.values()), k) == 2


@pytest.mark.parametrize("k", KS)
def test_synthetic_users_agree_with_a_ranker(tmp_path: Path, k: int) -> None:
    model = ServingModel.from_bundle(load_bundle(publish(tmp_path, worst_first_ranker())))
    assert model.ranker is not None
    assert check_paths_agree(model, list(USERS.values()), k) == 2


@pytest.mark.slow
def test_every_tiny_world_user_agrees_on_every_path(pipeline, demo_mode, tmp_path: Path) -> None:
    """The trained tiny-world bundle: request path, batch, and the served precomputed slate."""
    from core.settings import Settings
    from data.accounts import default_accounts_url, open_accounts
    from data.pii import pseudonym_key

    ws, _ = pipeline
    users = pq.read_table(ws.features / "user_features.parquet")
    holder = ModelHolder(Settings(workspace=ws.root).bundles_path)
    model = holder.current
    rows = list(rows_from_table(users))
    for k in KS:
        assert check_paths_agree(model, rows, k) > 10

    slate_path = tmp_path / "slates.sqlite"
    assert precompute(model, users, open_slate_store(str(slate_path), create=True)) > 10
    store = open_online_store(ws.online / "users.sqlite")
    slates = open_slate_store(str(slate_path))
    key = pseudonym_key()
    realtime, served = Recommender(holder, store, key), Recommender(holder, store, key, slates)
    try:
        ids = sorted(open_accounts(default_accounts_url(ws)).user_ids())
        sources = set()
        for user_id in ids:
            for k in KS:
                want, got = realtime.recommend(user_id, k), served.recommend(user_id, k)
                sources.add(got.source)
                assert_same(_model_part(got.items), _model_part(want.items))
                if got.source != "precomputed":  # no slate: the very same computation
                    assert got == want
        assert "precomputed" in sources
    finally:
        store.close()
        slates.close()
