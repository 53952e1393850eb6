"""Training: the LightningModule, the train job, ONNX export.

Importing this package registers the two-tower with :mod:`evaluation.registry` (evaluation
never imports training; the arrow points this way). Torch is imported only when a two-tower
is built or loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluation.registry import TWO_TOWER, ModelPlugin, register_model


def _make_two_tower() -> Any:
    from training.two_tower_recommender import TwoTowerRecommender

    return TwoTowerRecommender()


def _load_two_tower_scorer(run_dir: Path) -> Any:
    from training.inference import load_scorer

    return load_scorer(run_dir)


def _load_two_tower_fitted(run_dir: Path, interactions: Any) -> Any:
    from training.two_tower_recommender import TwoTowerRecommender

    return TwoTowerRecommender.load(run_dir, interactions)


register_model(
    TWO_TOWER,
    ModelPlugin(
        make=_make_two_tower,
        load_scorer=_load_two_tower_scorer,
        load_fitted=_load_two_tower_fitted,
    ),
)
