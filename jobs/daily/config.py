"""What a daily cycle runs with, where it writes, and the error a failed step raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from core.workspace import Workspace
from data.features.config import FeatureConfig
from evaluation.alarm import AlarmConfig
from evaluation.gate import DEFAULT_BENCHMARKS, GateConfig
from training.train_config import TrainConfig, lake_config

CHALLENGER_MODEL = "two-tower"


class DailyStepError(RuntimeError):
    """A step of the daily cycle failed; the bundle that was serving still serves."""

    def __init__(self, day: date, step: str, cause: BaseException) -> None:
        super().__init__(f"daily {day}: step '{step}' failed: {type(cause).__name__}: {cause}")
        self.day, self.step = day, step


@dataclass(frozen=True)
class DailyConfig:
    train: TrainConfig = field(default_factory=lake_config)  # what `tastemaker demo` trains
    features: FeatureConfig = field(default_factory=FeatureConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    alarm: AlarmConfig = field(default_factory=AlarmConfig)
    accounts_url: str | None = None  # the account table (default: the workspace's SQLite)
    registry_url: str | None = None  # default: evaluation.model_registry.default_registry_url
    warm_start: bool = False  # start the challenger from the champion's weights
    # fit the ranking stage against a no-refit two-tower and gate "retrieval + ranker" against
    # "retrieval alone" (off by default: it costs the two-tower the validation week, and on the
    # demo world the ranker loses Recall@20, docs/ranking.md)
    ranker: bool = False
    # fit the two-stage system (multi-source candidates + a ranker trained for discovery,
    # jobs.two_stage) for the challenger, with a no-refit sibling run; when it beats retrieval
    # alone on the test week it is the servable system the gate weighs against the champion
    # and the best benchmark (on by default: on the demo world it is the one system ahead of
    # the tuned ItemKNN; it costs a second two-tower fit and ~1 min per day)
    two_stage: bool = True
    # warm, then publish: precompute every user's slates for a promoted bundle before CURRENT
    # moves (serving.precompute.warm_and_publish); off: CURRENT moves at export, slates later
    warm_slates: bool = True
    slate_store_url: str | None = None  # default: the workspace's slate store (Settings)
    bundle_store_url: str | None = None  # the object store replicas pull bundles from
    slate_grace_s: float = 0.0  # after the switch, wait this long before removing old slates
    # the gate's second reference: the best of these peers, scored on the same users as the
    # challenger, with the params `tastemaker tune --dataset <tuned_on>` saved in the
    # workspace (their defaults otherwise); the challenger must beat the champion *and* it.
    # Empty: the champion alone (most-popular when there is none)
    benchmarks: tuple[str, ...] = DEFAULT_BENCHMARKS
    tuned_on: str = "demo"


def day_dir(ws: Workspace, day: date) -> Path:
    """``daily/<day>/``: the day's summary, report, engagement table and plots."""
    return ws.daily / day.isoformat()
