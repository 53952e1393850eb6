"""Per-segment metrics with user counts and bootstrap 95% intervals.

A segment's value is the mean of the per-user metric over its users; its interval comes from
resampling those users with replacement (percentile bootstrap). Resampling is one matrix
product per chunk of replicates: multinomial counts ``(R, n)`` @ per-user values ``(n, M)``,
so a segment of 100,000 users costs milliseconds, not a Python loop.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

TOP_COUNTRIES = 8
OTHER = "other"


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


def collapse_rare(values: np.ndarray, keep: int = TOP_COUNTRIES) -> np.ndarray:
    """Keep the ``keep`` most frequent values, others become ``"other"``."""
    uniq, counts = np.unique(values.astype(str), return_counts=True)
    top = set(uniq[np.argsort(-counts, kind="stable")[:keep]])
    return np.array([v if v in top else OTHER for v in values.astype(str)], dtype=object)


def segment_metrics(
    per_user: Mapping[str, np.ndarray],
    segments: Mapping[str, np.ndarray],
    n_boot: int = 500,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, object]]]:
    """``{field: {value: {"n_users": n, metric: [mean, lo, hi], ...}}}``.

    ``per_user`` maps metric name to ``(U,)`` values (NaN = user without target, skipped);
    ``segments`` maps field name to ``(U,)`` segment values of the same users.
    """
    names = sorted(per_user)
    values = np.stack([np.asarray(per_user[m], np.float64) for m in names], axis=1)  # (U, M)
    valid = ~np.isnan(values).any(axis=1)
    out: dict[str, dict[str, dict[str, object]]] = {}
    for field, seg in segments.items():
        seg = np.asarray(seg, dtype=object)
        seg = np.where(seg == None, "unknown", seg).astype(str)  # noqa: E711 (elementwise)
        table: dict[str, dict[str, object]] = {}
        for value in sorted(set(seg[valid])):
            members = valid & (seg == value)
            mean, lo, hi = bootstrap_ci(values[members], n_boot, seed)
            row: dict[str, object] = {"n_users": int(members.sum())}
            for j, m in enumerate(names):
                row[m] = [float(mean[j]), float(lo[j]), float(hi[j])]
            table[value] = row
        out[field] = table
    return out
