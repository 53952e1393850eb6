"""The packed-sort helpers give exactly numpy's lexsort / unique answers, ties in row order."""

from __future__ import annotations

import numpy as np
import pytest

from data.features.sort import (
    distinct_per_group,
    first_rows,
    lex_order,
    stable_order,
    unique_counts,
)


@pytest.mark.parametrize("high", [3, 40_000, 2**55])  # radix, packed, and too-wide fallback
def test_orders_equal_numpy_with_ties_in_row_order(high):
    rng = np.random.default_rng(1)
    key = rng.integers(-5, high, 3_000)
    ts = np.sort(rng.integers(0, 50, 3_000))  # many ties in (key, ts)
    assert (stable_order(key) == np.argsort(key, kind="stable")).all()
    assert (lex_order(key, ts) == np.lexsort((ts, key))).all()
    assert (first_rows(key) == np.unique(key, return_index=True)[1]).all()
    keys, counts = unique_counts(key)
    want_keys, want_counts = np.unique(key, return_counts=True)
    assert (keys == want_keys).all() and (counts == want_counts).all()


def test_distinct_per_group_counts_each_member_once():
    g = np.array([0, 0, 0, 2, 2, 1])
    h = np.array([5, 5, 1, 5, 5, 0])
    assert distinct_per_group(g, h, 4, 6).tolist() == [2, 1, 1, 0]
    assert stable_order(np.zeros(0, np.int64)).tolist() == []
