"""The gate against the best benchmark: the challenger must beat the champion *and* the best
benchmark peer, scored on the same users of today's holdout; every benchmark is recorded."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from core.workspace import Workspace
from data.features.build import FeatureConfig, build_features
from data.ingest.job import run_ingest
from evaluation.gate import Contender, GateConfig, per_user_metric, run_gate
from evaluation.model_registry import ModelRecord, RegistryError, open_registry
from evaluation.temporal import TemporalData, load_temporal
from world.config import WorldConfig
from world.generate import generate_world

CONFIG = GateConfig(n_boot=200, segment_min_users=10_000)  # segments: not this test's subject


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    mp = pytest.MonkeyPatch()
    mp.setenv("TASTEMAKER_DEMO", "1")
    mp.delenv("TASTEMAKER_PSEUDONYM_KEY", raising=False)
    ws = Workspace(tmp_path_factory.mktemp("gate") / "ws").ensure()
    generate_world(ws, WorldConfig.tiny(seed=3))
    run_ingest(ws)
    build_features(ws, FeatureConfig())
    mp.undo()
    return ws


def _fixed(label: str, offset: float) -> Contender:
    """A contender whose per-user values are a user-dependent base plus ``offset``: known
    answers for the comparison, on the real holdout's users."""

    def per_user(data: TemporalData, metric: str) -> np.ndarray:
        n = int(data.warm.sum())
        base = np.random.default_rng(1).uniform(0.0, 0.5, n)
        return base + offset

    return Contender(label, "fixed", per_user=per_user)


def test_a_challenger_that_beats_the_champion_but_not_the_best_benchmark_is_kept_out(ws):
    champion, challenger = _fixed("champion", 0.0), _fixed("challenger", 0.1)
    alone = run_gate(ws, champion, challenger, CONFIG)
    assert alone.promote and alone.benchmark == {}

    weak, strong = _fixed("weak peer", 0.05), _fixed("strong peer", 0.2)
    d = run_gate(ws, champion, challenger, CONFIG, benchmarks=[weak, strong])
    assert not d.promote
    assert d.benchmark["label"] == "strong peer"  # the best of the benchmarks is the reference
    assert d.benchmark["scores"]["strong peer"] == pytest.approx(
        d.benchmark["scores"]["weak peer"] + 0.15
    )
    versus = d.benchmark["decision"]
    assert not versus["promote"] and versus["delta"] == pytest.approx(-0.1)
    assert any("best benchmark, strong peer" in r for r in d.reasons)
    assert "vs the best benchmark, strong peer" in d.summary()
    # the champion comparison itself is unchanged
    assert (d.delta, d.champion_score) == (alone.delta, alone.champion_score)


def test_a_challenger_ahead_of_champion_and_every_benchmark_is_promoted(ws):
    bench = [_fixed("peer a", 0.02), _fixed("peer b", 0.04)]
    d = run_gate(ws, _fixed("champion", 0.0), _fixed("challenger", 0.1), CONFIG, benchmarks=bench)
    assert d.promote
    assert d.benchmark["label"] == "peer b" and d.benchmark["decision"]["promote"]
    assert d.benchmark["decision"]["delta"] == pytest.approx(0.06)


def test_benchmarks_with_tuned_params_are_scored_on_the_same_users(ws):
    data = load_temporal(ws, "test")
    tuned = Contender("benchmark ease (tuned)", "ease", params={"l2": 3.0})
    default = Contender("benchmark ease", "ease")
    a = per_user_metric(data, tuned, "recall@20")
    b = per_user_metric(data, default, "recall@20")
    assert a.shape == b.shape == (int(data.warm.sum()),)
    assert not np.allclose(a, b, equal_nan=True)  # the params reached the model
    d = run_gate(ws, None, Contender("challenger", "itemknn"), CONFIG, benchmarks=[tuned, default])
    ok = ~np.isnan(per_user_metric(data, Contender("c", "itemknn"), "recall@20"))
    assert d.benchmark["scores"]["benchmark ease (tuned)"] == pytest.approx(np.nanmean(a[ok]))
    assert d.benchmark["scores"]["benchmark ease"] == pytest.approx(np.nanmean(b[ok]))
    assert d.champion.startswith("most-popular")


def test_benchmark_rows_are_recorded_and_never_promoted(tmp_path, ws):
    from jobs.daily.publish import benchmark_records

    bench = [_fixed("peer a", 0.02), _fixed("peer b", 0.2)]
    bench = [
        dataclasses.replace(bench[0], model="itemknn"),
        dataclasses.replace(bench[1], model="ease"),
    ]
    d = run_gate(ws, _fixed("champion", 0.0), _fixed("challenger", 0.1), CONFIG, benchmarks=bench)
    base = ModelRecord(run_id="run1", model="two-tower", day="2024-04-14")
    rows = benchmark_records(base, d, bench)
    assert [(r.run_id, r.model, r.status) for r in rows] == [
        ("run1~itemknn", "itemknn", "benchmark"),
        ("run1~ease", "ease", "benchmark"),
    ]
    assert rows[1].decision["best_benchmark"] and not rows[0].decision["best_benchmark"]
    assert rows[1].metrics["ease"]["test/recall@20"] == d.benchmark["scores"]["peer b"]
    with open_registry(f"sqlite:///{tmp_path / 'r.sqlite'}") as registry:
        registry.register(base)
        for row in rows:
            registry.register(row)
        assert {r.run_id for r in registry.runs(status="benchmark")} == {
            "run1~itemknn",
            "run1~ease",
        }
        with pytest.raises(RegistryError, match="benchmark"):
            registry.promote("run1~ease")
        assert registry.champion() is None


def test_the_best_benchmark_takes_the_place_of_a_challenger_that_trails_it(ws):
    """The peer ahead of a kept-out challenger is the day's best system and faces the champion
    itself; a challenger kept out for another reason, or not behind the peer, leaves none."""
    from dataclasses import replace

    from evaluation.gate import Decision, leading_benchmark

    weak, strong = _fixed("weak peer", 0.05), _fixed("strong peer", 0.2)
    behind = run_gate(ws, None, _fixed("challenger", 0.1), CONFIG, benchmarks=[weak, strong])
    assert leading_benchmark(behind, [weak, strong]) is strong
    instead = run_gate(ws, None, strong, CONFIG)  # what the daily loop runs in its place
    line = replace(behind, instead=instead.as_dict()).summary()
    assert line.startswith("KEPT OUT") and f"in its place, {instead.summary()}" in line
    assert Decision(**instead.as_dict()) == instead

    ahead = run_gate(ws, None, _fixed("challenger", 0.3), CONFIG, benchmarks=[weak, strong])
    assert ahead.promote and leading_benchmark(ahead, [weak, strong]) is None
    tied = run_gate(ws, None, _fixed("challenger", 0.2), CONFIG, benchmarks=[weak, strong])
    assert not tied.promote and leading_benchmark(tied, [weak, strong]) is None
    assert leading_benchmark(run_gate(ws, None, strong, CONFIG), []) is None
