"""``core.memory.peak_rss_mb``: a child's own peak, not the one its parent carried in."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from core.memory import peak_rss_mb

_CHILD = (
    "import resource, sys; sys.path.insert(0, '.'); from core.memory import peak_rss_mb; "
    "print(peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
)


def test_a_child_reports_its_own_peak_not_its_parents():
    held = np.ones(600 * 2**20 // 8)  # 600 MiB touched here, then let go
    held.sum()
    assert peak_rss_mb() >= 600
    del held
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True)
    own, maxrss = (float(v) for v in out.stdout.split())
    # a bare interpreter and this module; ru_maxrss (``maxrss``) carries the parent's 600 MiB
    assert own < 300, f"child peak {own:.0f} MiB (ru_maxrss {maxrss:.0f})"
