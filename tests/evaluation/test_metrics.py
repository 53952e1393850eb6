"""Metric values against hand-computed examples; the protocols' determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from evaluation.metrics import catalogue_metrics, hits_matrix, per_user_metrics, ranking_metrics
from evaluation.protocols import random_holdout
from evaluation.segments import segment_metrics
from evaluation.stats import bootstrap_ci
from models.base import Interactions


def test_hand_computed_values():
    topk = np.array([[3, 1, 7, -1], [0, 2, 4, 6]])
    targets = [np.array([1, 9]), np.array([6])]
    m = ranking_metrics(topk, targets, ks=(2, 4))
    # user 0: hit at rank 2 of 2 targets; user 1: hit at rank 4 of 1 target
    assert m["recall@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["recall@4"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["hitrate@2"] == pytest.approx(0.5)
    ndcg0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    ndcg1 = (1 / math.log2(5)) / 1
    assert m["ndcg@4"] == pytest.approx((ndcg0 + ndcg1) / 2)
    assert m["mrr"] == pytest.approx((1 / 2 + 1 / 4) / 2)


def test_unknown_targets_count_but_never_hit_and_padding_never_hits():
    topk = np.array([[-1, 5]])
    m = ranking_metrics(topk, [np.array([-2, -1, 5])], ks=(2,))
    assert m["recall@2"] == pytest.approx(1 / 3)


def test_users_without_targets_are_skipped_and_all_empty_is_an_error():
    per = per_user_metrics(np.array([[0], [1]]), [np.array([0]), np.array([], np.int64)], ks=(1,))
    assert per["recall@1"][0] == 1.0 and np.isnan(per["recall@1"][1])
    with pytest.raises(ValueError, match="no user has a target"):
        ranking_metrics(np.array([[0]]), [np.array([], np.int64)])


def test_hits_matrix_matches_a_python_loop():
    rng = np.random.default_rng(3)
    topk = np.stack([rng.permutation(50)[:10] for _ in range(200)])
    targets = [rng.choice(50, size=rng.integers(0, 6), replace=False) for _ in range(200)]
    loop = np.array(
        [[a in set(t.tolist()) for a in row] for row, t in zip(topk, targets, strict=True)]
    )
    np.testing.assert_array_equal(hits_matrix(topk, targets), loop)


def test_catalogue_metrics():
    topk = np.array([[0, 1], [0, 2]])
    popularity = np.array([4.0, 2.0, 1.0, 0.0])
    m = catalogue_metrics(topk, popularity, n_users=4, ks=(1, 2))
    assert m["coverage@1"] == pytest.approx(1 / 4)
    assert m["coverage@2"] == pytest.approx(3 / 4)
    assert m["arp@1"] == pytest.approx(1.0)
    assert m["novelty@2"] == pytest.approx((0 + 0 + 1 + 2) / 4)


def test_bootstrap_interval_contains_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = rng.random((20, 1))
    big = rng.random((2000, 1))
    m_s, lo_s, hi_s = bootstrap_ci(small, n_boot=300)
    m_b, lo_b, hi_b = bootstrap_ci(big, n_boot=300)
    assert lo_s[0] <= m_s[0] <= hi_s[0]
    assert (hi_b - lo_b)[0] < (hi_s - lo_s)[0]
    seg = segment_metrics(
        {"recall@20": np.array([1.0, 0.0, np.nan, 1.0])},
        {"gender": np.array(["f", "f", "m", None], dtype=object)},
        n_boot=20,
    )
    assert seg["gender"]["f"]["n_users"] == 2 and seg["gender"]["f"]["recall@20"][0] == 0.5
    assert seg["gender"]["unknown"]["n_users"] == 1 and "m" not in seg["gender"]


def _world(n_users: int = 30, n_artists: int = 40) -> Interactions:
    rng = np.random.default_rng(1)
    dense = (rng.random((n_users, n_artists)) < 0.3).astype(np.float32)
    dense[0] = 0
    dense[0, 3] = 1  # a user with a single artist keeps it in train
    return Interactions(sp.csr_matrix(dense), np.arange(n_users), np.arange(n_artists))


def test_random_holdout_is_seeded_disjoint_and_80_20():
    world = _world()
    a, b, c = (random_holdout(world, 0.2, seed=s) for s in (7, 7, 8))
    assert (a.train.matrix != b.train.matrix).nnz == 0
    assert all(np.array_equal(x, y) for x, y in zip(a.test, b.test, strict=True))
    assert (a.train.matrix != c.train.matrix).nnz > 0
    assert len(a.test[0]) == 0 and a.train.matrix[0].nnz == 1
    for u in range(1, world.shape[0]):
        n = world.matrix[u].nnz
        assert len(a.test[u]) == math.floor(0.2 * n + 0.5)
        assert not set(a.test[u]) & set(a.train.matrix[u].indices)
        assert set(a.test[u]) | set(a.train.matrix[u].indices) == set(world.matrix[u].indices)
