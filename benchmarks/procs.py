"""Peak resident memory of a process and everything it started (sampled from ``/proc``).

A Spark build is three kinds of process (the Python driver, the JVM, Python workers) and the
world generator forks workers: ``ru_maxrss`` of one of them says little, so the benchmarks
sample the whole tree."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def tree_rss(pid: int) -> tuple[int, int]:
    """(sum, max) resident bytes of ``pid`` and its descendants, now."""
    total = largest = 0
    stack = [pid]
    page = os.sysconf("SC_PAGE_SIZE")
    while stack:
        p = stack.pop()
        try:
            rss = int(Path(f"/proc/{p}/statm").read_text().split()[1]) * page
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except (OSError, IndexError, ValueError):
            continue
        total, largest = total + rss, max(largest, rss)
        stack.extend(int(c) for c in children)
    return total, largest


class TreePeak:
    """Samples :func:`tree_rss` of ``pid`` every ``every`` seconds until :meth:`stop`;
    ``tree`` and ``largest`` hold the peaks seen (bytes)."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.tree = self.largest = 0
        self._pid, self._every = pid, every
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self._every):
            tree, largest = tree_rss(self._pid)
            self.tree, self.largest = max(self.tree, tree), max(self.largest, largest)

    def stop(self) -> TreePeak:
        self._done.set()
        self._thread.join()
        return self
