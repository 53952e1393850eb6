"""Warm start copies the champion's embedding rows by token, whatever the new vocabulary."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from core.constants import N_SPECIAL
from data.features.vocab import FeatureVocabs, Vocab
from models.two_tower import TwoTower
from training.inference import load_run
from training.warm_start import warm_start

pytestmark = pytest.mark.slow


def test_rows_follow_their_tokens_and_new_tokens_stay_fresh(pipeline) -> None:
    ws, out = pipeline
    champ = load_run(out["run_dir"])
    old = champ.vocabs
    # the next day's vocabulary: artists in another order, one dropped, one new
    kept = list(reversed(old.artists.tokens[N_SPECIAL + 1 :]))
    artists = Vocab((*old.artists.tokens[:N_SPECIAL], "brand-new-artist", *kept))
    vocabs = FeatureVocabs(artists=artists, tags=old.tags, segments=old.segments)
    config = dataclasses.replace(champ.config, n_artists=len(artists))
    torch.manual_seed(1)
    model = TwoTower(
        config,
        torch.zeros((len(artists), champ.model.artist_tower.tag_table.shape[1]), dtype=torch.long),
        torch.zeros(len(artists)),
    )
    fresh_new = model.artist_embedding.weight[N_SPECIAL].clone()
    counts = warm_start(model, vocabs, out["run_dir"])
    assert counts["artists"] == len(kept) + N_SPECIAL and counts["tags"] == len(old.tags)
    for token in (kept[0], kept[-1], kept[len(kept) // 2]):
        new_row = model.artist_embedding.weight[artists.tokens.index(token)]
        old_row = champ.model.artist_embedding.weight[old.artists.tokens.index(token)]
        assert torch.equal(new_row, old_row), token
    assert torch.equal(model.artist_embedding.weight[N_SPECIAL], fresh_new)  # the new artist
    assert torch.equal(
        model.artist_tower.tag_embedding.weight, champ.model.artist_tower.tag_embedding.weight
    )


def test_a_warm_started_run_records_where_it_started(pipeline) -> None:
    import json

    from jobs.daily import DailyConfig  # noqa: F401  (the daily cycle's flag uses this path)
    from training.train import train_two_tower
    from training.train_config import TrainConfig

    ws, out = pipeline
    run_dir = train_two_tower(
        ws, TrainConfig(epochs=1, batch_size=256, refit=False), init_from=out["run_dir"]
    )
    warm = json.loads((run_dir / "metrics.json").read_text())["warm_start"]
    assert warm["from"] == str(out["run_dir"]) and warm["artists"] > 0
