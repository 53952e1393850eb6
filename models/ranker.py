"""The ranking stage's model: gradient-boosted trees with a LambdaMART objective.

XGBoost's ``rank:ndcg`` (LambdaMART: Burges, "From RankNet to LambdaRank to LambdaMART",
2010) fitted on slates of logged impressions, one query group per slate (``qid``), with early
stopping on a later day's slates. The features are ``data.features.ranker.RANKER_FEATURES``;
this file only fits, predicts and (de)serialises — no I/O, the caller writes the bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import xgboost as xgb

OBJECTIVES = ("rank:ndcg", "binary:logistic")


@dataclass(frozen=True)
class RankerConfig:
    # shallow and fast-learning: on the demo world depth 4 / eta 0.1 stops at ~16 trees with the
    # held-out NDCG@10 of depth 6 / eta 0.05 (~92 trees), at 40 % of the predict time
    # (benchmarks/results/ranker.md measures both in one run)
    max_depth: int = 4
    eta: float = 0.1
    n_rounds: int = 400  # upper bound: early stopping picks the count on the valid day
    early_stopping: int = 30
    min_child_weight: float = 1.0
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    eval_at: int = 10  # ndcg@k monitored (for early stopping unless stop_metric says otherwise)
    nthread: int = 2
    seed: int = 0
    # "rank:ndcg" (LambdaMART, per query) or "binary:logistic" (pointwise, one probability
    # scale across queries: what the two-stage discovery ranker uses, see training.two_stage)
    objective: str = "rank:ndcg"
    # the held-out metric early stopping watches besides ndcg@eval_at (always recorded);
    # None: ndcg@eval_at itself. "logloss" is steadier than a top-k NDCG on a few hundred
    # held-out listeners for the pointwise objective
    stop_metric: str | None = None

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"RankerConfig.objective must be one of {OBJECTIVES}; got {self.objective!r}"
            )

    def params(self) -> dict[str, Any]:
        metrics = [f"ndcg@{self.eval_at}"]
        if self.stop_metric and self.stop_metric not in metrics:
            metrics.append(self.stop_metric)  # XGBoost stops early on the last metric
        out: dict[str, Any] = {
            "objective": self.objective,
            "eval_metric": metrics,
            "max_depth": self.max_depth,
            "eta": self.eta,
            "min_child_weight": self.min_child_weight,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "tree_method": "hist",
            "nthread": self.nthread,
            "seed": self.seed,
            "verbosity": 0,
        }
        if self.objective == "rank:ndcg":
            out["lambdarank_pair_method"] = "topk"
        return out


@dataclass(frozen=True)
class RankingSet:
    """Rows of candidates grouped into queries: ``x`` (n, F), ``y`` (n,) 0/1, ``qid`` (n,)
    non-decreasing (XGBoost needs each query's rows together)."""

    x: np.ndarray
    y: np.ndarray
    qid: np.ndarray

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        if self.y.shape != (n,) or self.qid.shape != (n,):
            raise ValueError(f"x has {n} rows but y {self.y.shape} and qid {self.qid.shape}")
        if n and np.any(np.diff(self.qid) < 0):
            raise ValueError("qid must be sorted (each query's rows contiguous)")


class RankerFitError(RuntimeError):
    """Fitting could not produce a model (no query with a positive, or no rows)."""


class Ranker:
    """A fitted booster and the feature names it expects, in order."""

    def __init__(self, booster: xgb.Booster, feature_names: Sequence[str]) -> None:
        self.booster = booster
        self.feature_names = tuple(feature_names)
        if booster.num_features() != len(self.feature_names):
            raise ValueError(
                f"booster has {booster.num_features()} features, spec names "
                f"{len(self.feature_names)}"
            )

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(n,) scores, higher is better; ``x`` (n, F) float32 in spec order."""
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ValueError(
                f"ranker expects (n, {len(self.feature_names)}) features; got {x.shape}"
            )
        if not len(x):
            return np.zeros(0, np.float32)
        return np.asarray(self.booster.inplace_predict(x, validate_features=False), np.float32)

    def importance(self, kind: str = "total_gain") -> dict[str, float]:
        """Feature -> share of ``kind`` (gain summed over splits), largest first."""
        raw = {
            k: float(v)
            for k, v in self.booster.get_score(importance_type=kind).items()
            if isinstance(v, int | float)
        }
        total = sum(raw.values()) or 1.0
        pairs = sorted(((k, v / total) for k, v in raw.items()), key=lambda kv: -kv[1])
        return {k: float(v) for k, v in pairs}

    def to_bytes(self) -> bytes:
        return bytes(self.booster.save_raw(raw_format="ubj"))

    @classmethod
    def from_bytes(cls, data: bytes, feature_names: Sequence[str], nthread: int = 1) -> Ranker:
        booster = xgb.Booster(params={"nthread": nthread})
        booster.load_model(bytearray(data))
        return cls(booster, feature_names)


def _dmatrix(data: RankingSet, names: Sequence[str], nthread: int) -> xgb.DMatrix:
    return xgb.DMatrix(
        data.x, label=data.y, qid=data.qid, feature_names=list(names), nthread=nthread
    )


def fit_ranker(
    train: RankingSet,
    valid: RankingSet,
    feature_names: Sequence[str],
    config: RankerConfig | None = None,
) -> tuple[Ranker, dict[str, Any]]:
    """Fit on ``train``, stop early on ``valid``'s NDCG; returns the ranker (truncated to its
    best round) and a record (config, rounds, the validation curve's best value)."""
    config = config or RankerConfig()
    for name, part in (("train", train), ("valid", valid)):
        if not len(part.y) or not part.y.any():
            raise RankerFitError(f"the {name} set has no query with a click ({len(part.y)} rows)")
    dtrain = _dmatrix(train, feature_names, config.nthread)
    dvalid = _dmatrix(valid, feature_names, config.nthread)
    curve: dict[str, dict[str, list[float]]] = {}
    booster = xgb.train(
        config.params(),
        dtrain,
        num_boost_round=config.n_rounds,
        evals=[(dtrain, "train"), (dvalid, "valid")],
        early_stopping_rounds=config.early_stopping,
        evals_result=curve,
        verbose_eval=False,
    )
    best = int(booster.best_iteration)
    booster = booster[: best + 1]  # keep the rounds early stopping chose
    metric = f"ndcg@{config.eval_at}"
    record = {
        "config": asdict(config),
        "rounds": best + 1,
        f"train/{metric}": float(curve["train"][metric][best]),
        f"valid/{metric}": float(curve["valid"][metric][best]),
    }
    stop = config.stop_metric
    if stop and stop != metric:
        record[f"valid/{stop}"] = float(curve["valid"][stop][best])
    return Ranker(booster, feature_names), record
