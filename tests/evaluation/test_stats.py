"""Interval statistics (evaluation.stats), on known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.stats import (
    diff_interval,
    mean_interval,
    needed_per_arm,
    paired_interval,
    wilson,
)


def test_wilson_known_answer_vectorised_and_scalar() -> None:
    lo, hi = wilson(np.array([5, 0]), np.array([10, 0]))
    assert lo[0] == pytest.approx(0.2366, abs=1e-4) and hi[0] == pytest.approx(0.7634, abs=1e-4)
    assert math.isnan(lo[1]) and math.isnan(hi[1])  # no trials: no interval
    slo, shi = wilson(5, 10)
    assert isinstance(slo, float) and (slo, shi) == (lo[0], hi[0])
    assert all(math.isnan(v) for v in wilson(0, 0))


def test_difference_interval_and_sample_size() -> None:
    d, lo, hi = diff_interval(10, 100, 20, 100)
    assert d == pytest.approx(0.1) and lo < 0.1 < hi and lo > 0  # 10 % vs 20 % of 100: clear
    assert needed_per_arm(0.1, 0.1) == float("inf")
    assert needed_per_arm(0.10, 0.12) == pytest.approx(3838, rel=1e-3)


def test_bootstrap_intervals_of_a_constant_are_a_point() -> None:
    v = np.full(50, 0.3)
    assert mean_interval(v, 200, 0) == pytest.approx({"mean": 0.3, "lo": 0.3, "hi": 0.3})
    d = paired_interval(v + 0.1, v, 200, 0)
    assert d == pytest.approx({"mean": 0.1, "lo": 0.1, "hi": 0.1})
    # and the check can fail: spread values get an interval of non-zero width around the mean
    spread = mean_interval(np.arange(50.0), 200, 0)
    assert spread["lo"] < spread["mean"] == 24.5 < spread["hi"]
