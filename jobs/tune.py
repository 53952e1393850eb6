"""Tune every model the same way: one validation protocol, one trial budget, one sampler.

``tastemaker tune --model als|ease|itemknn|two-tower|all --trials N --dataset demo|hetrec``
searches each model's space with optuna's TPE sampler (seeded) for ``N`` trials, the first
of which is always the model's current default, so a tuned model is never worse than its
default on validation. Every trial fits on the same training part and is scored by mean
per-user Recall@20 (NDCG@20 recorded too) on the same validation users; the test split is
never read:

* ``demo`` — the workspace's features (``tastemaker features``), the temporal protocol's
  *valid* split (:func:`evaluation.temporal.load_temporal`): fit on the ``train`` weeks,
  score the warm users of the validation week, seen artists excluded, full catalogue. The
  two-tower is the lake job that ``tastemaker demo`` and ``tastemaker daily`` serve
  (``lake_config``), trained without its refit in a scratch workspace beside the real one.
* ``hetrec`` — HetRec Last.fm 2K, the benchmark's per-user 80/20 split ``split_seed``
  (``data.importers.holdout_split``, as ``tastemaker import hetrec --split-seed``): only its
  *training* part is kept, and a ``val_fraction`` of every user's training artists
  (``evaluation.protocols.random_holdout``, ``val_seed``) is the validation set. The
  two-tower is ``TwoTowerRecommender`` with the artist tags, as ``tastemaker train
  --interactions train.tsv --artist-meta artists.tsv``.

Results go to ``<workspace>/tuning/<dataset>.json`` (:func:`save_results`): per model the
budget, the best params and value and every trial. The models' defaults are unchanged;
:func:`tuned_params` reads the file for whoever wants the tuned values (the daily gate's
benchmark peers, ``benchmarks/bench_tuned_*``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from core.atomic import write_json
from core.workspace import Workspace
from evaluation.evaluate import _baseline_scorer, _rank_and_score, _run_scorer
from evaluation.metrics import ranking_metrics
from evaluation.protocols import random_holdout
from evaluation.registry import TWO_TOWER, make_recommender
from evaluation.temporal import TemporalData, index_lists, load_temporal

log = logging.getLogger("tastemaker.tune")

MODELS = ("als", "ease", "itemknn", TWO_TOWER)
DATASETS = ("demo", "hetrec")
METRIC = "recall@20"
K = 100  # ranking depth scored (metrics at 20)

Params = dict[str, Any]


# --- search spaces ----------------------------------------------------------------------------
def suggest(model: str, trial: Any) -> Params:
    """One point of ``model``'s search space from an optuna trial."""
    if model == "als":
        return {
            "factors": trial.suggest_int("factors", 16, 256, log=True),
            "regularization": trial.suggest_float("regularization", 1e-3, 10.0, log=True),
            "alpha": trial.suggest_float("alpha", 0.5, 100.0, log=True),
        }
    if model == "ease":
        return {"l2": trial.suggest_float("l2", 10.0, 10_000.0, log=True)}
    if model == "itemknn":
        return {
            "neighbours": trial.suggest_int("neighbours", 10, 2000, log=True),
            "shrink": trial.suggest_float("shrink", 0.0, 200.0),
        }
    if model == TWO_TOWER:
        return {
            "lr": trial.suggest_float("lr", 1e-3, 3e-2, log=True),
            "temperature": trial.suggest_float("temperature", 0.03, 0.3, log=True),
            "history_keep": trial.suggest_float("history_keep", 0.3, 0.9),
        }
    raise ValueError(f"no search space for {model!r}; choose one of {MODELS}")


def defaults(model: str, dataset: str) -> Params:
    """The current default of every tuned field (the first trial of every study). ItemKNN's
    default keeps all neighbours; the search space's top (2,000) stands in for it."""
    from training.train_config import TrainConfig, lake_config

    if model == "als":
        from models.als import ALSConfig

        c = ALSConfig()
        return {"factors": c.factors, "regularization": c.regularization, "alpha": c.alpha}
    if model == "ease":
        from models.ease import EASEConfig

        return {"l2": EASEConfig().l2}
    if model == "itemknn":
        from models.itemknn import ItemKNNConfig

        return {"neighbours": 2000, "shrink": ItemKNNConfig().shrink}
    if model == TWO_TOWER:
        t = lake_config() if dataset == "demo" else TrainConfig()
        return {"lr": t.lr, "temperature": t.temperature, "history_keep": t.history_keep}
    raise ValueError(f"no defaults for {model!r}; choose one of {MODELS}")


def two_tower_config(dataset: str, params: Mapping[str, Any]) -> Any:
    """The two-tower's training config for ``dataset`` with ``params`` laid over it."""
    from training.train_config import TrainConfig, lake_config

    base = lake_config() if dataset == "demo" else TrainConfig()
    return dataclasses.replace(base, **params)


