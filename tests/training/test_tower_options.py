"""Two-tower options, each exported and served: an ensemble in one two-tower (``TwoTowerConfig.members``): its served vectors are the
members' unit vectors concatenated (scaled by 1/sqrt(K)), so one ONNX user tower and one FAISS
index answer with the members' mean cosine, checked against the members rebuilt one by one;
history artists read through their tags; the self-attention history encoder."""

from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
import torch
from test_two_tower_recommender import CONFIG as CONFIG_ONE
from test_two_tower_recommender import block_world

from core.workspace import Workspace
from index.bundle import load_bundle
from index.faiss_index import ArtistIndex
from models.two_tower import TwoTower, TwoTowerConfig
from training.export import export_bundle
from training.train_config import TrainConfig, default_model
from training.two_tower_recommender import TwoTowerRecommender

K, WIDTH = 2, 8  # members, each member's vector size

ENSEMBLE = TrainConfig(
    model=replace(default_model(), history_len=8, dim=K * WIDTH, embed_dim=K * WIDTH, members=K),
    epochs=40,
    batch_size=32,
    lr=1e-2,
    temperature=0.1,
    accelerator="cpu",
)


def member(model: TwoTower, i: int) -> TwoTower:
    """Member ``i`` of an ensemble as a plain one-member two-tower (its block of every table)."""
    cfg = replace(model.config, dim=WIDTH, embed_dim=WIDTH, members=1)
    state = model.state_dict()
    sliced = {
        k: v[:, i * WIDTH : (i + 1) * WIDTH] if k.endswith("embedding.weight") else v
        for k, v in state.items()
    }
    one = TwoTower(cfg, state["artist_tower.tag_table"], state["artist_tower.popularity"])
    one.load_state_dict(sliced, strict=True)
    return one.eval()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    inter, held = block_world()
    tags = {a: [f"g{int(a[1:]) // 6}", "all"] for a in inter.artist_ids}  # group tag + shared
    tmp = tmp_path_factory.mktemp("ensemble")
    rec = TwoTowerRecommender(ENSEMBLE, tags).fit(inter)
    rec.save(tmp / "run")
    return rec, inter, held, tmp


@pytest.mark.slow
def test_onnx_and_faiss_serve_the_members_mean_score(fitted):
    rec, inter, _, tmp = fitted
    bundle = load_bundle(export_bundle(Workspace(tmp / "ws"), tmp / "run"))
    rows = np.arange(inter.shape[0])
    history = rec._history[rows]  # (U, L)
    session = ort.InferenceSession(str(bundle.file("user_tower.onnx")))
    users = session.run(
        ["user_vec"],
        {
            "history": history,
            "segments": np.zeros((len(rows), 0), np.int64),
            "dense": np.zeros((len(rows), 0), np.float32),
        },
    )[0]  # (U, K W)
    index = ArtistIndex.load(bundle.file("artists.faiss"))
    ids, scores = index.search(users, inter.shape[1])  # every artist, best first

    want = np.zeros((len(rows), rec.model.config.n_artists), np.float32)  # (U, A) vocab cols
    with torch.no_grad():
        for i in range(K):
            one = member(rec.model, i)
            u = one.user_tower(
                torch.from_numpy(history),
                torch.zeros((len(rows), 0), dtype=torch.long),
                torch.zeros((len(rows), 0)),
            ).numpy()  # (U, W)
            a = one.artist_tower.all_vectors().numpy()  # (A, W)
            np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, atol=1e-5)
            want += u @ a.T / K
    np.testing.assert_allclose(scores, np.take_along_axis(want, ids, 1), atol=1e-4)
    assert sorted(ids[0].tolist()) == list(range(2, rec.model.config.n_artists))


@pytest.mark.slow
def test_members_differ_and_the_ensemble_finds_the_held_out_artist(fitted):
    rec, inter, held, _ = fitted
    a0 = member(rec.model, 0).artist_tower.all_vectors()
    a1 = member(rec.model, 1).artist_tower.all_vectors()
    assert not torch.allclose(a0, a1, atol=1e-2), "the members must be two models, not copies"
    idx, _ = rec.recommend(np.arange(inter.shape[0]), 1)
    assert (idx[:, 0] == held).mean() > 0.9


def test_members_need_a_blockwise_model():
    base = replace(default_model(), dim=16, embed_dim=16)
    with pytest.raises(ValueError, match="divisible"):
        replace(base, members=3)
    with pytest.raises(ValueError, match="pooling='mean'"):
        replace(base, members=2, pooling="attention")
    with pytest.raises(ValueError, match="members must be"):
        TwoTowerConfig(n_artists=4, members=0)


@pytest.mark.slow
def test_history_tags_export_with_parity_and_learn(tmp_path):
    """History artists read through their tags too: the ONNX graph (the explicit per-item
    path) matches the torch tower (the embedding-bag path), and the block world is learnt."""
    inter, held = block_world()
    tags = {a: [f"g{int(a[1:]) // 6}", "all"] for a in inter.artist_ids}
    cfg = replace(ENSEMBLE, model=replace(ENSEMBLE.model, history_tags=True))
    rec = TwoTowerRecommender(cfg, tags).fit(inter)
    assert "user_tower.tag_table" in rec.model.state_dict()
    idx, _ = rec.recommend(np.arange(inter.shape[0]), 1)
    assert (idx[:, 0] == held).mean() > 0.9
    rec.save(tmp_path / "run")
    bundle = load_bundle(export_bundle(Workspace(tmp_path / "ws"), tmp_path / "run"))
    assert bundle.manifest["onnx_parity_max_abs_diff"] < 1e-4


@pytest.mark.slow
def test_self_attention_encoder_exports_with_parity_and_learns(tmp_path):
    inter, held = block_world()
    model = replace(CONFIG_ONE.model, pooling="self-attention")
    rec = TwoTowerRecommender(replace(CONFIG_ONE, model=model)).fit(inter)
    idx, _ = rec.recommend(np.arange(inter.shape[0]), 1)
    assert (idx[:, 0] == held).mean() > 0.9
    assert float(rec.model.user_tower.attn_out.weight.abs().sum()) > 0  # it was trained
    rec.save(tmp_path / "run")
    bundle = load_bundle(export_bundle(Workspace(tmp_path / "ws"), tmp_path / "run"))
    assert bundle.manifest["onnx_parity_max_abs_diff"] < 1e-4
