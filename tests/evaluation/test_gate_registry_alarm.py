"""The gate's rules, the model registry (SQLite and PostgreSQL) and the alarm, on known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.alarm import AlarmConfig, check
from evaluation.gate import GateConfig, decide
from evaluation.model_registry import ModelRecord, RegistryError, open_registry
from evaluation.stats import paired_bootstrap

CFG = GateConfig(n_boot=500, segment_min_users=50, segment_max_drop=0.05)


def _users(n: int, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.1, 0.4, n)
    return base, {"gender": np.where(np.arange(n) % 2 == 0, "f", "m")}


def test_a_clear_win_is_promoted() -> None:
    champion, seg = _users(400)
    decision = decide(champion, champion + 0.03, seg, CFG)
    assert decision.promote and decision.ci[0] > 0 and decision.delta == pytest.approx(0.03)


def test_a_tie_within_noise_is_kept_out() -> None:
    champion, seg = _users(400)
    noise = np.random.default_rng(1).normal(0, 0.1, 400)
    decision = decide(champion, champion + noise, seg, CFG)
    assert not decision.promote
    assert any("does not exclude zero" in r for r in decision.reasons)


def test_a_win_that_hurts_one_segment_is_kept_out() -> None:
    champion, seg = _users(400)
    challenger = champion + np.where(seg["gender"] == "m", 0.15, -0.06)
    decision = decide(champion, challenger, seg, CFG)
    assert decision.delta > 0 and decision.ci[0] > 0
    assert not decision.promote
    assert [r["segment"] for r in decision.segment_regressions] == ["gender=f"]


def test_an_overfit_challenger_is_kept_out_and_nan_users_are_dropped() -> None:
    champion, seg = _users(400)
    challenger = champion + 0.05
    champion[:10] = np.nan
    decision = decide(champion, challenger, seg, CFG, overfit=True)
    assert not decision.promote and decision.n_users == 390
    assert any("gap" in r for r in decision.reasons)


def test_paired_bootstrap_covers_the_mean() -> None:
    diff = np.random.default_rng(2).normal(0.02, 0.05, 2000)
    lo, hi = paired_bootstrap(diff, 1000, 0.95, 0)
    assert lo < diff.mean() < hi and lo > 0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.sqlite'}"
    return request.getfixturevalue("postgres_url")


def test_registry_promote_and_rollback(registry_url) -> None:
    with open_registry(registry_url) as reg:
        for i in range(3):
            reg.register(
                ModelRecord(
                    run_id=f"r{i}",
                    model="two-tower",
                    day=f"2024-03-0{i + 1}",
                    created_at=f"2024-03-0{i + 1}T00:00:00+00:00",
                    metrics={"two-tower": {"test/recall@20": 0.2 + i / 100}},
                )
            )
        assert reg.champion() is None
        with pytest.raises(RegistryError, match="no champion"):
            reg.rollback()
        reg.promote("r0")
        reg.set_bundle("r0", "v0")
        assert reg.promote("r1").run_id == "r0"
        reg.set_bundle("r1", "v1")
        reg.set_decision("r2", "rejected", {"promote": False, "reasons": ["worse"]})
        assert {r.run_id: r.status for r in reg.runs()} == {
            "r0": "retired",
            "r1": "champion",
            "r2": "rejected",
        }
        demoted, restored = reg.rollback()
        assert (demoted.run_id, demoted.status) == ("r1", "rejected")
        assert (restored.run_id, restored.status, restored.bundle_version) == (
            "r0",
            "champion",
            "v0",
        )
        assert reg.get("r2").decision == {"promote": False, "reasons": ["worse"]}
        with pytest.raises(RegistryError, match="'nope'"):
            reg.get("nope")
    with open_registry(registry_url) as reg:  # persisted
        assert reg.champion().run_id == "r0"


def _eng(days: int, ctr: dict[str, list[float]], impressions: int = 1000) -> pd.DataFrame:
    rows = []
    for seg, values in ctr.items():
        for d in range(days):
            clicks = round(values[d] * impressions / 100)
            rows.append(
                {
                    "date": f"2024-03-{d + 1:02d}",
                    "version": "*",
                    "segment": seg,
                    "impressions": impressions,
                    "clicks": clicks,
                    "ctr": values[d],
                    "stream_through": 0.8,
                    "follow_rate": 0.3,
                }
            )
    return pd.DataFrame(rows)


def test_alarm_fires_for_the_collapsed_segment_only() -> None:
    rng = np.random.default_rng(0)
    steady = list(7 + rng.normal(0, 0.3, 10))
    eng = _eng(
        10,
        {
            "all=all": steady,
            "country=DE": [*steady[:9], 1.0],
            "country=FR": [*steady[:9], steady[9] - 0.4],
        },
    )
    alarms = check(eng, "2024-03-10", AlarmConfig())
    assert [(a.segment, a.metric) for a in alarms] == [("country=DE", "ctr")]
    assert "country=DE" in alarms[0].line()
    assert check(eng, "2024-03-09", AlarmConfig()) == []


def test_alarm_needs_enough_trials_and_history() -> None:
    eng = _eng(10, {"country=DE": [7.0] * 9 + [0.0]}, impressions=50)
    assert check(eng, "2024-03-10", AlarmConfig(min_trials=100)) == []
    eng = _eng(3, {"country=DE": [7.0, 7.0, 0.0]})
    assert check(eng, "2024-03-03", AlarmConfig(min_days=4)) == []
