"""The lake training job's knobs (no torch import, so the CLI can read the defaults)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12  # upper bound; early stopping on val/recall@20 picks the count
    batch_size: int = 1024
    lr: float = 3e-3
    weight_decay: float = 0.0
    temperature: float = 0.1
    learn_temperature: bool = False
    log_q: bool = True
    patience: int = 3  # epochs without a better val/recall@20 before stopping
    max_train_examples: int | None = 300_000
    history_len: int = 50  # <= data.schemas.HISTORY_LEN
    dim: int = 64
    embed_dim: int = 64
    hidden: int = 128
    pooling: str = "mean"  # measured on the demo world: mean 0.204 vs attention 0.184 val/recall@20
    item_dropout: float = 0.1
    tags_per_artist: int = 8
    # "first": train on each (user, artist)'s first positive only (evaluation asks for new
    # artists); "all": every positive, repeats weighted by ``repeat_weight``
    positives: str = "first"
    repeat_weight: float = 1.0
    uniform_negatives: int = 0  # extra catalogue negatives per batch (mixed negative sampling)
    catalogue_weight: float = 0.0  # weight of an auxiliary exact full-catalogue softmax term
    # after selecting the epoch count on valid, retrain on train + valid for that many epochs
    # (the baselines are fitted on train + valid for the test window too)
    refit: bool = True
    # "history": the history alone; "segments": + segment fields; "full": + dense features
    user_features: str = "history"
    accelerator: str = "auto"
    seed: int = 0
