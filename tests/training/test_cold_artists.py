"""New artists without retraining: an artist held out of training entirely is placed by its
tags alone and reachable; ``index rebuild`` embeds a catalogue artist added after training."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
import torch
from two_tower_world import PER_GROUP, build_world, group_of

from core.workspace import Workspace
from index.bundle import FILES, load_bundle
from index.faiss_index import ArtistIndex
from models.base import Interactions
from training.export import export_bundle
from training.inference import load_run
from training.train import TrainConfig, train_two_tower
from training.train_config import default_model
from training.two_tower_recommender import TwoTowerRecommender

GROUPS, USERS, ARTISTS, OWN = 4, 16, 10, 6


def tagged_world() -> tuple[Interactions, dict[str, list[str]], np.ndarray]:
    """Users stream ``OWN`` of their group's artists; artist 0 of every group (10 %) has no
    interactions at all (cold) but carries its group's tag like the others."""
    rng = np.random.default_rng(0)
    rows, cols = [], []
    for g in range(GROUPS):
        for i in range(USERS):
            for j in rng.choice(np.arange(1, ARTISTS), OWN, replace=False):
                rows.append(g * USERS + i)
                cols.append(g * ARTISTS + j)
    m = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(GROUPS * USERS, GROUPS * ARTISTS)
    )
    artists = np.array([f"a{c}" for c in range(GROUPS * ARTISTS)])
    tags = {a: [f"genre{c // ARTISTS}", "music"] for c, a in enumerate(artists)}
    cold = np.arange(GROUPS) * ARTISTS
    return Interactions(m, np.array([f"u{u}" for u in range(m.shape[0])]), artists), tags, cold


@pytest.mark.slow
def test_an_artist_never_trained_is_reached_through_its_tags():
    inter, tags, cold = tagged_world()
    cfg = TrainConfig(
        model=dataclasses.replace(default_model(), history_len=10, dim=16, embed_dim=16),
        epochs=20,
        batch_size=64,
        lr=1e-2,
        accelerator="cpu",
    )
    rec = TwoTowerRecommender(cfg, tags).fit(inter)
    assert rec.model is not None
    ids = torch.from_numpy(cold + 2)  # vocab index = column + 2
    assert rec.model.artist_embedding.weight[ids].abs().sum() == 0, "cold ids must be zeroed"
    top, _ = rec.recommend(np.arange(inter.shape[0]), k=inter.shape[1])
    user_group = np.arange(inter.shape[0]) // USERS
    # among the cold artists, the user's own group's comes first
    cold_rank = [[list(row).index(c) for c in cold] for row in top]
    first_cold = cold[np.argmin(cold_rank, axis=1)]
    assert (first_cold // ARTISTS == user_group).mean() >= 0.9
    # without tags the same cold artists are indistinguishable zeros: the test can fail
    no_tags = TwoTowerRecommender(dataclasses.replace(cfg, epochs=1)).fit(inter)
    assert no_tags.model is not None
    vecs = no_tags.model.artist_tower.all_vectors()[ids]
    assert torch.allclose(vecs, torch.zeros_like(vecs))


@pytest.mark.slow
def test_index_rebuild_embeds_a_new_catalogue_artist_by_its_tags(tmp_path):
    ws = build_world(Workspace(tmp_path))
    cfg = TrainConfig(
        model=dataclasses.replace(default_model(), history_len=20, dim=16, embed_dim=16),
        epochs=5,
        lr=1e-2,
        batch_size=128,
        patience=20,
        accelerator="cpu",
        max_train_examples=None,
        positives="all",
        refit=False,
    )
    run = train_two_tower(ws, cfg)
    af = pq.read_table(ws.features / "artist_features.parquet")
    new = af.slice(0, 1).to_pylist()[0] | {"artist_id": "newcomer", "tags": ["genre2", "music"]}
    pq.write_table(
        pa.concat_tables([af, pa.Table.from_pylist([new], schema=af.schema)]),
        ws.features / "artist_features.parquet",
    )
    bundle = export_bundle(ws, run, rebuild=True)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["rebuild"] == {"new_artists": 1}
    vocab = json.loads((bundle / "vocab.json").read_text())["artists"]
    assert vocab[-1] == "newcomer" and "newcomer" not in load_run(run).vocabs.artists.tokens
    # the newcomer is in the served index, and its nearest catalogue artists are its tag's group
    index = ArtistIndex.load(load_bundle(bundle).file(FILES.artist_index))
    stored_ids, vecs = index.vectors()
    new_index = len(vocab) - 1
    assert new_index in stored_ids
    vec = vecs[list(stored_ids).index(new_index)]  # (d,)
    ids, _ = index.search(vec[None, :].astype(np.float32), PER_GROUP // 2 + 1)
    groups = [group_of(vocab[i]) for i in ids[0] if vocab[i] != "newcomer"]
    assert np.mean([g == 2 for g in groups]) >= 0.8, groups
