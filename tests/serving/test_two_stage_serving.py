"""The two-stage system in the service (serving.two_stage): its bundle files are checksummed and
refused when corrupt, a candidate only the neighbour table proposes reaches the answer, and the
request path, the batch pipeline and precomputed slates give the same answer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_pipeline import check_paths_agree

from data.features.candidates import NEIGHBOURS, TWO_STAGE_FEATURES, TWO_TOWER, RetrievalBlend
from index import NEIGHBOURS_FILE, TWO_STAGE_FILE, CorruptBundleError, load_bundle, publish_bundle
from models.ranker import RankingSet, fit_ranker
from serving.model import ServingModel
from serving.recommender import recommend_from_row
from tests.fixtures.synthetic_bundle import bundle_files
from tests.serving.conftest import C0, C1, SPEC, TRENDING, USERS
from training.two_stage import TwoStageConfig

KNN = TWO_STAGE_FEATURES.index("knn_score")
# alice (cluster 0) has C0[0]; its strongest co-listening neighbour is in the *other* cluster,
# where the two-tower (top-2 only here) never looks
BRIDGE = C1[7]


def knn_first_ranker() -> bytes:
    """A real booster that learned to order by the item-to-item score alone."""
    rng = np.random.default_rng(0)
    n_q, per = 300, 10
    x = np.zeros((n_q * per, len(TWO_STAGE_FEATURES)), np.float32)
    x[:, KNN] = rng.random(n_q * per)
    y = (x[:, KNN] > 0.7).astype(np.float32)
    qid = np.repeat(np.arange(n_q), per)
    half = n_q * per // 2
    ranker, _ = fit_ranker(
        RankingSet(x[:half], y[:half], qid[:half]),
        RankingSet(x[half:], y[half:], qid[half:]),
        TWO_STAGE_FEATURES,
        # the served objective (pointwise, TwoStageConfig's), fewer rounds
        dataclasses.replace(
            TwoStageConfig().model, n_rounds=40, early_stopping=40, nthread=1, subsample=1.0
        ),
    )
    return ranker.to_bytes()


def neighbours_table() -> bytes:
    table = pa.table(
        {
            "artist_id": [C0[0], C0[1], C1[0]],
            "neighbours": [[BRIDGE, C0[5]], [C0[6]], [C1[1]]],
            "similarity": [[0.9, 0.2], [0.3], [0.5]],
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def publish_two_stage(
    root: Path, features=TWO_STAGE_FEATURES, two_tower: int = 2, blend: dict | None = None
) -> Path:
    """A two-stage bundle; without ``blend`` its manifest has none (a bundle from before it)."""
    files, manifest = bundle_files(SPEC, TRENDING)
    files = {**files, TWO_STAGE_FILE: knn_first_ranker(), NEIGHBOURS_FILE: neighbours_table()}
    section = {
        "features": list(features),
        "candidates": {"two_tower": two_tower, "neighbours": 5, "trending": 3},
    }
    if blend is not None:
        section["blend"] = blend
    manifest = {**manifest, "two_stage": section}
    return root / publish_bundle(root, files, manifest)


def test_a_neighbour_only_candidate_is_served_and_tagged(tmp_path: Path) -> None:
    model = ServingModel.from_bundle(load_bundle(publish_two_stage(tmp_path)))
    assert model.two_stage is not None and model.two_stage.config.two_tower == 2
    items = recommend_from_row(model, USERS["alice"], 5).items
    assert items[0].artist_id == BRIDGE and items[0].source == "model"  # knn score 0.9: first
    idx = model.encoder.artist_index
    row = USERS["alice"]
    retrieval = [(idx(C0[7]), 0.9), (idx(C0[8]), 0.8)]
    cands, _ = model.two_stage.rank(row, retrieval, np.ones(SPEC.dim), model.artist_vectors)
    bridge = int(np.flatnonzero(cands.ids == idx(BRIDGE))[0])
    assert cands.tags(bridge) == ["neighbours"] and cands.ranks[bridge, NEIGHBOURS] == 1
    # alice is in DE: the DE list is the trending source (C0[9], C0[10], C1[11])
    assert {model.encoder.artist_id(int(i)) for i in cands.ids[cands.sources[:, 2]]} == {
        C0[9],
        C0[10],
        C1[11],
    }
    # nothing she has (seen, followed, history) is a candidate of any source
    have = {idx(a) for a in row["seen"] + row["followed"]}
    assert not have & set(cands.ids.tolist())


def test_without_the_two_stage_section_the_pipeline_is_retrieval(tmp_path: Path) -> None:
    model = ServingModel.from_bundle(load_bundle(publish_two_stage(tmp_path)))
    plain = dataclasses.replace(model, two_stage=None)
    got = [r.artist_id for r in recommend_from_row(plain, USERS["alice"], 5).items]
    assert BRIDGE not in got[:3]  # retrieval alone stays in alice's cluster


def test_the_bundles_blend_orders_by_log_odds_and_the_two_tower_rank(tmp_path: Path) -> None:
    """A bundle without a blend serves its ranker's order (the neighbour-only BRIDGE first); one
    with a blend scores every candidate log-odds − weight × log1p(two-tower rank), which puts
    the two-tower's first ahead of it."""
    plain = ServingModel.from_bundle(load_bundle(publish_two_stage(tmp_path / "a")))
    blend = {"weight": 5.0, "heavy_weight": 5.0}
    blended = ServingModel.from_bundle(load_bundle(publish_two_stage(tmp_path / "b", blend=blend)))
    assert plain.two_stage is not None and plain.two_stage.blend.off
    assert blended.two_stage is not None and blended.two_stage.blend == RetrievalBlend(5.0, 5.0)
    row, idx = USERS["alice"], plain.encoder.artist_index
    retrieval = [(idx(C0[7]), 0.9), (idx(C0[8]), 0.8)]
    args = (row, retrieval, np.ones(SPEC.dim), plain.artist_vectors)
    cands, prob = plain.two_stage.rank(*args)
    same, scores = blended.two_stage.rank(*args)
    assert same.ids.tolist() == cands.ids.tolist()
    rank = np.where(cands.sources[:, TWO_TOWER], cands.ranks[:, TWO_TOWER], 3)  # depth 2 + 1
    np.testing.assert_allclose(scores, np.log(prob / (1 - prob)) - 5.0 * np.log1p(rank), rtol=1e-4)
    first = recommend_from_row(dataclasses.replace(plain, two_stage=None), row, 1).items[0]
    assert recommend_from_row(plain, row, 1).items[0].artist_id == BRIDGE
    assert recommend_from_row(blended, row, 1).items[0].artist_id == first.artist_id != BRIDGE


@pytest.mark.parametrize("k", (1, 10, 100))
@pytest.mark.parametrize("blend", (None, {"weight": 0.5, "heavy_weight": 1.0}))
def test_real_time_batch_and_precompute_agree(tmp_path: Path, k: int, blend) -> None:
    folder = publish_two_stage(tmp_path, two_tower=6, blend=blend)
    model = ServingModel.from_bundle(load_bundle(folder))
    assert check_paths_agree(model, list(USERS.values()), k) == 2


def test_a_corrupt_neighbour_table_refuses_the_bundle(tmp_path: Path) -> None:
    folder = publish_two_stage(tmp_path)
    load_bundle(folder)  # intact: loads
    path = folder / NEIGHBOURS_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptBundleError, match=NEIGHBOURS_FILE):
        load_bundle(folder)


def test_a_two_stage_ranker_of_another_spec_is_refused(tmp_path: Path) -> None:
    folder = publish_two_stage(tmp_path, features=[*TWO_STAGE_FEATURES[:-1], "other"])
    with pytest.raises(CorruptBundleError, match="TWO_STAGE_FEATURES"):
        ServingModel.from_bundle(load_bundle(folder))
