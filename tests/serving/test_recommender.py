"""The recommender core on a tiny real bundle with a known answer (two artist clusters)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from conftest import ARTISTS, C0, C1, SPEC, TRENDING, USERS

from data.features import encoding as training_encoding
from data.features.encoding import FeatureEncoder
from data.features.online_store import open_online_store, table_from_rows
from data.features.vocab import FeatureVocabs
from index import ArtistIndex, CorruptBundleError, IndexSpec, build_index, publish_bundle
from serving.recommender import Recommender
from serving.reload import ModelHolder
from tests.fixtures.synthetic_bundle import bundle_files, cluster_of, publish_synthetic


@pytest.fixture
def rec(bundles_dir, store_path, pseudonym_key):
    store = open_online_store(store_path)
    yield Recommender(ModelHolder(bundles_dir), store, pseudonym_key)
    store.close()


def test_known_user_gets_own_cluster_without_followed_or_seen(rec) -> None:
    result = rec.recommend("alice", 5)
    ids = [r.artist_id for r in result.items]
    row = USERS["alice"]
    assert result.source == "model" and len(ids) == 5 and len(set(ids)) == 5
    assert all(cluster_of(a) == 0 for a in ids), ids
    assert not set(ids) & (set(row["followed"]) | set(row["seen"]))
    assert {r.source for r in result.items} == {"model"}
    scores = [r.score for r in result.items]
    assert scores == sorted(scores, reverse=True)
    assert all(r.reason.startswith("because you listen to Artist C0") for r in result.items)


def test_pad_and_unk_never_served(rec) -> None:
    # the synthetic index holds vocab 0 and 1 right on cluster 0's centre: top-1 if unfiltered
    ids = [r.artist_id for r in rec.recommend("alice", 8).items]
    assert "<pad>" not in ids and "<unk>" not in ids


def test_two_users_get_different_lists(rec) -> None:
    a = [r.artist_id for r in rec.recommend("alice", 5).items]
    b = [r.artist_id for r in rec.recommend("bob", 5).items]
    assert set(a).isdisjoint(b)
    assert all(cluster_of(x) == 1 for x in b)


def test_exhausted_catalogue_returns_every_allowed_artist(rec) -> None:
    # 24 artists, alice excludes 5: asking for 20 gives the 19 others, once each
    ids = [r.artist_id for r in rec.recommend("alice", 20).items]
    excluded = set(USERS["alice"]["followed"]) | set(USERS["alice"]["seen"])
    assert len(ids) == 19 and set(ids) == set(C0 + C1) - excluded


def test_short_list_is_backfilled_segment_first(tmp_path, store_path, pseudonym_key) -> None:
    """An index missing artists (e.g. new ones not embedded yet) yields a short model list."""
    files, manifest = bundle_files(SPEC, TRENDING)
    (tmp_path / "full.faiss").write_bytes(files["artists.faiss"])
    ids, vecs = ArtistIndex.load(tmp_path / "full.faiss").vectors()
    keep = np.isin(ids, [2 + ARTISTS.index(a) for a in C0])  # vocab index = 2 + position
    files["artists.faiss"] = build_index(vecs[keep], IndexSpec(), ids=ids[keep]).to_bytes()
    publish_bundle(tmp_path / "b", files, manifest)
    store = open_online_store(store_path)
    result = Recommender(ModelHolder(tmp_path / "b"), store, pseudonym_key).recommend("alice", 10)
    store.close()
    excluded = set(USERS["alice"]["followed"]) | set(USERS["alice"]["seen"])
    model_part = [r.artist_id for r in result.items if r.source == "model"]
    backfill = [r for r in result.items if r.source == "backfill"]
    assert len(model_part) == 7 and set(model_part) == set(C0) - excluded
    expected = [
        a
        for a in dict.fromkeys(TRENDING["by_segment"]["country=DE"] + TRENDING["global"])
        if a not in excluded and a not in model_part
    ][:3]
    assert [r.artist_id for r in backfill] == expected and len(result.items) == 10
    assert backfill[0].artist_id == C1[11] and backfill[0].reason == "trending in DE"
    assert all(r.reason.startswith("trending") for r in backfill)


def test_unknown_user_gets_global_trending(rec) -> None:
    result = rec.recommend("nobody-we-know", 4)
    assert result.source == "trending"
    assert [r.artist_id for r in result.items] == TRENDING["global"][:4]
    assert {r.reason for r in result.items} == {"trending now"}
    assert all(r.score is None for r in result.items)


def test_unknown_user_with_country_hint(rec) -> None:
    items = rec.recommend("nobody", 3, country="US").items
    assert [r.artist_id for r in items] == [C1[9], C1[10], TRENDING["global"][0]]
    assert items[0].reason == "trending in US" and items[2].reason == "trending now"


def test_cold_user_with_known_segment_gets_segment_trending(rec) -> None:
    result = rec.recommend("carol", 4)
    assert result.source == "trending"
    assert [r.artist_id for r in result.items] == [C0[9], C0[10], C1[11], TRENDING["global"][0]]
    assert [r.reason for r in result.items] == ["trending in DE"] * 3 + ["trending now"]


def test_k_larger_than_catalogue_returns_distinct_known(rec) -> None:
    items = rec.recommend("bob", 100).items
    ids = [r.artist_id for r in items]
    assert len(ids) == len(set(ids)) and set(ids) <= set(C0 + C1)
    with pytest.raises(ValueError, match="k must be"):
        rec.recommend("bob", 0)


def test_encoder_matches_training_encoding(bundles_dir) -> None:
    """Regression guard for train/serve skew: serving's row encoder against the table encoder
    training uses (one module, no torch: this test never skips)."""

    vocab = json.loads((bundles_dir / "20240101T000000Z-first" / "vocab.json").read_text())
    model = {
        "history_len": 2,
        "segment_fields": ["country", "gender"],
        "dense_fields": ["listen_ratio", "log_streams"],
        "follows_len": 2,
    }
    rows = [dict(r) for r in USERS.values()]
    rows[0]["history"] = ["never-heard-of", *rows[0]["history"]]
    rows[0]["followed"] = [*rows[0]["followed"], "never-heard-of", rows[0]["history"][1]]
    rows[1]["country"] = "ZZ"
    rows[1]["listen_ratio"] = float("nan")
    ours = FeatureEncoder.from_bundle(vocab, model).encode(rows)
    vocabs = FeatureVocabs.from_json(
        {**vocab, "segments": {f: vocab["segments"][f] for f in model["segment_fields"]}}
    )
    theirs = training_encoding.encode_users(
        table_from_rows(rows), vocabs, model["history_len"], model["dense_fields"], 2
    )
    np.testing.assert_array_equal(ours["history"], theirs.history)
    np.testing.assert_array_equal(ours["segments"], theirs.segments)
    np.testing.assert_array_equal(ours["dense"], theirs.dense)
    np.testing.assert_array_equal(ours["follows"], theirs.follows)
    assert ours["follows"][0, 1] == 1 and (ours["follows"][2] == 0).all()  # unknown; nobody
    assert "follows" not in FeatureEncoder.from_bundle(vocab, {**model, "follows_len": 0}).encode(
        rows
    )  # a model without the input gets no such feed
    assert ours["history"][0, 0] == 1 and ours["segments"][1, 0] == 1 and ours["dense"][1, 0] == 0
    assert isinstance(theirs.history, np.ndarray) and not isinstance(ours, pa.Table)


def test_reload_swaps_and_refuses_corrupt(bundles_dir, rec) -> None:
    holder = rec.holder
    assert holder.reload() == (False, "20240101T000000Z-first", "20240101T000000Z-first")
    v2 = publish_synthetic(bundles_dir, SPEC, trending=TRENDING, version="20240102T000000Z-second")
    assert holder.check_for_update() and holder.current.version == v2
    v3 = publish_synthetic(bundles_dir, SPEC, trending=TRENDING, version="20240103T000000Z-third")
    (bundles_dir / v3 / "artists.faiss").write_bytes(b"garbage")
    with pytest.raises(CorruptBundleError, match="artists.faiss"):
        holder.reload()
    assert holder.current.version == v2
    assert not holder.check_for_update()
    assert rec.recommend("alice", 3).bundle_version == v2


def test_bundle_with_wrong_tower_dimension_is_refused(tmp_path) -> None:
    from dataclasses import replace

    from index import load_bundle
    from serving.model import ServingModel

    files, manifest = bundle_files(replace(SPEC, seed=1))
    files["artists.faiss"] = build_index(np.eye(26, 4, dtype=np.float32), IndexSpec()).to_bytes()
    publish_bundle(tmp_path, files, manifest)
    with pytest.raises(CorruptBundleError, match="dimension 4"):
        ServingModel.from_bundle(load_bundle(tmp_path))


@pytest.mark.parametrize("kind", ["online", "slates"])
def test_guarded_store_wraps_either_encoding(tmp_path, bundles_dir, store_path, kind) -> None:
    """One guard (cool-down, probe) over both encodings of the key-value layer."""
    from serving.precompute import precompute
    from serving.slates import Slate, open_slate_store
    from serving.store import GuardedStore

    key = USERS["alice"]["user_key"]
    if kind == "online":
        store = open_online_store(store_path)
        want = USERS["alice"]
    else:
        store = open_slate_store(str(tmp_path / "slates.sqlite"), create=True)
        users = table_from_rows(USERS.values())
        assert precompute(ModelHolder(bundles_dir).current, users, store) == 2
        want = store.get(key)
        assert isinstance(want, Slate) and len(want.ids) == 19
    guarded = GuardedStore(store, 50.0, 30.0)
    assert guarded.get(key) == (want, True) and guarded.probe() == (True, "")
    store.kv.drop()  # empty: answers, but holds nothing
    assert guarded.probe()[0] is False and guarded.get(key) == (None, True)
    store.close()  # failing: counted, cooled down, unhealthy
    assert guarded.get(key) == (None, False) and not guarded.healthy
    assert guarded.get(key) == (None, False)  # skipped during the cool-down
