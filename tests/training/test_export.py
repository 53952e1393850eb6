import json
from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
from two_tower_world import build_world, eval_users

from core.workspace import Workspace
from data.features.encoding import FeatureEncoder, encode_users
from index.bundle import load_bundle
from index.faiss_index import ArtistIndex
from serving.model import ServingModel
from serving.recommender import recommend_from_row
from training import export as export_mod
from training.export import ExportParityError, export_bundle
from training.inference import load_scorer
from training.train import TrainConfig, train_two_tower
from training.train_config import default_model

QUICK = TrainConfig(
    model=replace(default_model(), history_len=12, dim=8, embed_dim=8, hidden=16),
    epochs=2,
    batch_size=256,
    patience=5,
    accelerator="cpu",
    max_train_examples=None,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    ws = build_world(Workspace(tmp_path_factory.mktemp("ws")))
    return ws, train_two_tower(ws, QUICK)


@pytest.mark.slow
def test_bundle_loads_with_onnxruntime_and_faiss_and_agrees_with_torch(run):
    ws, run_dir = run
    folder = export_bundle(ws, run_dir)
    bundle = load_bundle(ws.bundles)  # follows CURRENT and verifies every checksum
    assert bundle.path == folder
    for name in (
        "user_tower.onnx",
        "artists.faiss",
        "vocab.json",
        "artists.parquet",
        "trending.json",
    ):
        assert bundle.file(name).is_file()
    model = bundle.manifest["model"]
    assert model["history_len"] == 12 and model["dim"] == 8
    assert bundle.manifest["metrics"]["val/recall@20"] >= 0.0

    vocab = json.loads(bundle.file("vocab.json").read_text())
    assert vocab["artists"][:2] == ["<pad>", "<unk>"]
    assert model["segment_fields"] == vocab["segment_fields"]

    users = eval_users(ws)
    scorer = load_scorer(run_dir)
    x = encode_users(users, scorer.run.vocabs, model["history_len"])
    session = ort.InferenceSession(str(bundle.file("user_tower.onnx")))
    got = session.run(
        ["user_vec"], {"history": x.history, "segments": x.segments, "dense": x.dense}
    )[0]
    np.testing.assert_allclose(got, scorer.user_vectors(users), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)

    index = ArtistIndex.load(bundle.file("artists.faiss"))
    ids, _ = index.search(got, 5)
    want = np.argsort(-scorer.score_users(users), axis=1, kind="stable")[:, :5] + 2
    assert (ids[:, 0] == want[:, 0]).mean() > 0.95  # FAISS id = vocab index
    assert (ids >= 2).all()

    trending = json.loads(bundle.file("trending.json").read_text())
    assert len(trending["global"]) == 5 and len(trending["by_segment"]["country=DE"]) == 3


@pytest.mark.slow
def test_parity_failure_is_named_and_publishes_nothing(run, monkeypatch):
    ws, run_dir = run
    before = sorted(p.name for p in ws.bundles.glob("*")) if ws.bundles.exists() else []
    monkeypatch.setattr(export_mod, "PARITY_TOL", 0.0)  # nothing can be within 0
    with pytest.raises(ExportParityError, match="differs from torch"):
        export_bundle(ws, run_dir)
    after = sorted(p.name for p in ws.bundles.glob("*")) if ws.bundles.exists() else []
    assert before == after


def test_export_without_runs_is_a_named_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="tastemaker train"):
        export_bundle(Workspace(tmp_path))


@pytest.mark.slow
def test_followed_artists_input_exports_and_serving_encoder_feeds_it(tmp_path):
    """With ``follows_len`` the ONNX tower takes a fourth input, and the serving row encoder's
    feed gives the vectors the torch scorer gives from the same eval table."""
    ws = build_world(Workspace(tmp_path / "ws"))
    cfg = replace(QUICK, model=replace(QUICK.model, follows_len=3))
    ws.feature_dir.meta.write_text(json.dumps({"config": {"followed_len": 2}}))
    with pytest.raises(ValueError, match="followed_len=2"):  # the examples keep 2 follows
        train_two_tower(ws, cfg)
    ws.feature_dir.meta.unlink()
    run_dir = train_two_tower(ws, cfg)
    bundle = load_bundle(export_bundle(ws, run_dir))
    model = bundle.manifest["model"]
    assert model["follows_len"] == 3 and bundle.manifest["onnx_parity_max_abs_diff"] < 1e-4
    session = ort.InferenceSession(str(bundle.file("user_tower.onnx")))
    assert [i.name for i in session.get_inputs()] == ["history", "segments", "dense", "follows"]

    users = eval_users(ws)
    scorer = load_scorer(run_dir)
    assert (
        float(scorer.run.model.user_tower.follows_gate.detach().abs().sum()) > 0
    )  # it was trained
    vocab = json.loads(bundle.file("vocab.json").read_text())
    feed = FeatureEncoder.from_bundle(vocab, model).encode(users.to_pylist())
    assert (feed["follows"][:, 0] > 1).all() and (feed["follows"][:, 1:] == 0).all()
    got = session.run(["user_vec"], feed)[0]
    np.testing.assert_allclose(got, scorer.user_vectors(users), atol=1e-4)

    # the server loads it and answers from the model with the same feed
    served = ServingModel.from_bundle(bundle)
    np.testing.assert_allclose(
        served.user_vectors(users.to_pylist()), scorer.user_vectors(users), atol=1e-4
    )
    assert recommend_from_row(served, users.to_pylist()[0], 5).source == "model"
