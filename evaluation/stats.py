"""Interval statistics, written once: Wilson intervals of rates, the normal interval of a
difference of rates and its sample size, and percentile bootstrap intervals of means.

Bootstrap resampling of many columns is one matrix product per chunk of replicates:
multinomial counts ``(R, n)`` @ per-user values ``(n, M)``, so 100,000 users cost
milliseconds, not a Python loop.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

Z95, Z80 = 1.959964, 0.841621


def wilson(successes: Any, trials: Any, z: float = 1.96) -> tuple[Any, Any]:
    """Wilson score interval of ``successes / trials``: vectorised over arrays (NaN where no
    trials); plain floats for scalar ``trials``."""
    n = np.asarray(trials, dtype=np.float64)
    p = np.divide(successes, n, out=np.full(n.shape, np.nan), where=n > 0)
    denom = 1 + z**2 / np.maximum(n, 1)
    centre = (p + z**2 / (2 * np.maximum(n, 1))) / denom
    half = z * np.sqrt(p * (1 - p) / np.maximum(n, 1) + z**2 / (4 * np.maximum(n, 1) ** 2)) / denom
    if n.ndim == 0:
        return float(centre - half), float(centre + half)
    return centre - half, centre + half


def diff_interval(s1: float, n1: float, s2: float, n2: float) -> tuple[float, float, float]:
    """(p2 - p1, lower, upper): the normal-approximation 95 % interval of a difference."""
    p1, p2 = s1 / n1, s2 / n2
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return p2 - p1, p2 - p1 - Z95 * se, p2 - p1 + Z95 * se


def needed_per_arm(p1: float, p2: float) -> float:
    """Trials per arm to detect ``p1`` vs ``p2`` (two-sided 5 %, power 80 %)."""
    if p1 == p2:
        return float("inf")
    return (Z95 + Z80) ** 2 * (p1 * (1 - p1) + p2 * (1 - p2)) / (p1 - p2) ** 2


def bootstrap_ci(
    values: np.ndarray, n_boot: int = 500, seed: int = 0, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, lower and upper bound per column of ``values`` ``(n, M)``."""
    n = values.shape[0]
    mean = values.mean(axis=0)
    if n < 2:
        return mean, mean.copy(), mean.copy()
    rng = np.random.default_rng(seed)
    means = []
    chunk = max(1, min(n_boot, 5_000_000 // n))
    for start in range(0, n_boot, chunk):
        r = min(chunk, n_boot - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=r).astype(np.float64)  # (r, n)
        means.append(counts @ values / n)  # (r, M)
    boot = np.concatenate(means)  # (R, M)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(boot, [tail, 100 - tail], axis=0)
    return mean, lo, hi


def paired_bootstrap(diff: np.ndarray, n_boot: int, level: float, seed: int) -> tuple[float, float]:
    """Percentile interval of the mean of ``diff`` (users resampled with replacement)."""
    rng = np.random.default_rng(seed)
    n = len(diff)
    if n < 2:
        return float(diff.mean()), float(diff.mean())
    idx = rng.integers(0, n, size=(n_boot, n))  # (R, n)
    means = diff[idx].mean(axis=1)  # (R,)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def mean_interval(values: np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    """``{"mean", "lo", "hi"}``: the mean of ``values`` ``(n,)`` with its 95 % bootstrap interval."""
    mean, lo, hi = bootstrap_ci(values[:, None].astype(np.float64), n_boot, seed)
    return {"mean": float(mean[0]), "lo": float(lo[0]), "hi": float(hi[0])}


def paired_interval(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    """``{"mean", "lo", "hi"}``: the mean of ``a - b`` (paired, per user) with its 95 % interval."""
    d = (a - b).astype(np.float64)
    lo, hi = paired_bootstrap(d, n_boot, 0.95, seed)
    return {"mean": float(d.mean()), "lo": lo, "hi": hi}
