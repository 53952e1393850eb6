"""One contract suite, run against every recommender (implicit's RecommenderBaseTestMixin).

The world: three blocks of 6 users x 6 artists. Every user of a block has all of the block's
artists except the first user of each block, who lacks the block's last artist: that
held-out artist must come first for every collaborative model.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from models.als import ALSConfig, ALSRecommender
from models.base import Interactions, Recommender
from models.ease import EASERecommender
from models.itemknn import ItemKNNRecommender
from models.popular import PopularRecommender
from models.random_rec import RandomRecommender
from models.trending import TrendingRecommender

BLOCKS, PER = 3, 6


def block_world() -> Interactions:
    dense = np.zeros((BLOCKS * PER, BLOCKS * PER), np.float32)
    for b in range(BLOCKS):
        dense[b * PER : (b + 1) * PER, b * PER : (b + 1) * PER] = 1.0
        dense[b * PER, (b + 1) * PER - 1] = 0.0  # the held-out artist of the block's first user
    users = np.array([f"u{i}" for i in range(len(dense))])
    artists = np.array([f"a{i}" for i in range(len(dense))])
    meta = {"country": np.array(["DE"] * 9 + ["FR"] * 9, dtype=object)}
    return Interactions(sp.csr_matrix(dense), users, artists, user_meta=meta)


HELD_OUT = {b * PER: (b + 1) * PER - 1 for b in range(BLOCKS)}  # user row -> artist column


class RecommenderContract:
    collaborative = False

    def make(self) -> Recommender:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    def fitted(self) -> tuple[Recommender, Interactions]:
        world = block_world()
        return self.make().fit(world), world

    def test_answers_protocol(self, fitted):
        model, _ = fitted
        assert isinstance(model, Recommender)
        assert isinstance(model.name, str) and model.name

    def test_shapes_best_first(self, fitted):
        model, world = fitted
        idx, scores = model.recommend(np.arange(world.shape[0]), k=5)
        assert idx.shape == scores.shape == (world.shape[0], 5)
        assert np.all(np.diff(scores, axis=1) <= 1e-6)
        assert ((idx >= 0) & (idx < world.shape[1])).all()

    def test_excludes_seen(self, fitted):
        model, world = fitted
        rows = np.arange(world.shape[0])
        idx, _ = model.recommend(rows, k=10)
        for r in rows:
            seen = set(world.matrix[r].indices)
            assert not seen & set(idx[r][idx[r] >= 0].tolist())

    def test_k_larger_than_catalogue_pads(self, fitted):
        model, world = fitted
        n_artists = world.shape[1]
        idx, scores = model.recommend(np.array([0, 1]), k=n_artists + 4)
        assert idx.shape == (2, n_artists + 4)
        for r in (0, 1):
            valid = idx[r][idx[r] >= 0]
            assert len(valid) == len(set(valid.tolist())) == n_artists - world.matrix[r].nnz
            assert np.isneginf(scores[r][idx[r] < 0]).all()

    def test_without_exclusion_returns_full_lists(self, fitted):
        model, world = fitted
        idx, _ = model.recommend(np.array([1]), k=world.shape[1], exclude_seen=False)
        assert sorted(idx[0].tolist()) == list(range(world.shape[1]))

    def test_unknown_user_row_is_a_clear_error(self, fitted):
        model, world = fitted
        with pytest.raises(ValueError, match="out of range"):
            model.recommend(np.array([world.shape[0]]), k=3)

    def test_deterministic(self, fitted):
        model, world = fitted
        a = model.recommend(np.arange(world.shape[0]), k=4)
        b = model.recommend(np.arange(world.shape[0])[::-1], k=4)
        np.testing.assert_array_equal(a[0], b[0][::-1])

    def test_held_out_artist_ranks_first(self, fitted):
        if not self.collaborative:
            pytest.skip("not a collaborative model")
        model, _ = fitted
        rows = np.array(sorted(HELD_OUT))
        idx, _ = model.recommend(rows, k=1)
        assert idx[:, 0].tolist() == [HELD_OUT[r] for r in rows]


class TestRandom(RecommenderContract):
    def make(self):
        return RandomRecommender()


class TestPopular(RecommenderContract):
    def make(self):
        return PopularRecommender()


class TestTrending(RecommenderContract):
    def make(self):
        from models.trending import TrendingConfig

        return TrendingRecommender(TrendingConfig(min_users=3))


class TestItemKNN(RecommenderContract):
    collaborative = True

    def make(self):
        return ItemKNNRecommender()


class TestEASE(RecommenderContract):
    collaborative = True

    def make(self):
        return EASERecommender()


class TestALS(RecommenderContract):
    collaborative = True

    def make(self):
        return ALSRecommender(ALSConfig(factors=8, iterations=15))


@pytest.mark.slow
class TestTwoTower(RecommenderContract):
    collaborative = True

    def make(self):
        from dataclasses import replace

        from training.train_config import TrainConfig
        from training.two_tower_recommender import TwoTowerRecommender

        cfg = TrainConfig(accelerator="cpu")
        return TwoTowerRecommender(replace(cfg, epochs=60, batch_size=64))
