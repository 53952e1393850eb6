import math
from dataclasses import replace

import pytest
import torch

from models.losses import InBatchSoftmax, in_batch_softmax_loss
from models.two_tower import TwoTower, TwoTowerConfig


def _model(pooling: str = "attention", **kw) -> TwoTower:
    torch.manual_seed(0)
    cfg = TwoTowerConfig(
        n_artists=20,
        n_tags=6,
        segment_cardinalities=(4, 3),
        n_dense=2,
        history_len=5,
        tags_per_artist=3,
        dim=8,
        embed_dim=12,
        hidden=16,
        pooling=pooling,
        **kw,
    )
    tags = torch.randint(0, 6, (20, 3))
    return TwoTower(cfg, tags, torch.rand(20)).eval()


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_towers_shapes_and_unit_norm(pooling):
    m = _model(pooling)
    history = torch.tensor([[3, 4, 5, 0, 0], [0, 0, 0, 0, 0], [7, 8, 9, 10, 11]])
    segments = torch.tensor([[1, 2], [0, 0], [3, 1]])
    dense = torch.randn(3, 2)
    u = m.user_tower(history, segments, dense)
    a = m.artist_tower(torch.tensor([2, 5, 19, 7]))
    assert u.shape == (3, 8) and a.shape == (4, 8)
    assert torch.isfinite(u).all(), "an empty history must not produce NaN"
    torch.testing.assert_close(u.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(a.norm(dim=1), torch.ones(4))
    assert m.artist_tower.all_vectors().shape == (20, 8)


def test_history_matters_and_batch_rows_are_independent():
    m = _model()
    seg, dense = torch.tensor([[1, 2], [1, 2]]), torch.zeros(2, 2)
    both = m.user_tower(torch.tensor([[3, 4, 0, 0, 0], [3, 9, 0, 0, 0]]), seg, dense)
    alone = m.user_tower(torch.tensor([[3, 4, 0, 0, 0]]), seg[:1], dense[:1])
    torch.testing.assert_close(both[:1], alone)
    assert not torch.allclose(both[0], both[1]), "the history must matter"


def test_history_embedding_is_shared_with_the_artist_tower():
    m = _model()
    assert m.user_tower.artist_embedding is m.artist_tower.artist_embedding


def test_item_dropout_only_in_training():
    m = _model(item_dropout=0.9)
    h, s, d = torch.tensor([[3, 4, 5, 6, 7]]), torch.tensor([[1, 1]]), torch.zeros(1, 2)
    torch.testing.assert_close(m.user_tower(h, s, d), m.user_tower(h, s, d))
    m.train()
    torch.manual_seed(1)
    outs = {
        tuple(m.user_tower(h, s, d).detach().round(decimals=4).flatten().tolist()) for _ in range(8)
    }
    assert len(outs) > 1


def test_bad_pooling_is_a_named_error():
    with pytest.raises(ValueError, match="pooling"):
        _model(pooling="max")


# --- loss ------------------------------------------------------------------------------------


def test_in_batch_softmax_matches_hand_computation():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    a = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # row 0 logits: [1, 0.6]; row 1: [0, 0.8]; temperature 1
    want = 0.5 * (
        -math.log(math.exp(1) / (math.exp(1) + math.exp(0.6)))
        - math.log(math.exp(0.8) / (math.exp(0) + math.exp(0.8)))
    )
    got = in_batch_softmax_loss(u, a, torch.tensor([5, 6]), None, 1.0)
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_log_q_correction_shifts_probabilities_as_by_hand():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    q = torch.tensor([0.5, 0.01])  # artist 0 is popular: sampled 50x as often
    log_q = q.log()
    # row 0: logits [1 - ln .5, 0 - ln .01]; positive is column 0
    l0 = 1 - math.log(0.5)
    l1 = 0 - math.log(0.01)
    p0 = math.exp(l0) / (math.exp(l0) + math.exp(l1))
    # row 1: logits [0 - ln .5, 1 - ln .01]; positive is column 1
    m0, m1 = -math.log(0.5), 1 - math.log(0.01)
    p1 = math.exp(m1) / (math.exp(m0) + math.exp(m1))
    got = in_batch_softmax_loss(u, a, torch.tensor([2, 3]), log_q, 1.0)
    assert got.item() == pytest.approx(-(math.log(p0) + math.log(p1)) / 2, rel=1e-6)
    plain = in_batch_softmax_loss(u, a, torch.tensor([2, 3]), None, 1.0)
    assert got.item() != pytest.approx(plain.item())


def test_duplicate_positive_is_not_a_negative_for_itself():
    u = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    ids = torch.tensor([7, 7, 8])  # rows 0 and 1 share their positive
    got = in_batch_softmax_loss(u, a, ids, None, 1.0)
    # rows 0/1: only column 2 (logit 0) competes with the positive (logit 1); row 2: logits
    # [0, 0, 1] all valid because artist 7 is a genuine negative for row 2
    r01 = -math.log(math.e / (math.e + 1))
    r2 = -math.log(math.e / (math.e + 2))
    assert got.item() == pytest.approx((2 * r01 + r2) / 3, rel=1e-6)


def test_weights_and_temperature():
    u = torch.nn.functional.normalize(torch.randn(4, 3), dim=1)
    a = torch.nn.functional.normalize(torch.randn(4, 3), dim=1)
    ids = torch.arange(4)
    per_row = torch.nn.functional.cross_entropy(u @ a.T / 0.1, ids, reduction="none")
    w = torch.tensor([1.0, 0.0, 2.0, 1.0])
    got = in_batch_softmax_loss(u, a, ids, None, 0.1, w)
    assert got.item() == pytest.approx(((per_row * w).sum() / w.sum()).item(), rel=1e-5)
    loss = InBatchSoftmax(0.1, learnable=True)
    assert loss.temperature.item() == pytest.approx(0.1)
    loss(u, a, ids).backward()
    assert loss.log_temperature.grad is not None
    with pytest.raises(ValueError, match="temperature"):
        InBatchSoftmax(0.0)


def test_uniform_negatives_join_the_softmax_and_a_redrawn_positive_is_masked():
    u = torch.tensor([[1.0, 0.0]])
    a = torch.tensor([[1.0, 0.0]])
    extra = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # second one is the positive drawn again
    got = in_batch_softmax_loss(
        u, a, torch.tensor([3]), None, 1.0, extra_vecs=extra, extra_ids=torch.tensor([4, 3])
    )
    assert got.item() == pytest.approx(-math.log(math.e / (math.e + 1)), rel=1e-6)


def test_follows_start_silent_then_change_the_user_and_are_required():
    """The gate starts at zero (the tower begins as the history alone); once it is not zero a
    user's follows move their vector; a follows model without the input is a named error."""
    cfg = TwoTowerConfig(
        n_artists=20,
        segment_cardinalities=(4, 3),
        n_dense=2,
        history_len=5,
        dim=12,
        embed_dim=12,
        pooling="mean",
        user_mlp=False,
        artist_mlp=False,
    )
    tags = torch.randint(0, 2, (20, 8))
    plain = TwoTower(cfg, tags, torch.rand(20)).eval()
    follows = TwoTower(replace(cfg, follows_len=3), tags, torch.rand(20)).eval()
    follows.load_state_dict(plain.state_dict() | {"user_tower.follows_gate": torch.zeros(12)})
    h = torch.tensor([[3, 4, 0, 0, 0], [5, 0, 0, 0, 0]])
    seg, dense = torch.zeros((2, 2), dtype=torch.long), torch.rand(2, 2)
    f = torch.tensor([[7, 8, 0], [0, 0, 0]])
    want = plain.user_tower(h, seg, dense)
    torch.testing.assert_close(follows.user_tower(h, seg, dense, f), want)
    with torch.no_grad():
        follows.user_tower.follows_gate.fill_(1.0)
    got = follows.user_tower(h, seg, dense, f)
    assert not torch.allclose(got[0], want[0])  # follows 7, 8 moved the first user
    torch.testing.assert_close(got[1], want[1])  # the second follows nobody
    with pytest.raises(ValueError, match="follows input"):
        follows.user_tower(h, seg, dense)
