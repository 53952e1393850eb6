"""This process's peak resident memory, as the kernel counts it for its own address space."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    """Peak RSS since this process's exec, in MiB (``VmHWM``). ``ru_maxrss`` is no use for a
    child: Linux carries the parent's peak into it across ``vfork`` + ``exec`` (a benchmark
    that built a 100 M-event lake, then started a build, saw the lake's 6.9 GB as the build's
    peak). Falls back to ``ru_maxrss`` where ``/proc`` is missing."""
    try:
        for row in Path("/proc/self/status").read_text().splitlines():
            if row.startswith("VmHWM:"):
                return int(row.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
