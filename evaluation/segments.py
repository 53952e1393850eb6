"""Per-segment metrics with user counts and bootstrap 95% intervals.

A segment's value is the mean of the per-user metric over its users; its interval comes from
resampling those users with replacement (``evaluation.stats.bootstrap_ci``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from evaluation.stats import bootstrap_ci

TOP_COUNTRIES = 8
OTHER = "other"


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
