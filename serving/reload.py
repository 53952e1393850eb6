"""Hot swap: replace the served bundle without dropping or tearing a request.

Each request reads ``holder.current`` once and uses that :class:`ServingModel` to the end; a
swap only rebinds the reference, so the old bundle stays alive (Python keeps it referenced)
until the last request holding it finishes. A bundle that fails verification is never swapped
in: the old one keeps serving and the failure is logged.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from index import CorruptBundleError, load_bundle
from index.bundle import current_version
from serving.model import ServingModel

log = logging.getLogger("tastemaker.serving")


class ModelHolder:
    def __init__(self, source: Path, onnx_threads: int = 1, faiss_threads: int = 1) -> None:
        self.source = Path(source)  # a bundles dir (follows CURRENT) or one version folder
        self.onnx_threads = onnx_threads
        self.faiss_threads = faiss_threads
        self._lock = threading.Lock()  # one reload at a time; readers never take it
        self._current = self._load()

    @property
    def current(self) -> ServingModel:
        return self._current

    def _load(self) -> ServingModel:
        return ServingModel.from_bundle(
            load_bundle(self.source), self.onnx_threads, self.faiss_threads
        )

    def reload(self) -> tuple[bool, str, str]:
        """Load the bundle ``source`` points at now; (swapped, version, previous).

        Raises :class:`CorruptBundleError` (after logging it) when the new bundle is bad; the
        current one keeps serving.
        """
        with self._lock:
            previous = self._current.version
            try:
                fresh = self._load()
            except CorruptBundleError:
                log.exception("refusing to swap to a corrupt bundle; still serving %s", previous)
                raise
            if fresh.version == previous:
                return False, previous, previous
            self._current = fresh  # atomic rebind; in-flight requests keep the old reference
            log.info("swapped bundle %s -> %s", previous, fresh.version)
            return True, fresh.version, previous

    def pending_version(self) -> str | None:
        """The version CURRENT names when it differs from the served one, else None."""
        named = current_version(self.source)
        return named if named and named != self._current.version else None

    def check_for_update(self) -> bool:
        """Swap if CURRENT moved; what the background watcher calls. True when swapped."""
        if self.pending_version() is None:
            return False
        try:
            return self.reload()[0]
        except CorruptBundleError:
            return False


class Watcher:
    """Polls ``CURRENT`` every ``interval_s`` seconds in a daemon thread."""

    def __init__(self, holder: ModelHolder, interval_s: float) -> None:
        self.holder = holder
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bundle-watcher", daemon=True)
        self._failed: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            pending = self.holder.pending_version()
            if pending is None or pending == self._failed:
                continue  # don't re-verify (and re-log) the same corrupt bundle every tick
            if not self.holder.check_for_update():
                self._failed = pending
