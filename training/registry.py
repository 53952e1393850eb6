"""Model name -> recommender with its tuned defaults, for the CLI and evaluation.

The defaults are the HetRec-2K settings the published peers use (``benchmarks/hetrec.py``):
EASE lambda = 100; ALS 32 factors, regularization 0.1, alpha 10, binary, 30 iterations;
ItemKNN plain cosine over all neighbours. ``two-tower`` imports torch lazily, so listing or
fitting a baseline never pays for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from models.als import ALSRecommender
from models.base import ScoringRecommender
from models.ease import EASERecommender
from models.itemknn import ItemKNNRecommender
from models.popular import PopularRecommender
from models.random_rec import RandomRecommender
from models.trending import TrendingRecommender

TWO_TOWER = "two-tower"
BASELINES: dict[str, Callable[[], ScoringRecommender]] = {
    "random": RandomRecommender,
    "popular": PopularRecommender,
    "trending": TrendingRecommender,
    "itemknn": ItemKNNRecommender,
    "ease": EASERecommender,
    "als": ALSRecommender,
}
MODEL_NAMES = (TWO_TOWER, *BASELINES)


def make_recommender(name: str) -> Any:
    """A fresh, unfitted recommender answering ``models.base.Recommender``."""
    if name == TWO_TOWER:
        from training.two_tower_recommender import TwoTowerRecommender

        return TwoTowerRecommender()
    if name not in BASELINES:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    return BASELINES[name]()


def baseline_class(name: str) -> type[ScoringRecommender]:
    """The class of a non-neural model (used to reload a persisted one)."""
    if name not in BASELINES:
        raise ValueError(f"{name!r} is not a persisted baseline; known: {', '.join(BASELINES)}")
    return BASELINES[name]  # type: ignore[return-value]
