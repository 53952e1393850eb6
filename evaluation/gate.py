"""Champion/challenger gate: a challenger replaces the champion only on evidence.

On the same fresh holdout (the temporal protocol's ``test`` split of today's features) both
models rank the full catalogue for the same warm users. The challenger is promoted only if

1. its mean per-user ``metric`` (Recall@20) beats the champion's by at least ``min_delta``
   and the 95 % paired bootstrap interval of the per-user difference excludes zero;
2. no segment (age group, gender, country, tenure) with at least ``segment_min_users`` users
   loses more than ``segment_max_drop`` (absolute) of the metric;
3. its train/test gap is not flagged by the evaluation (``overfit_flags``).

Without a champion, the reference is most-popular on the same users: the first model to serve
must beat the simplest honest baseline by the same rules. Any recommender the registry can
build or load (a baseline name, or a run dir of a registered model such as the two-tower) can
be either side.

**Benchmarks.** ``run_gate(..., benchmarks=[...])`` also scores benchmark models (the peers,
with their tuned params when ``tastemaker tune`` saved some) on the same users; the best of
them by mean ``metric`` is a second reference, and the challenger is promoted only if it
passes the same rules against the champion *and* against that best benchmark
(``Decision.benchmark`` holds the second verdict and every benchmark's score). A challenger
kept out behind the best benchmark leaves that peer as the day's best system
(:func:`leading_benchmark`): the daily loop gates it against the champion by the same rules
(``Decision.instead``) and, promoted, serves it through precomputed slates (``jobs.peer``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from core.workspace import Workspace
from data.schemas import USER_SEGMENT_FIELDS
from evaluation.evaluate import _baseline_scorer, _rank_and_score, _run_scorer
from evaluation.registry import is_run_model, make_recommender
from evaluation.segments import collapse_rare
from evaluation.stats import paired_bootstrap
from evaluation.temporal import TemporalData, index_lists, load_temporal

log = logging.getLogger("tastemaker.evaluation")
# the peers the daily gate scores beside the challenger (jobs.daily.DailyConfig.benchmarks)
DEFAULT_BENCHMARKS = ("popular", "itemknn", "ease", "als")


@dataclass(frozen=True)
class GateConfig:
    metric: str = "recall@20"
    min_delta: float = 0.0  # the challenger's mean must exceed the champion's by this much
    n_boot: int = 1000
    level: float = 0.95
    segment_min_users: int = 30
    segment_max_drop: float = 0.05  # absolute drop of the metric in any large-enough segment
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.5 < self.level < 1.0:
            raise ValueError(f"GateConfig.level must be in (0.5, 1); got {self.level}")
        if self.n_boot < 100:
            raise ValueError(f"GateConfig.n_boot must be >= 100; got {self.n_boot}")


# (today's temporal data, metric) -> (U_warm,) per-user values: a contender scored by its owner
PerUser = Callable[[TemporalData, str], np.ndarray]


@dataclass(frozen=True)
class Contender:
    """A side of the comparison: a model name and, for run-dir models, its run dir.

    ``per_user`` scores a contender the registry cannot build (the daily loop's "two-tower +
    ranker", which lives in ``training``): it returns the per-user metric on the warm users
    in the order of ``np.flatnonzero(data.warm)``, as :func:`per_user_metric` does."""

    label: str
    model: str
    run_dir: Path | None = None
    per_user: PerUser | None = field(default=None, compare=False, repr=False)
    params: Mapping[str, Any] | None = None  # a baseline's config fields (tuned values)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str]
    metric: str
    n_users: int
    champion: str
    challenger: str
    champion_score: float
    challenger_score: float
    delta: float
    ci: tuple[float, float]
    segment_regressions: list[dict[str, Any]] = field(default_factory=list)
    # against the best benchmark: {"label", "model", "params", "scores": {label: mean},
    # "decision": that comparison's Decision.as_dict()}; empty without benchmarks
    benchmark: dict[str, Any] = field(default_factory=dict)
    # when the challenger was kept out trailing the best benchmark (leading_benchmark): that
    # peer's own gate against the champion (Decision.as_dict()); promoted, the peer serves
    instead: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        verdict = "PROMOTED" if self.promote else "KEPT OUT"
        line = (
            f"{verdict}: {self.challenger} vs {self.champion} on {self.n_users} users, "
            f"{self.metric} {self.challenger_score:.4f} vs {self.champion_score:.4f} "
            f"(delta {self.delta:+.4f}, 95% CI [{self.ci[0]:+.4f}, {self.ci[1]:+.4f}]); "
            + "; ".join(self.reasons)
        )
        if self.benchmark:
            b = self.benchmark["decision"]
            line += (
                f" | vs the best benchmark, {b['champion']}: {b['metric']} "
                f"{b['challenger_score']:.4f} vs {b['champion_score']:.4f} (delta "
                f"{b['delta']:+.4f}, 95% CI [{b['ci'][0]:+.4f}, {b['ci'][1]:+.4f}]); "
                + "; ".join(b["reasons"])
            )
        if self.instead:
            line += " | in its place, " + Decision(**self.instead).summary()
        return line


def per_user_metric(
    data: TemporalData, contender: Contender, metric: str, k: int = 100
) -> np.ndarray:
    """``(U_warm,)`` per-user ``metric`` of ``contender`` on ``data``'s warm users (NaN =
    no target), in the order of ``np.flatnonzero(data.warm)``."""
    if contender.per_user is not None:
        values = np.asarray(contender.per_user(data, metric), dtype=np.float64)
        if values.shape != (int(data.warm.sum()),):
            raise ValueError(
                f"{contender.label}: {values.shape} per-user values for "
                f"{int(data.warm.sum())} warm users"
            )
        return values
    if is_run_model(contender.model):
        if contender.run_dir is None:
            raise ValueError(f"{contender.label}: model {contender.model!r} needs a run dir")
        score_fn, artist_ids = _run_scorer(contender.model, contender.run_dir, data)
    else:
        model = make_recommender(contender.model, contender.params).fit(data.train)
        score_fn, artist_ids = _baseline_scorer(model, data), data.train.artist_ids
    seen = index_lists(data.users["seen"], artist_ids)
    targets = index_lists(data.users["targets"], artist_ids)
    warm = np.flatnonzero(data.warm)
    ks = [int(metric.split("@")[1])] if "@" in metric else [20]
    _, per_user = _rank_and_score(score_fn, artist_ids, warm, seen, targets, k, ks)
    if metric not in per_user:
        raise ValueError(f"unknown gate metric {metric!r}; have {sorted(per_user)}")
    return np.asarray(per_user[metric], dtype=np.float64)


def decide(
    champion: np.ndarray,
    challenger: np.ndarray,
    segments: Mapping[str, np.ndarray],
    config: GateConfig,
    labels: tuple[str, str] = ("champion", "challenger"),
    overfit: bool = False,
) -> Decision:
    """The gate's rules on aligned per-user values (NaN rows dropped on both sides)."""
    ok = ~(np.isnan(champion) | np.isnan(challenger))
    a, b = champion[ok], challenger[ok]
    if len(a) == 0:
        raise ValueError("the gate has no user with a target on both sides")
    diff = b - a
    lo, hi = paired_bootstrap(diff, config.n_boot, config.level, config.seed)
    delta = float(diff.mean())
    reasons: list[str] = []
    promote = True
    if delta < config.min_delta:
        promote = False
        reasons.append(
            f"mean {config.metric} delta {delta:+.4f} is below the margin {config.min_delta:+.4f}"
        )
    if lo <= 0.0:
        promote = False
        reasons.append(
            f"the {config.level:.0%} interval of the delta [{lo:+.4f}, {hi:+.4f}] "
            "does not exclude zero"
        )
    regressions: list[dict[str, Any]] = []
    for name, values in segments.items():
        vals = np.asarray(values)[ok]
        for value in np.unique(vals.astype(str)):
            mask = vals.astype(str) == value
            if mask.sum() < config.segment_min_users:
                continue
            drop = float(a[mask].mean() - b[mask].mean())
            if drop > config.segment_max_drop:
                regressions.append(
                    {
                        "segment": f"{name}={value}",
                        "n_users": int(mask.sum()),
                        "champion": float(a[mask].mean()),
                        "challenger": float(b[mask].mean()),
                    }
                )
    if regressions:
        promote = False
        worst = max(regressions, key=lambda r: r["champion"] - r["challenger"])
        reasons.append(
            f"{len(regressions)} segment(s) regress by more than "
            f"{config.segment_max_drop:.3f}, worst {worst['segment']} "
            f"({worst['challenger']:.4f} vs {worst['champion']:.4f}, "
            f"{worst['n_users']} users)"
        )
    if overfit:
        promote = False
        reasons.append("its train/test gap is flagged (train recall far above test)")
    if promote:
        reasons.append(
            f"wins by {delta:+.4f} with the interval above zero and no segment regressing"
        )
    return Decision(
        promote=promote,
        reasons=reasons,
        metric=config.metric,
        n_users=int(ok.sum()),
        champion=labels[0],
        challenger=labels[1],
        champion_score=float(a.mean()),
        challenger_score=float(b.mean()),
        delta=delta,
        ci=(lo, hi),
        segment_regressions=regressions,
    )


