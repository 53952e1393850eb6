"""Model name -> recommender with its tuned defaults, for the CLI and evaluation.

The defaults are the HetRec-2K settings the published peers use (``benchmarks/hetrec.py``):
EASE lambda = 100; ALS 32 factors, regularization 0.1, alpha 10, binary, 30 iterations;
ItemKNN plain cosine over all neighbours.

Evaluation never imports training: a model defined there (the two-tower) is *registered* here
by its package (``training/__init__.py`` registers ``two-tower`` when any training module is
imported, which the ``tastemaker`` CLI always does), with a factory and, for models trained on
the workspace, a loader of a run dir's scorer. Both import torch lazily, so listing or fitting a
baseline never pays for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
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


@dataclass(frozen=True)
class ModelPlugin:
    """A recommender defined outside evaluation: ``make()`` -> a fresh unfitted recommender;
    ``load_scorer(run_dir)`` -> an object with ``artist_ids`` and ``score_users(users)`` (a
    lake run); ``load_fitted(run_dir, interactions)`` -> the fitted recommender of an
    interactions run (``evaluation.runs``)."""

    make: Callable[[], Any]
    load_scorer: Callable[[Path], Any] | None = None
    load_fitted: Callable[[Path, Any], Any] | None = None


_PLUGINS: dict[str, ModelPlugin] = {}


def register_model(name: str, plugin: ModelPlugin) -> None:
    if name in BASELINES:
        raise ValueError(f"{name!r} is a baseline; pick another name")
    _PLUGINS[name] = plugin


def model_names() -> tuple[str, ...]:
    return (*_PLUGINS, *BASELINES)


def _plugin(name: str) -> ModelPlugin:
    if name not in _PLUGINS:
        hint = " (registered by the training package: import training)" if name == TWO_TOWER else ""
        raise ValueError(f"unknown model {name!r}{hint}; choose one of: {', '.join(model_names())}")
    return _PLUGINS[name]


def make_recommender(name: str, params: Mapping[str, Any] | None = None) -> Any:
    """A fresh, unfitted recommender answering ``models.base.Recommender``; ``params`` replace
    fields of a baseline's config (e.g. tuned values from ``tastemaker tune``)."""
    if name in BASELINES:
        model = BASELINES[name]()
        if not params:
            return model
        cfg = getattr(model, "cfg", None)
        if cfg is None or not dataclasses.is_dataclass(cfg):
            raise ValueError(f"{name!r} has no config to set {sorted(params)} on")
        unknown = sorted(set(params) - {f.name for f in dataclasses.fields(cfg)})
        if unknown:
            raise ValueError(f"{name!r} has no config field(s) {unknown}")
        new_cfg = dataclasses.replace(cfg, **params)  # type: ignore[type-var]
        return BASELINES[name](new_cfg)  # type: ignore[call-arg]
    if params:
        raise ValueError(f"{name!r} takes no params here; configure it through its own config")
    return _plugin(name).make()


def is_plugin(name: str) -> bool:
    return name in _PLUGINS


def is_run_model(name: str) -> bool:
    """Whether ``name`` is scored from a trained run dir rather than fitted on the fly."""
    return name in _PLUGINS and _PLUGINS[name].load_scorer is not None


def load_run_scorer(name: str, run_dir: Path) -> Any:
    loader = _plugin(name).load_scorer
    if loader is None:
        raise ValueError(f"{name!r} has no run-dir scorer")
    return loader(run_dir)


def load_fitted_plugin(name: str, run_dir: Path, interactions: Any) -> Any:
    loader = _plugin(name).load_fitted
    if loader is None:
        raise ValueError(f"{name!r} cannot be loaded from an interactions run dir")
    return loader(run_dir, interactions)


def baseline_class(name: str) -> type[ScoringRecommender]:
    """The class of a non-neural model (used to reload a persisted one)."""
    if name not in BASELINES:
        raise ValueError(f"{name!r} is not a persisted baseline; known: {', '.join(BASELINES)}")
    return BASELINES[name]  # type: ignore[return-value]
