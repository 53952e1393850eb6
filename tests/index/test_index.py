"""One suite for every index kind: the ``search(vectors, k) -> (ids, scores)`` contract."""

from __future__ import annotations

import numpy as np
import pytest

from index import ArtistIndex, IndexLoadError, IndexSpec, build_index

N, D = 2000, 32

SPECS = {
    "flat": IndexSpec(kind="flat"),
    "hnsw": IndexSpec(kind="hnsw", m=16, ef_search=64),
    "ivf": IndexSpec(kind="ivf", nlist=16, nprobe=8),
}


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clustered random unit vectors (like trained embeddings), sparse ids, held-out queries."""
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((20, D))  # (C, d)
    x = unit(centres[rng.integers(0, 20, N)] + 0.5 * rng.standard_normal((N, D)))  # (N, d)
    ids = rng.choice(100_000, size=N, replace=False).astype(np.int64)  # (N,)
    q = unit(centres[rng.integers(0, 20, 100)] + 0.5 * rng.standard_normal((100, D)))  # (Q, d)
    return x, ids, q


@pytest.fixture(params=sorted(SPECS), scope="module")
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def built(kind: str, data) -> ArtistIndex:
    x, ids, _ = data
    return build_index(x, SPECS[kind], ids=ids)


def exact_topk(x, ids, q, k):
    scores = q @ x.T  # (Q, N)
    order = np.argsort(-scores, axis=1)[:, :k]  # (Q, k)
    return ids[order]


def test_kind_and_shapes(built: ArtistIndex, kind: str, data) -> None:
    x, ids, q = data
    assert built.kind == kind and built.ntotal == N and built.dim == D
    got_ids, scores = built.search(q[:5], 10)
    assert got_ids.shape == (5, 10) and got_ids.dtype == np.int64
    assert scores.shape == (5, 10) and scores.dtype == np.float32
    assert set(got_ids.ravel()) <= set(ids)
    assert (np.diff(scores, axis=1) <= 1e-6).all(), "scores must be best first"


def test_recall_against_exact(built: ArtistIndex, kind: str, data) -> None:
    x, ids, q = data
    truth = exact_topk(x, ids, q, 10)
    got, _ = built.search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth, strict=True)])
    assert recall >= (0.999 if kind == "flat" else 0.95), f"{kind} recall@10 = {recall:.3f}"


def test_stored_vector_finds_itself_first(built: ArtistIndex, kind: str, data) -> None:
    x, ids, _ = data
    got, scores = built.search(x[:50], 1)
    hit = np.mean(got[:, 0] == ids[:50])
    assert hit >= (1.0 if kind == "flat" else 0.95)
    if kind == "flat":
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_fewer_than_k_pads_with_minus_one(kind: str) -> None:
    x = unit(np.random.default_rng(0).standard_normal((5, 8)))
    idx = build_index(x, SPECS[kind] if kind != "ivf" else IndexSpec(kind="ivf", nlist=1))
    ids, scores = idx.search(x[:2], 8)
    assert (ids[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all()
    assert sorted(ids[0, :5]) == [0, 1, 2, 3, 4]


def test_save_load_round_trip(built: ArtistIndex, kind: str, data, tmp_path) -> None:
    _, _, q = data
    path = tmp_path / "sub" / "artists.faiss"
    built.save(path)
    loaded = ArtistIndex.load(path)
    assert loaded.kind == kind and loaded.ntotal == N
    a_ids, a_scores = built.search(q, 10)
    b_ids, b_scores = loaded.search(q, 10)
    np.testing.assert_array_equal(a_ids, b_ids)
    np.testing.assert_allclose(a_scores, b_scores, rtol=1e-6)
    assert [p.name for p in path.parent.iterdir()] == ["artists.faiss"], "no temp files left"


def test_vectors_returns_every_stored_vector(built: ArtistIndex, data) -> None:
    x, ids, _ = data
    got_ids, got_vecs = built.vectors()
    order = np.argsort(got_ids)
    ref = np.argsort(ids)
    np.testing.assert_array_equal(got_ids[order], ids[ref])
    np.testing.assert_allclose(got_vecs[order], x[ref], atol=1e-6)


def test_load_missing_or_corrupt_names_the_path(tmp_path) -> None:
    with pytest.raises(IndexLoadError, match="nope.faiss"):
        ArtistIndex.load(tmp_path / "nope.faiss")
    bad = tmp_path / "bad.faiss"
    bad.write_bytes(b"definitely not faiss")
    with pytest.raises(IndexLoadError, match="bad.faiss"):
        ArtistIndex.load(bad)


def test_truncated_file_is_a_load_error(tmp_path) -> None:
    x = unit(np.random.default_rng(1).standard_normal((50, 8)))
    path = tmp_path / "a.faiss"
    build_index(x, IndexSpec()).save(path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(IndexLoadError, match="a.faiss"):
        ArtistIndex.load(path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "annoy"}, "kind"),
        ({"metric": "cosine"}, "metric"),
        ({"ef_search": 0}, "ef_search"),
    ],
)
def test_bad_spec(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        IndexSpec(**kwargs)


def test_bad_inputs() -> None:
    x = unit(np.random.default_rng(2).standard_normal((10, 4)))
    with pytest.raises(ValueError, match="2-D"):
        build_index(x[0], IndexSpec())
    with pytest.raises(ValueError, match="ids"):
        build_index(x, IndexSpec(), ids=np.zeros(10, dtype=np.int64))
    idx = build_index(x, IndexSpec())
    with pytest.raises(ValueError, match="dimension 5"):
        idx.search(np.zeros((1, 5), np.float32), 3)
    with pytest.raises(ValueError, match="k must be"):
        idx.search(x[:1], 0)


def test_l2_metric_scores_are_negated_distances() -> None:
    x = np.array([[0, 0], [1, 0], [3, 0]], dtype=np.float32)
    idx = build_index(x, IndexSpec(metric="l2"))
    ids, scores = idx.search(np.array([[0.9, 0]], np.float32), 3)
    assert ids[0].tolist() == [1, 0, 2]
    np.testing.assert_allclose(scores[0], [-0.01, -0.81, -4.41], rtol=1e-5)


def test_ivf_trained_on_a_sample_is_reproducible_and_finds_neighbours(data) -> None:
    """``train_size`` runs k-means on a seeded sample (how a 10M catalogue is built): the same
    spec gives the same index, and it still finds the exact neighbours."""
    x, ids, q = data
    spec = IndexSpec(kind="ivf", nlist=16, nprobe=8, train_size=400)
    a, b = build_index(x, spec, ids=ids), build_index(x, spec, ids=ids)
    got, _ = a.search(q, 10)
    assert (got == b.search(q, 10)[0]).all()
    want = exact_topk(x, ids, q, 10)
    recall = np.mean([len(np.intersect1d(g, w)) / 10 for g, w in zip(got, want, strict=True)])
    assert recall >= 0.9
    with pytest.raises(ValueError, match="train_size"):
        IndexSpec(kind="ivf", train_size=-1)