def run_gate(
    ws: Workspace,
    champion: Contender | None,
    challenger: Contender,
    config: GateConfig | None = None,
    overfit: bool = False,
    split: str = "test",
    benchmarks: Sequence[Contender] = (),
) -> Decision:
    """Score both on today's ``split`` and decide; no champion = most-popular as reference.
    With ``benchmarks`` the challenger must also pass the rules against the best of them
    (highest mean ``metric`` on the same users)."""
    config = config or GateConfig()
    reference = champion or Contender("most-popular (no champion yet)", "popular")
    data = load_temporal(ws, split)
    warm = np.flatnonzero(data.warm)
    seg = {f: data.users[f].to_numpy(zero_copy_only=False)[warm] for f in USER_SEGMENT_FIELDS}
    if "country" in seg:
        seg["country"] = collapse_rare(seg["country"])
    a = per_user_metric(data, reference, config.metric)
    b = per_user_metric(data, challenger, config.metric)
    decision = decide(a, b, seg, config, (reference.label, challenger.label), overfit)
    if benchmarks:
        decision = _against_benchmarks(data, decision, b, seg, config, challenger, benchmarks)
    log.info("gate: %s", decision.summary())
    return decision


def leading_benchmark(decision: Decision, benchmarks: Sequence[Contender]) -> Contender | None:
    """The best benchmark of ``decision`` when the challenger was kept out and trails it on
    the mean metric: the day's best system, which then faces the champion in the
    challenger's place (most-popular when there is none); None otherwise."""
    if decision.promote or not decision.benchmark:
        return None
    if decision.benchmark["decision"]["delta"] >= 0:  # the challenger is not behind it
        return None
    return next(c for c in benchmarks if c.label == decision.benchmark["label"])


def _against_benchmarks(
    data: TemporalData,
    decision: Decision,
    challenger_values: np.ndarray,
    seg: Mapping[str, np.ndarray],
    config: GateConfig,
    challenger: Contender,
    benchmarks: Sequence[Contender],
) -> Decision:
    """``decision`` (vs the champion) joined with the same rules against the best benchmark."""
    values = {c.label: per_user_metric(data, c, config.metric) for c in benchmarks}
    ok = ~np.isnan(challenger_values)
    scores = {label: float(np.nanmean(v[ok])) for label, v in values.items()}
    best = max(benchmarks, key=lambda c: scores[c.label])
    versus = decide(values[best.label], challenger_values, seg, config, (best.label, "challenger"))
    versus = replace(versus, challenger=challenger.label)
    record = {
        "label": best.label,
        "model": best.model,
        "params": dict(best.params or {}),
        "scores": scores,
        "decision": versus.as_dict(),
    }
    reasons = list(decision.reasons)
    if not versus.promote:
        reasons.append(f"it does not beat the best benchmark, {best.label}")
    return replace(
        decision, promote=decision.promote and versus.promote, reasons=reasons, benchmark=record
    )
