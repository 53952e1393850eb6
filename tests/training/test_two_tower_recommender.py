from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from models.base import Interactions, ModelFitError, Recommender
from models.losses import multinomial_softmax_loss
from models.two_tower import TwoTowerConfig
from training.two_tower_multinomial import UserBatches
from training.two_tower_recommender import TwoTowerRecConfig, TwoTowerRecommender

GROUPS, USERS, ARTISTS = 3, 8, 6  # per group


def block_world() -> tuple[Interactions, np.ndarray]:
    """Each user has every artist of their group but one (the held-out artist)."""
    rows, cols, held = [], [], []
    for g in range(GROUPS):
        for i in range(USERS):
            u = g * USERS + i
            out = g * ARTISTS + i % ARTISTS
            held.append(out)
            for a in range(g * ARTISTS, (g + 1) * ARTISTS):
                if a != out:
                    rows.append(u)
                    cols.append(a)
    m = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(GROUPS * USERS, GROUPS * ARTISTS)
    )
    users = np.array([f"u{i}" for i in range(m.shape[0])])
    artists = np.array([f"a{i}" for i in range(m.shape[1])])
    return Interactions(m, users, artists), np.array(held)


CONFIG = TwoTowerRecConfig(
    model=TwoTowerConfig(
        n_artists=2,
        history_len=8,
        pooling="mean",
        item_dropout=0.3,
        dim=16,
        embed_dim=16,
        hidden=32,
    ),
    epochs=60,
    batch_size=32,
    lr=1e-2,
    temperature=0.1,
    objective="pairs",
)


@pytest.fixture(scope="module")
def fitted():
    inter, held = block_world()
    return TwoTowerRecommender(CONFIG).fit(inter), inter, held


@pytest.mark.slow
def test_held_out_artist_ranks_first(fitted):
    rec, inter, held = fitted
    assert isinstance(rec, Recommender)
    ids, scores = rec.recommend(np.arange(inter.shape[0]), k=3)
    assert ids.shape == scores.shape == (inter.shape[0], 3)
    assert (ids[:, 0] == held).mean() == 1.0, (ids[:, 0], held)
    assert (np.diff(scores, axis=1) <= 0).all()


@pytest.mark.slow
def test_seen_artists_are_excluded_and_short_lists_padded(fitted):
    rec, inter, _ = fitted
    ids, scores = rec.recommend(np.arange(inter.shape[0]), k=inter.shape[1])
    for u in range(inter.shape[0]):
        seen = set(inter.matrix[u].indices)
        got = [a for a in ids[u] if a >= 0]
        assert not seen & set(got)
        assert len(got) == inter.shape[1] - len(seen)
    assert (ids[:, -1] == -1).all() and np.isneginf(scores[:, -1]).all()
    again, _ = rec.recommend(np.arange(inter.shape[0]), k=inter.shape[1])
    np.testing.assert_array_equal(ids, again)


def test_empty_matrix_and_unfitted_are_named_errors():
    empty = Interactions(
        sp.csr_matrix((2, 3), dtype=np.float32), np.array(["a", "b"]), np.array(["x", "y", "z"])
    )
    with pytest.raises(ModelFitError, match="empty"):
        TwoTowerRecommender(CONFIG).fit(empty)
    with pytest.raises(ModelFitError, match="before fit"):
        TwoTowerRecommender(CONFIG).recommend(np.array([0]), k=2)


def test_positive_is_dropped_from_its_own_history():
    """Guards the copy-the-input bug: an example's history must not contain its positive."""
    inter, _ = block_world()
    from training.two_tower_recommender import _PairBatches

    m = inter.matrix.tocsr()
    pairs = _PairBatches(m, None, 8, np.zeros((m.shape[0], 0), np.int64), "binary", 0)
    batch = pairs.batch(np.arange(len(pairs)))
    hist, pos = batch["history"].numpy(), batch["artist"].numpy()
    assert not (hist == pos[:, None]).any()
    assert ((hist > 0).sum(1) == ARTISTS - 2).all()  # the user's other artists, all of them


MULTI = replace(CONFIG, objective="multinomial", epochs=80, batch_size=8, item_bias=True)


@pytest.mark.slow
def test_multinomial_objective_ranks_held_out_artist_first():
    inter, held = block_world()
    rec = TwoTowerRecommender(MULTI).fit(inter)
    ids, scores = rec.recommend(np.arange(inter.shape[0]), k=2)
    assert (ids[:, 0] == held).mean() == 1.0, (ids[:, 0], held)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_user_batches_split_each_bag_into_history_and_targets():
    """Targets and history partition the user's bag; 20-50 % (at least one) are targets."""
    inter, _ = block_world()
    m = inter.matrix.tocsr()
    batches = UserBatches(m, None, 8, np.zeros((m.shape[0], 0), np.int64), (0.2, 0.5), 0)
    batch = batches.batch(np.arange(len(batches)))
    targets, seen, hist = batch["targets"].numpy(), batch["seen"].numpy(), batch["history"].numpy()
    assert targets.shape == (m.shape[0], m.shape[1] + 2)
    assert not (targets & seen).any()
    bag = np.zeros_like(targets)
    bag[:, 2:] = m.toarray() > 0
    np.testing.assert_array_equal(targets | seen, bag)
    n_t = targets.sum(1)
    assert ((n_t >= 1) & (n_t <= np.rint(0.5 * bag.sum(1)))).all()
    for u in range(m.shape[0]):
        assert set(hist[u][hist[u] > 0]) == set(np.flatnonzero(seen[u]))


def test_unknown_user_row_is_out_of_range():
    inter, _ = block_world()
    rec = TwoTowerRecommender(replace(MULTI, epochs=1)).fit(inter)
    with pytest.raises(ValueError, match="out of range"):
        rec.recommend(np.array([inter.shape[0]]), k=3)
    with pytest.raises(ValueError, match="out of range"):
        rec.recommend(np.array([-1]), k=3)


def test_multinomial_loss_is_zero_only_for_a_certain_model():
    """A user whose vector points at its one target with a tiny temperature pays ~0 loss;
    excluded (history) artists never take probability mass from the target."""
    eye = torch.eye(4)  # (A, d): 4 orthogonal artists
    targets = torch.tensor([[False, True, False, False]])  # (1, A)
    sure = multinomial_softmax_loss(eye[1:2], eye, targets, 0.01)
    assert sure.item() < 1e-6
    hist = torch.tensor([[False, False, True, False]])
    mixed = eye[1:2] + eye[2:3]  # (1, d): as close to a history artist as to the target
    with_hist = multinomial_softmax_loss(mixed, eye, targets, 0.01)
    without = multinomial_softmax_loss(mixed, eye, targets, 0.01, exclude=hist)
    assert with_hist.item() > 0.5 and without.item() < 1e-6