# --- validation protocols ---------------------------------------------------------------------
class Validation(Protocol):
    dataset: str

    def describe(self) -> dict[str, Any]: ...

    def score(self, model: str, params: Mapping[str, Any]) -> dict[str, float]:
        """Fit ``model`` with ``params`` on the training part; mean validation metrics."""
        ...


def _means(per_user: Mapping[str, np.ndarray]) -> dict[str, float]:
    return {m: float(np.nanmean(v)) for m, v in per_user.items()}


class TemporalValidation:
    """The demo world's protocol: the temporal ``valid`` split of a workspace's features."""

    dataset = "demo"

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.data: TemporalData = load_temporal(ws, "valid")
        self.warm = np.flatnonzero(self.data.warm)

    def describe(self) -> dict[str, Any]:
        return {
            "protocol": "temporal, split 'valid' (fit on the train weeks, score the validation "
            "week's warm users; the test split is never read)",
            "n_users": len(self.warm),
            "n_train_pairs": int(self.data.train.matrix.nnz),
        }

    def score(self, model: str, params: Mapping[str, Any]) -> dict[str, float]:
        if model == TWO_TOWER:
            return self._two_tower(params)
        rec = make_recommender(model, params).fit(self.data.train)
        return self._metrics(_baseline_scorer(rec, self.data), self.data.train.artist_ids)

    def _metrics(self, score_fn: Callable[[np.ndarray], np.ndarray], artist_ids: Any) -> dict:
        seen = index_lists(self.data.users["seen"], artist_ids)
        targets = index_lists(self.data.users["targets"], artist_ids)
        _, per_user = _rank_and_score(score_fn, artist_ids, self.warm, seen, targets, K, (20,))
        return _means(per_user)

    def _two_tower(self, params: Mapping[str, Any]) -> dict[str, float]:
        """The lake job without its refit (its checkpoint = the best validation epoch), in a
        scratch workspace whose ``features`` is the real one's: the real workspace's runs and
        ``LATEST`` pointer are untouched."""
        from training.train import train_two_tower

        cfg = dataclasses.replace(two_tower_config(self.dataset, params), refit=False)
        self.ws.tuning.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="trial-", dir=self.ws.tuning))
        try:
            (scratch / "features").symlink_to(self.ws.features.resolve(), True)
            run_dir = train_two_tower(Workspace(scratch), cfg)
            score_fn, artist_ids = _run_scorer(TWO_TOWER, run_dir, self.data)
            return self._metrics(score_fn, artist_ids)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


class HoldoutValidation:
    """HetRec's protocol: a validation slice of the training part of split ``split_seed``.

    Built from the training part only (:meth:`from_train`); :meth:`from_hetrec` splits the
    HetRec folder as the benchmark does and drops the test part before anything else."""

    dataset = "hetrec"

    def __init__(
        self,
        train: pa.Table,
        artist_tags: Mapping[str, Sequence[str]] | None,
        val_fraction: float = 0.1,
        val_seed: int = 1,
        split_seed: int = 0,
    ) -> None:
        from evaluation.runs import interactions_from_table

        self.split_seed, self.val_fraction, self.val_seed = split_seed, val_fraction, val_seed
        self.val = random_holdout(interactions_from_table(train), val_fraction, val_seed)
        self.rows = np.flatnonzero([len(t) for t in self.val.test])
        self.artist_tags = artist_tags

    @classmethod
    def from_hetrec(
        cls, folder: str | Path, split_seed: int = 0, val_fraction: float = 0.1, val_seed: int = 1
    ) -> HoldoutValidation:
        from data.importers import holdout_split, import_hetrec, write_artists
        from training.byod import read_artist_tags

        interactions, artists = import_hetrec(folder)
        train, _ = holdout_split(interactions, 0.2, split_seed)  # the test part is dropped here
        with tempfile.TemporaryDirectory() as tmp:  # the tags exactly as --artist-meta reads them
            write_artists(artists, Path(tmp) / "artists.tsv")
            tags = read_artist_tags(Path(tmp) / "artists.tsv")
        return cls(train, tags, val_fraction, val_seed, split_seed)

    def describe(self) -> dict[str, Any]:
        return {
            "protocol": f"per-user 80/20 split seed {self.split_seed}, training part only; "
            f"{self.val_fraction:.0%} of every user's training artists (seed {self.val_seed}) "
            "held out for validation",
            "split_seed": self.split_seed,
            "n_users": len(self.rows),
            "n_train_pairs": int(self.val.train.matrix.nnz),
        }

    def score(self, model: str, params: Mapping[str, Any]) -> dict[str, float]:
        if model == TWO_TOWER:
            from training.two_tower_recommender import TwoTowerRecommender

            rec: Any = TwoTowerRecommender(two_tower_config(self.dataset, params), self.artist_tags)
        else:
            rec = make_recommender(model, params)
        rec.fit(self.val.train)
        idx, _ = rec.recommend(self.rows, K)
        return ranking_metrics(idx, [self.val.test[u] for u in self.rows], ks=(20,))


