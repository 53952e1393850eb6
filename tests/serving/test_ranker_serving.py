"""The ranking stage in the service (serving.ranker): loaded from the bundle, refused when its
feature spec is not the server's, re-ordering the retrieval candidates — and retrieval order
when the bundle has no ranker."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from data.features.ranker import RANKER_FEATURES
from index import RANKER_FILE, CorruptBundleError, load_bundle, publish_bundle
from models.ranker import RankerConfig, RankingSet, fit_ranker
from serving.model import ServingModel
from serving.recommender import recommend_from_row
from tests.fixtures.synthetic_bundle import bundle_files
from tests.serving.conftest import SPEC, TRENDING, USERS

RANK = RANKER_FEATURES.index("retrieval_log_rank")


def worst_first_ranker(names=RANKER_FEATURES) -> bytes:
    """A real booster that learned to prefer the *worse* retrieval rank in every slate (graded
    labels: the worst rank of a slate is the most relevant; the other features are constant in
    its training slates, so it reads the rank alone)."""
    rng = np.random.default_rng(0)
    n_q, per = 400, 10
    col = min(RANK, len(names) - 1)
    x = np.zeros((n_q * per, len(names)), np.float32)
    ranks = rng.permuted(np.tile(np.arange(1, 31), (n_q, 1)), axis=1)[:, :per]  # (Q, per)
    x[:, col] = np.log1p(ranks.ravel())
    y = (
        ranks.argsort(axis=1).argsort(axis=1).ravel().astype(np.float32)
    )  # relevance 0 at the best rank, 9 at the worst
    qid = np.repeat(np.arange(n_q), per)
    half = n_q * per // 2
    ranker, _ = fit_ranker(
        RankingSet(x[:half], y[:half], qid[:half]),
        RankingSet(x[half:], y[half:], qid[half:]),
        names,
        RankerConfig(
            n_rounds=80, early_stopping=80, nthread=1, subsample=1.0, colsample_bytree=1.0
        ),
    )
    return ranker.to_bytes()


def publish(root: Path, ranker: bytes | None, features=RANKER_FEATURES) -> Path:
    files, manifest = bundle_files(SPEC, TRENDING)
    if ranker is not None:
        files = {**files, RANKER_FILE: ranker}
        manifest = {
            **manifest,
            "ranker": {"features": list(features), "candidates": 200, "serving_position": 1},
        }
    return root / publish_bundle(root, files, manifest)


def served(model: ServingModel, user: str, k: int) -> list[str]:
    return [r.artist_id for r in recommend_from_row(model, USERS[user], k).items]


def test_ranker_reorders_the_retrieval_candidates(tmp_path: Path) -> None:
    model = ServingModel.from_bundle(load_bundle(publish(tmp_path, worst_first_ranker())))
    assert model.ranker is not None and model.ranker.candidates == 200
    plain = dataclasses.replace(model, ranker=None)
    retrieval = served(plain, "alice", 24)
    ranked = served(model, "alice", 24)
    n_model = sum(r.source == "model" for r in recommend_from_row(plain, USERS["alice"], 24).items)
    # the same allowed candidates, in the ranker's (worst-retrieval-first) order
    assert sorted(ranked[:n_model]) == sorted(retrieval[:n_model])
    assert ranked[:3] == retrieval[:n_model][::-1][:3]
    top = recommend_from_row(model, USERS["alice"], 5).items
    assert [r.artist_id for r in top] == ranked[:5]
    scores = [r.score for r in top]
    assert scores == sorted(scores, reverse=True)  # the ranker's scores, best first


def test_bundle_without_ranker_serves_retrieval_order(tmp_path: Path) -> None:
    model = ServingModel.from_bundle(load_bundle(publish(tmp_path, None)))
    assert model.ranker is None
    items = [r for r in recommend_from_row(model, USERS["alice"], 24).items if r.source == "model"]
    vec = model.user_vectors([USERS["alice"]])
    ids, scores = model.index.search(vec, model.index.ntotal)
    excluded = set(USERS["alice"]["seen"]) | set(USERS["alice"]["followed"])
    expected = [
        (model.encoder.artist_id(int(i)), float(s))
        for i, s in zip(ids[0], scores[0], strict=True)
        if i > 1 and model.encoder.artist_id(int(i)) not in excluded
    ]
    assert len(items) == len(expected)
    assert [r.artist_id for r in items] == [a for a, _ in expected]
    assert [r.score for r in items] == pytest.approx([s for _, s in expected])


def test_ranker_with_another_feature_spec_is_refused(tmp_path: Path) -> None:
    renamed = ["slot" if n == "position" else n for n in RANKER_FEATURES]
    bundle = load_bundle(publish(tmp_path, worst_first_ranker(), renamed))
    with pytest.raises(CorruptBundleError, match=r"feature spec .* missing \['position'\]"):
        ServingModel.from_bundle(bundle)


def test_ranker_of_another_width_is_refused(tmp_path: Path) -> None:
    narrow = worst_first_ranker(("a", "b"))
    bundle = load_bundle(publish(tmp_path / "b", narrow))
    with pytest.raises(CorruptBundleError, match="expects 2 features"):
        ServingModel.from_bundle(bundle)


def test_tampered_ranker_fails_its_checksum(tmp_path: Path) -> None:
    folder = publish(tmp_path, worst_first_ranker())
    (folder / RANKER_FILE).write_bytes(b"not a booster")
    with pytest.raises(CorruptBundleError, match="checksum"):
        load_bundle(folder)


def test_served_features_equal_the_offline_function(tmp_path: Path) -> None:
    """Serving maps candidates and history by vocab index; the values must be those of
    ``candidate_features`` on artist ids, the function the training slates use."""
    from data.features.ranker import candidate_features

    model = ServingModel.from_bundle(load_bundle(publish(tmp_path, worst_first_ranker())))
    assert model.ranker is not None
    ranker = model.ranker
    row = {**USERS["alice"], "history": [*USERS["alice"]["history"], "never-heard-of"]}
    ids = ["c1a00001", "c0a00010", "c1a00003"]
    idx = np.array([model.encoder.artist_index(a) for a in ids])
    scores = np.array([0.9, 0.4, 0.1], np.float32)
    offline = candidate_features(
        ranker.context, row, ranker.context.rows(ids), scores, np.arange(1, 4), ranker.position
    )
    np.testing.assert_array_equal(ranker.features(row, idx, scores), offline)
    assert offline[:, RANKER_FEATURES.index("tag_share")].any()  # the check reads real values


def test_precomputed_slates_follow_the_ranker_too(tmp_path: Path) -> None:
    """``tastemaker precompute`` must serve what the real-time path would: the re-ranked list."""
    from data.features.online_store import table_from_rows
    from serving.precompute import score_table
    from serving.slates import Slate

    model = ServingModel.from_bundle(load_bundle(publish(tmp_path, worst_first_ranker())))
    rows = [USERS["alice"], USERS["bob"]]
    slates = dict(score_table(model, table_from_rows(rows), k=8))
    for row in rows:
        slate = Slate.from_blob(slates[row["user_key"]])
        ids = [model.encoder.artist_id(i) for i in slate.ids]
        realtime = [r for r in recommend_from_row(model, row, 8).items if r.source == "model"]
        assert ids == [r.artist_id for r in realtime]
        assert list(slate.scores) == pytest.approx([r.score for r in realtime])
        plain = dataclasses.replace(model, ranker=None)
        assert ids != [r.artist_id for r in recommend_from_row(plain, row, 8).items][: len(ids)]


def test_direct_predict_equals_inplace_predict_and_falls_back(tmp_path: Path) -> None:
    """The served predict (XGBoost's dense predict called without the wrapper) gives the very
    scores of ``inplace_predict``, for any row count and a non-contiguous float64 input; when
    the internals it calls are missing it falls back to ``inplace_predict``."""
    from serving.ranker import DensePredictor

    model = ServingModel.from_bundle(load_bundle(publish(tmp_path, worst_first_ranker())))
    assert model.ranker is not None
    fast = model.ranker.predict
    assert fast.fast
    rng = np.random.default_rng(1)
    big = rng.normal(size=(300, 2 * len(RANKER_FEATURES)))
    big[:, 2 * RANK] = np.log1p(rng.integers(1, 31, size=300))  # the column the trees read
    for n in (1, 7, 200, 300):
        x = big[:n, ::2]  # float64, strided: converted like inplace_predict would read it
        want = model.ranker.booster.inplace_predict(
            np.ascontiguousarray(x, np.float32), validate_features=False
        )
        got = fast(x)
        assert got.dtype == np.float32 and got.shape == (n,)
        np.testing.assert_array_equal(got, want)
        assert len(np.unique(got)) > 1 or n == 1  # a real, non-constant model
    assert fast(np.zeros((0, len(RANKER_FEATURES)), np.float32)).shape == (0,)

    booster = model.ranker.booster
    broken = DensePredictor(booster, len(RANKER_FEATURES) + 1)  # its probe check fails
    assert not broken.fast
    x = rng.normal(size=(20, len(RANKER_FEATURES))).astype(np.float32)
    np.testing.assert_array_equal(broken(x), booster.inplace_predict(x, validate_features=False))
