import numpy as np
import pytest
import scipy.sparse as sp

from models.base import Interactions, ModelFitError, Recommender
from models.two_tower import TwoTowerConfig
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
