"""A benchmark peer served through precomputed slates (jobs.peer, serving.peer): the API answers
with the peer's own lists, trending for a listener it has no slate for, and a slate file that
is not the one published is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from core.workspace import Workspace
from data.schemas import SPLITS
from index import PEER_SLATES_FILE, CorruptBundleError, load_bundle, publish_bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def peer_ws(pipeline, tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Path]:
    """A copy of the tiny pipeline's workspace with an ItemKNN bundle published beside it."""
    from jobs.peer import export_peer_bundle

    src, _ = pipeline
    ws = Workspace(tmp_path_factory.mktemp("peer") / "ws")
    shutil.copytree(src.root, ws.root)
    bundle = export_peer_bundle(ws, ws.latest_run(), "itemknn", {"neighbours": 50})
    return ws, bundle


def _rows_with_history(ws: Workspace) -> list[dict]:
    rows = pq.read_table(ws.feature_dir.user_features).to_pylist()
    return [r for r in rows if r["history"]]


def _peer_lists(ws: Workspace, rows: list[dict], k: int) -> dict[str, list[str]]:
    """The peer's own ``recommend`` for each row's listener (fitted as the job fits it), minus
    the row's followed and seen artists: what the API must answer."""
    from evaluation.registry import make_recommender
    from evaluation.temporal import examples_interactions

    data = examples_interactions(ws, SPLITS)
    peer = make_recommender("itemknn", {"neighbours": 50}).fit(data)
    at = pd.Index(data.user_ids).get_indexer([r["user_key"] for r in rows])
    cols, _ = peer.recommend(at, len(data.artist_ids))
    out = {}
    for row, c in zip(rows, cols, strict=True):
        drop = set(row["followed"] or []) | set(row["seen"] or [])
        out[row["user_key"]] = [
            data.artist_ids[j] for j in c if j >= 0 and data.artist_ids[j] not in drop
        ][:k]
    return out


def test_the_api_answers_with_the_peers_own_lists(peer_ws) -> None:
    from serving.precompute import precompute_bundle
    from serving.recommender import from_slate, recommend_from_row
    from serving.reload import ModelHolder
    from serving.slates import open_slate_store

    ws, bundle = peer_ws
    holder = ModelHolder(bundle)
    model = holder.current
    assert model.peer is not None and model.peer.model == "itemknn"
    assert model.manifest["system"] == "itemknn (precomputed slates)"
    assert "two_stage" not in model.manifest and "ranker" not in model.manifest
    rows = _rows_with_history(ws)[:40]
    want = _peer_lists(ws, rows, 10)
    assert sum(len(v) == 10 for v in want.values()) >= 0.9 * len(rows)

    for row in rows:  # real time: the bundle's slate of the row's listener
        got = recommend_from_row(model, row, 10)
        assert got.source == "model"
        assert [r.artist_id for r in got.items][: len(want[row["user_key"]])] == want[
            row["user_key"]
        ]

    # precomputed: the same lists through the slate store, as the request path reads them
    target = str(ws.online / "peer-slates.sqlite")
    done = precompute_bundle(bundle, ws.feature_dir.user_features, target)
    assert done.bundle_version == model.version and done.slates == len(_rows_with_history(ws))
    store = open_slate_store(target, version=model.version)
    try:
        for row in rows:
            slate = store.get(row["user_key"])
            assert slate is not None and slate.version == model.version
            listed = [r.artist_id for r in from_slate(model, slate, 10).items]
            assert listed[: len(want[row["user_key"]])] == want[row["user_key"]]
    finally:
        store.close()


def test_a_streamed_exclusion_and_a_listener_without_a_slate(peer_ws) -> None:
    from data.features.candidates import segment_keys
    from serving.recommender import recommend_from_row, trending_candidates
    from serving.reload import ModelHolder

    ws, bundle = peer_ws
    model = ModelHolder(bundle).current
    row = _rows_with_history(ws)[0]
    first = recommend_from_row(model, row, 10).items[0].artist_id
    streamed = {**row, "seen": [*(row["seen"] or []), first]}  # just listened to it
    again = recommend_from_row(model, streamed, 10)
    assert first not in [r.artist_id for r in again.items] and again.source == "model"

    # a listener the peer has no slate for: trending for their segment, as without history
    stranger = {**row, "user_key": "not-a-listener-of-the-fit"}
    got = recommend_from_row(model, stranger, 5)
    assert got.source == "trending"
    exclude = set(row["followed"] or []) | set(row["seen"] or [])
    trending = [a for a, _ in trending_candidates(model, segment_keys(row)) if a not in exclude]
    assert [r.artist_id for r in got.items] == list(dict.fromkeys(trending))[:5]


def test_a_tampered_or_foreign_slate_file_is_refused(peer_ws, tmp_path: Path) -> None:
    from serving.model import ServingModel

    ws, bundle = peer_ws
    copy = tmp_path / "bundles" / bundle.name
    shutil.copytree(bundle, copy)
    table = pq.read_table(copy / PEER_SLATES_FILE)
    swapped = table.set_column(
        1, "slate", table.column("slate").take(np.roll(np.arange(table.num_rows), 1))
    )  # every listener gets another's list
    pq.write_table(swapped, copy / PEER_SLATES_FILE)
    with pytest.raises(CorruptBundleError, match=PEER_SLATES_FILE):
        load_bundle(copy)

    # the same files republished under another version: checksums agree, but every slate was
    # scored for the original bundle, so the bundle is refused at load
    original = load_bundle(bundle)
    files = {name: bundle / name for name in original.files}
    drop = ("files", "version", "created_at")
    manifest = {k: v for k, v in original.manifest.items() if k not in drop}
    other = publish_bundle(tmp_path / "other", files, manifest)
    with pytest.raises(CorruptBundleError, match="scored for bundle"):
        ServingModel.from_bundle(load_bundle(tmp_path / "other" / other))
