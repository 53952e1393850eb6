"""Each baseline's own known answer, persistence round trips, and the HetRec reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from evaluation.registry import BASELINES, make_recommender
from models.base import Interactions
from models.ease import EASEConfig, EASERecommender
from models.itemknn import ItemKNNConfig, ItemKNNRecommender, keep_top_per_row
from models.popular import PopularRecommender
from models.topk import top_k
from models.trending import TrendingConfig, TrendingRecommender


def _world(dense, meta=None) -> Interactions:
    dense = np.asarray(dense, np.float32)
    return Interactions(
        sp.csr_matrix(dense), np.arange(len(dense)), np.arange(dense.shape[1]), user_meta=meta
    )


def test_popular_ranks_by_distinct_listeners_not_play_counts():
    # artist 2 has most plays (one heavy user), artist 1 most listeners, then 0
    world = _world([[1, 1, 0, 0], [1, 1, 0, 0], [0, 1, 500, 0], [0, 0, 0, 0]])
    idx, scores = PopularRecommender().fit(world).recommend(np.array([3]), k=4)
    assert idx[0].tolist() == [1, 0, 2, 3]
    assert scores[0].tolist() == [3, 2, 1, 0]


def test_trending_uses_segment_and_falls_back_to_global():
    dense = [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0], [0, 0, 0]]
    meta = {"country": np.array(["DE", "DE", "FR", "FR", "FR", "XX"], dtype=object)}
    model = TrendingRecommender(TrendingConfig(min_users=2)).fit(_world(dense, meta))
    idx, _ = model.recommend(np.arange(6), k=1, exclude_seen=False)
    assert idx[:, 0].tolist() == [0, 0, 1, 1, 1, 1]  # XX is too small: global favours 1
    assert model.segment_of("DE") == 0 and model.segment_of("nowhere") == -1


def test_itemknn_is_plain_cosine():
    world = _world([[1, 1, 0], [1, 0, 1], [1, 1, 1]])
    model = ItemKNNRecommender().fit(world)
    x = world.matrix.toarray()
    cos = (x.T @ x) / np.sqrt(np.outer(x.sum(0), x.sum(0)))
    np.fill_diagonal(cos, 0)
    np.testing.assert_allclose(model.similarity.toarray(), cos, rtol=1e-6)


def test_itemknn_neighbours_and_shrink():
    world = _world([[1, 1, 0, 0], [1, 0, 1, 1], [1, 1, 1, 0], [0, 1, 0, 1]])
    x = world.matrix.toarray()
    co = x.T @ x
    norms = np.sqrt(x.sum(0))
    shrunk = co / (np.outer(norms, norms) + 2.0)
    np.fill_diagonal(shrunk, 0)
    model = ItemKNNRecommender(ItemKNNConfig(shrink=2.0, neighbours=2)).fit(world)
    sim = model.similarity.toarray()
    for i in range(4):  # each artist keeps its two most similar (ties: the lower column)
        order = sorted(range(4), key=lambda j: (-shrunk[i, j], j))[:2]
        expect = np.zeros(4)
        expect[order] = shrunk[i, order]
        np.testing.assert_allclose(sim[i], expect, rtol=1e-6)
    assert (model.similarity.getnnz(axis=1) <= 2).all()
    with pytest.raises(ValueError, match="neighbours"):
        ItemKNNConfig(neighbours=0)


def test_keep_top_per_row_keeps_short_rows_and_column_order():
    m = sp.csr_matrix(np.array([[0.5, 0.0, 0.9, 0.1], [0.0, 0.3, 0.0, 0.0]], np.float32))
    out = keep_top_per_row(m, 2)
    np.testing.assert_allclose(out.toarray(), [[0.5, 0, 0.9, 0], [0, 0.3, 0, 0]])
    assert out.indices.tolist() == [0, 2, 1] and out.indptr.tolist() == [0, 2, 3]


def test_make_recommender_lays_params_over_the_defaults():
    model = make_recommender("als", {"factors": 8, "alpha": 2.5})
    assert (model.cfg.factors, model.cfg.alpha, model.cfg.regularization) == (8, 2.5, 0.1)
    assert make_recommender("ease", {"l2": 7.0}).cfg.l2 == 7.0
    with pytest.raises(ValueError, match="no config field"):
        make_recommender("ease", {"lambda": 7.0})


def test_ease_matches_the_closed_form_and_skips_empty_artists():
    rng = np.random.default_rng(0)
    dense = (rng.random((30, 8)) < 0.4).astype(np.float32)
    dense[:, 5] = 0  # an artist nobody has
    model = EASERecommender(EASEConfig(l2=3.0)).fit(_world(dense))
    g = dense.T @ dense + 3.0 * np.eye(8)
    p = np.linalg.inv(g)
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0)
    np.testing.assert_allclose(model.score(np.arange(30)), dense @ b, atol=1e-4)


def test_top_k_ties_break_by_index_and_excluded_never_returned():
    scores = np.array([[1.0, 2.0, 2.0, 0.5]], np.float32)
    idx, top = top_k(scores.copy(), 3, sp.csr_matrix(np.array([[0, 1, 0, 0]])))
    assert idx.tolist() == [[2, 0, 3]] and top.tolist() == [[2.0, 1.0, 0.5]]


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_state_round_trip_gives_identical_recommendations(name):
    rng = np.random.default_rng(2)
    dense = (rng.random((12, 9)) < 0.4).astype(np.float32)
    meta = {"country": np.array(["DE"] * 6 + ["FR"] * 6, dtype=object)}
    world = _world(dense, meta)
    model = make_recommender(name).fit(world)
    clone = type(model)(model.cfg).load_state(model.state(), world.binary())
    a, b = model.recommend(np.arange(12), 5), clone.recommend(np.arange(12), 5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1])


@pytest.mark.hetrec
@pytest.mark.slow
def test_hetrec_reference_numbers(hetrec_path):  # the fixture skips when the data is absent
    from benchmarks.hetrec import REFERENCE, hetrec_table

    rows = hetrec_table(models=("popular", "itemknn", "als"))
    for name, metrics in rows.items():
        assert abs(metrics["recall@20"] - REFERENCE[name]) <= 0.01, (name, metrics)


def test_the_baselines_and_their_registry_never_import_torch():
    """Regression guard: ``models/base.py`` once imported torch through ``models/topk.py``, so
    fitting EASE or ALS paid for torch."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, models.base, models.topk, models.ease, models.als, models.itemknn, "
        "models.popular, models.trending, models.random_rec, evaluation.registry; "
        "print('torch' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
