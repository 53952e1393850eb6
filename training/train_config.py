"""The one two-tower training config, for both sources (the lake and an interactions file).

The model's own knobs are the nested :class:`models.two_tower.TwoTowerConfig` (its vocabulary
sizes are filled in from the data at fit time); the rest is optimisation and data. Fields marked
"lake" only apply to the lake source, "interactions" only to an interactions file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.constants import N_SPECIAL
from models.two_tower import TwoTowerConfig

# the user tower's optional side inputs when an interactions file comes with a friends / user
# tags file (``tastemaker train --friends / --user-tags``): how many friends' artists and own
# tag assignments it reads (the HetRec ablation: ``benchmarks.bench_hetrec_inputs``)
FRIENDS_LEN = 50
USER_TAGS_LEN = 64
OBJECTIVES = ("in-batch",)  # in-batch softmax + logQ + accidental-hit masking (+ uniform)
LR_SCHEDULES = ("constant", "cosine", "onecycle")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "auto")


def default_model() -> TwoTowerConfig:
    """Measured on HetRec validation slices (``benchmarks.bench_two_tower_hetrec --val``):
    mean-pooled history, no MLP on either tower, id + tag bag artists, 256 dimensions."""
    return TwoTowerConfig(
        n_artists=N_SPECIAL,
        history_len=50,
        dedupe_history=True,
        dim=256,
        embed_dim=256,
        pooling="mean",
        user_mlp=False,
        artist_mlp=False,
        tags_per_artist=8,
    )


@dataclass(frozen=True)
class TrainConfig:
    model: TwoTowerConfig = field(default_factory=default_model)
    # "in-batch": softmax over the batch's positives (every rank's under DDP) with the logQ
    # correction and accidental hits masked; ``uniform_negatives`` > 0 mixes in catalogue draws
    objective: str = "in-batch"
    # interactions: exactly this many; lake: an upper bound (early stopping). HetRec
    # validation Recall@20 (split 0): 8 epochs 0.284, 12 with the cosine decay 0.289, 16 0.291
    # (twice the time of 8; 12 keeps the default fit inside a minute on 2 cores)
    epochs: int = 12
    batch_size: int = 2048
    lr: float = 1e-2
    weight_decay: float = 0.0
    # "constant", "cosine" (decay to 0 over the fit) or "onecycle" (10 % warm-up, then cosine);
    # HetRec validation at 12 epochs: constant 0.285, cosine 0.289, onecycle 0.289
    lr_schedule: str = "cosine"
    temperature: float = 0.1
    learn_temperature: bool = False
    log_q: bool = True
    uniform_negatives: int = 0  # extra catalogue negatives per batch (mixed negative sampling)
    # interactions: each epoch every user's artists are split at random, this share fed as the
    # history and the rest as positives (the model learns to predict artists it did not see)
    history_keep: float = 0.5
    # interactions: each half also predicts the other (every pair is a positive every epoch)
    swap_halves: bool = True
    val_fraction: float = 0.0  # interactions: hold out this share of each user for val metrics
    # lake, "masked": every user's artist bag in halves as above (order kept: most recent
    # first); "sequential": one example per event, history = the streams before it
    lake_batches: str = "masked"
    patience: int = 3  # lake: epochs without a better val/recall@20 before stopping
    max_train_examples: int | None = 300_000  # lake
    # lake, "first": each (user, artist)'s first positive only (evaluation asks for new
    # artists); "all": every positive, repeats weighted by ``repeat_weight``
    positives: str = "first"
    repeat_weight: float = 1.0
    # lake: after selecting the epoch count on valid, retrain on train + valid for that many
    refit: bool = True
    # lake, "history": the history alone; "segments": + segment fields; "full": + dense features
    user_features: str = "history"
    accelerator: str = "auto"
    devices: int | str = 1
    precision: str = "auto"  # "auto": bf16-mixed on CUDA, 32-true elsewhere
    seed: int = 0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.lake_batches not in ("masked", "sequential"):
            raise ValueError(
                f"lake_batches must be 'masked' or 'sequential', got {self.lake_batches!r}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not 0.0 < self.history_keep <= 1.0:
            raise ValueError(f"history_keep must be in (0, 1], got {self.history_keep}")


def config_from_json(obj: dict) -> TrainConfig:
    """Inverse of ``dataclasses.asdict`` for a run's ``config.json["train"]``."""
    kw = dict(obj)
    model = dict(kw.pop("model"))
    model["segment_cardinalities"] = tuple(model.get("segment_cardinalities", ()))
    known = {f for f in TrainConfig.__dataclass_fields__}
    return TrainConfig(model=TwoTowerConfig(**model), **{k: v for k, v in kw.items() if k in known})


def lake_config() -> TrainConfig:
    """The defaults with a smaller batch and a larger history share, chosen on the demo
    world's validation week (Recall@20): the lake has ~40k (user, artist) pairs, so 2,048-pair
    batches leave too few steps an epoch (0.205 after 17 epochs at batch 2,048, lr 3e-3;
    0.236 at batch 512, lr 1e-2); feeding 75 % of a bag as history rather than half: 0.243.
    ``tastemaker demo`` and ``tastemaker daily`` train with it. The learning rate stays constant
    here: the HetRec cosine default was not measured on the demo world, whose epoch count
    early stopping picks."""
    return TrainConfig(
        batch_size=512, lr=1e-2, epochs=6, patience=2, history_keep=0.75, lr_schedule="constant"
    )
