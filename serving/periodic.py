"""A daemon thread that calls ``tick()`` every ``interval_s`` seconds until stopped."""

from __future__ import annotations

import threading


class Periodic:
    """Subclasses implement :meth:`tick`; ``stop`` wakes the thread at once and joins it."""

    def __init__(self, name: str, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def tick(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()