# --- the study --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TuneConfig:
    trials: int = 10
    seed: int = 0  # the sampler's

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ValueError(f"trials must be >= 1; got {self.trials}")


def tune_model(validation: Validation, model: str, config: TuneConfig) -> dict[str, Any]:
    """``config.trials`` trials of ``model`` (the first = its defaults); the study's record."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=min(4, config.trials))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial(defaults(model, validation.dataset))
    trials: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        params = suggest(model, trial)
        started = time.perf_counter()
        metrics = validation.score(model, params)
        seconds = round(time.perf_counter() - started, 2)
        trials.append({"number": trial.number, "params": params, **metrics, "seconds": seconds})
        log.info("tune %s trial %d: %s -> %s %.4f (%.0f s)", model, trial.number, params,
                 METRIC, metrics[METRIC], seconds)  # fmt: skip
        return float(metrics[METRIC])

    study.optimize(objective, n_trials=config.trials)
    best = trials[study.best_trial.number]
    return {
        "trials": config.trials,
        "sampler": f"optuna TPE, seed {config.seed}; trial 0 = the defaults",
        "metric": f"valid/{METRIC}",
        "best_params": best["params"],
        "best_value": best[METRIC],
        "best": {k: v for k, v in best.items() if k not in ("params", "number")},
        "default": {k: v for k, v in trials[0].items() if k not in ("number",)},
        "history": trials,
    }


def results_path(ws: Workspace, dataset: str) -> Path:
    return ws.tuning / f"{dataset}.json"


def load_results(ws: Workspace, dataset: str) -> dict[str, Any]:
    path = results_path(ws, dataset)
    return json.loads(path.read_text()) if path.is_file() else {}


def save_results(ws: Workspace, dataset: str, record: Mapping[str, Any]) -> Path:
    """Merge ``record`` (``{"validation": ..., "models": {model: study}}``) into the dataset's
    file: models tuned before and not now keep their entries."""
    path = results_path(ws, dataset)
    current = load_results(ws, dataset)
    models = {**current.get("models", {}), **record["models"]}
    write_json(path, {"dataset": dataset, "validation": record["validation"], "models": models})
    return path


def tuned_params(ws: Workspace, dataset: str, model: str) -> Params | None:
    """The best params ``tastemaker tune`` saved for ``model`` on ``dataset``, or None."""
    study = load_results(ws, dataset).get("models", {}).get(model)
    return None if study is None else dict(study["best_params"])


def make_validation(
    ws: Workspace, dataset: str, hetrec_path: str | Path | None = None, split_seed: int = 0
) -> Validation:
    if dataset == "demo":
        return TemporalValidation(ws)
    if dataset == "hetrec":
        if hetrec_path is None:
            from data.datasets import hetrec_dir

            hetrec_path = hetrec_dir()  # the default data folder (the CLI passes its own)
        if hetrec_path is None:
            raise FileNotFoundError("HetRec 2K not found under ../shared/data/lastfm-hetrec-2k")
        return HoldoutValidation.from_hetrec(hetrec_path, split_seed)
    raise ValueError(f"dataset must be one of {DATASETS}; got {dataset!r}")


def run_tuning(
    ws: Workspace,
    validation: Validation,
    models: Sequence[str],
    config: TuneConfig,
) -> dict[str, Any]:
    """Tune ``models`` with the same budget on ``validation``; save and return the record."""
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"cannot tune {unknown}; choose from {MODELS}")
    record: dict[str, Any] = {"validation": validation.describe(), "models": {}}
    for model in models:
        record["models"][model] = tune_model(validation, model, config)
        # saved after every model: an interrupted `--model all` keeps the finished studies
        record["path"] = str(save_results(ws, validation.dataset, record))
    return record


def format_table(record: Mapping[str, Any]) -> str:
    """Markdown: per model its default and best validation Recall@20 / NDCG@20 and params."""
    lines = [
        "| model | trials | valid R@20 default | valid R@20 tuned | valid N@20 tuned | best params |",
        "|---|---|---|---|---|---|",
    ]
    for model, s in record["models"].items():
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in s["best_params"].items()
        )
        lines.append(
            f"| {model} | {s['trials']} | {s['default']['recall@20']:.4f} | "
            f"{s['best']['recall@20']:.4f} | {s['best']['ndcg@20']:.4f} | {params} |"
        )
    return "\n".join(lines)
