"""The two-tower on an interactions matrix: the recommender contract's known answer, the
masked-pair batches, the run dir shared with the lake job, and the loss with gathered columns."""

import json
from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from models.base import Interactions, ModelFitError, Recommender
from models.losses import in_batch_softmax_loss
from training.pairs import MaskedPairs, bag_histories, history_follows
from training.train_config import TrainConfig, default_model
from training.two_tower_recommender import TwoTowerRecommender

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


CONFIG = TrainConfig(
    model=replace(default_model(), history_len=8, dim=16, embed_dim=16),
    epochs=40,
    batch_size=32,
    lr=1e-2,
    temperature=0.1,
    accelerator="cpu",
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


@pytest.mark.slow
def test_saved_run_answers_the_same_and_has_no_pickle(fitted, tmp_path):
    rec, inter, _ = fitted
    rec.save(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoint.ckpt",
        "config.json",
        "vocab.json",
    ]
    again = TwoTowerRecommender.load(tmp_path / "run", inter)
    rows = np.arange(inter.shape[0])
    np.testing.assert_array_equal(rec.recommend(rows, 5)[0], again.recommend(rows, 5)[0])


def test_empty_matrix_and_unfitted_are_named_errors():
    empty = Interactions(
        sp.csr_matrix((2, 3), dtype=np.float32), np.array(["a", "b"]), np.array(["x", "y", "z"])
    )
    with pytest.raises(ModelFitError, match="empty"):
        TwoTowerRecommender(CONFIG).fit(empty)
    with pytest.raises(ModelFitError, match="before fit"):
        TwoTowerRecommender(CONFIG).recommend(np.array([0]), k=2)


def test_masked_pairs_never_feed_a_positive_as_its_own_history():
    """Guards the copy-the-input bug: a pair's history must not contain its positive; the two
    halves partition each bag, and with swapping every artist is a positive once an epoch."""
    inter, _ = block_world()
    m = inter.matrix.tocsr()
    segs = np.zeros((m.shape[0], 0), np.int64)
    pairs = MaskedPairs(m, segs, 8, batch_size=10_000, keep=0.5, swap=True, seed=0)
    batch = next(iter(pairs))
    hist, pos = batch["history"].numpy(), batch["artist"].numpy()
    assert len(pos) == m.nnz
    assert not (hist == pos[:, None]).any()
    n_hist = (hist > 0).sum(1)
    assert set(n_hist.tolist()) <= {2, 3}  # 5 artists a user: halves of 2 and 3 (or 3 and 2)
    again = next(iter(pairs))["history"].numpy()
    assert not np.array_equal(np.sort(hist, 1), np.sort(again, 1)), "a fresh split every epoch"


def test_bag_histories_keep_order_and_pad():
    indptr = np.array([0, 3, 3, 5])
    items = np.array([10, 11, 12, 20, 21])
    keep = np.array([True, False, True, True, True])
    key = np.array([2.0, 0.0, 1.0, 5.0, 4.0])
    out = bag_histories(indptr, items, keep, key, 3)
    np.testing.assert_array_equal(out, [[12, 10, 0], [0, 0, 0], [21, 20, 0]])


def test_unknown_user_row_is_out_of_range(fitted):
    rec, inter, _ = fitted
    with pytest.raises(ValueError, match="out of range"):
        rec.recommend(np.array([inter.shape[0]]), k=3)
    with pytest.raises(ValueError, match="out of range"):
        rec.recommend(np.array([-1]), k=3)


def test_loss_with_gathered_columns_is_the_global_batch_loss():
    """Rank r's rows against every rank's columns (targets offset by r B) sum to the loss of
    one big batch: what DDP's gathered negatives must compute."""
    g = torch.Generator().manual_seed(0)
    users = torch.nn.functional.normalize(torch.randn(8, 4, generator=g), dim=-1)  # (W B, d)
    artists = torch.nn.functional.normalize(torch.randn(8, 4, generator=g), dim=-1)  # (W B, d)
    ids = torch.tensor([5, 6, 7, 5, 8, 9, 10, 11])  # artist 5 twice: an accidental hit
    log_q = torch.log(torch.rand(8, generator=g))
    whole = in_batch_softmax_loss(users, artists, ids, log_q, 0.1)
    halves = [
        in_batch_softmax_loss(
            users[r * 4 : (r + 1) * 4], artists, ids, log_q, 0.1, targets=torch.arange(4) + 4 * r
        )
        for r in range(2)
    ]
    torch.testing.assert_close((halves[0] + halves[1]) / 2, whole)
    # the accidental hit is masked: row 0 never competes with column 3 (the same artist)
    logits = users[:1] @ artists.T / 0.1 - log_q
    keep = torch.tensor([True, True, True, False, True, True, True, True])
    expected = -torch.log_softmax(logits[:, keep], dim=1)[0, 0]
    torch.testing.assert_close(
        in_batch_softmax_loss(users[:1], artists, ids, log_q, 0.1, targets=torch.tensor([0])),
        expected,
    )


@pytest.mark.slow
def test_same_seed_same_validation_metrics_twice():
    inter, _ = block_world()
    cfg = replace(CONFIG, epochs=3, val_fraction=0.25)
    first = TwoTowerRecommender(cfg).fit(inter).val_history
    second = TwoTowerRecommender(cfg).fit(inter).val_history
    assert len(first) == 3 and first == second
    other = TwoTowerRecommender(replace(cfg, seed=1)).fit(inter).val_history
    assert other != first, "a different seed must be able to change the numbers"


@pytest.mark.slow
def test_an_interactions_run_exports_a_servable_bundle(fitted, tmp_path):
    from core.workspace import Workspace
    from index.bundle import load_bundle
    from training.export import export_bundle

    rec, inter, _ = fitted
    rec.save(tmp_path / "run")
    bundle = load_bundle(export_bundle(Workspace(tmp_path / "ws"), tmp_path / "run"))
    assert bundle.manifest["onnx_parity_max_abs_diff"] < 1e-4
    trending = json.loads(bundle.file("trending.json").read_text())
    assert len(trending["global"]) == inter.shape[1]


def test_masked_batches_keep_only_follows_in_the_fed_half():
    """A follow of a held-out artist would hand the model its positive: masked batches keep the
    follows that are in the row's history half and zero the rest."""
    m = sp.csr_matrix(np.ones((2, 6), np.float32))
    follows = np.array([[2, 3, 4, 0], [7, 0, 0, 0]])  # vocab indices (artists 0, 1, 2; 5)
    pairs = MaskedPairs(m, np.zeros((2, 0), np.int64), 6, 4, 0.5, True, 0, follows=follows)
    seen = 0
    for batch in pairs:
        f, h = batch["follows"], batch["history"]
        for row_f, row_h in zip(f.tolist(), h.tolist(), strict=True):
            assert all(a == 0 or a in row_h for a in row_f)
            seen += sum(a > 0 for a in row_f)
        assert batch["artist"].tolist() and all(
            a not in row_f for a, row_f in zip(batch["artist"].tolist(), f.tolist(), strict=True)
        )
    assert seen > 0
    torch.testing.assert_close(
        history_follows(torch.tensor([[5, 6, 0]]), torch.tensor([[6, 9, 0, 0]])),
        torch.tensor([[0, 6, 0]]),
    )
