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
from index.bundle import CURRENT, current_version, list_versions
from serving.metrics import set_bundle
from serving.model import ServingModel
from serving.periodic import Periodic

log = logging.getLogger("tastemaker.serving")


class ModelHolder:
    def __init__(self, source: Path, onnx_threads: int = 1, faiss_threads: int | None = 1) -> None:
        self.source = Path(source)  # a bundles dir (follows CURRENT) or one version folder
        self.onnx_threads = onnx_threads
        self.faiss_threads = faiss_threads
        self._lock = threading.Lock()  # one reload at a time; readers never take it
        self._failed: tuple[str, str] | None = None  # (version, why) of the last refused bundle
        self._current = self._load_at_start()
        set_bundle(self._current.version, self._current.created_at)

    @property
    def current(self) -> ServingModel:
        return self._current

    def _load(self, source: Path | None = None) -> ServingModel:
        return ServingModel.from_bundle(
            load_bundle(source or self.source), self.onnx_threads, self.faiss_threads
        )

    def _load_at_start(self) -> ServingModel:
        """The bundle CURRENT names; if it is corrupt, the newest valid one, loudly.

        A restart must not turn one bad publish into an outage while a good bundle is on disk;
        nor must a bad ``CURRENT`` (empty, binary, naming something outside the folder). A
        single version folder (no CURRENT) has nothing to fall back to and raises.
        """
        try:
            return self._load()
        except CorruptBundleError as exc:
            if not (self.source / CURRENT).is_file():
                raise
            try:
                named = current_version(self.source)
            except CorruptBundleError:
                named = None  # unreadable pointer: every published version is a candidate
            for version in reversed(list_versions(self.source)):
                if version == named:
                    continue
                try:
                    model = self._load(self.source / version)
                except CorruptBundleError:
                    continue
                log.error(
                    "CURRENT names %s, which cannot be served (%s); FELL BACK to the newest "
                    "valid bundle %s. Republish or fix CURRENT.",
                    named,
                    exc,
                    version,
                )
                return model
            raise

    def reload(self) -> tuple[bool, str, str]:
        """Load the bundle ``source`` points at now; (swapped, version, previous).

        A no-op (nothing loaded) when CURRENT names the served version, or when ``source`` is a
        single version folder. Loading and checking run in the caller's thread (the watcher,
        or the admin route's worker thread), never on the event loop; the swap is one rebind.

        Raises :class:`CorruptBundleError` (after logging it) when the new bundle is bad; the
        current one keeps serving.
        """
        with self._lock:
            previous = self._current.version
            pending = self.pending_version()
            if pending is None:
                return False, previous, previous  # already serving what CURRENT names: no-op
            if self._failed is not None and self._failed[0] == pending:
                raise CorruptBundleError(self._failed[1])  # checked once; versions are immutable
            try:
                fresh = self._load()
            except CorruptBundleError as exc:
                log.exception("refusing to swap to a corrupt bundle; still serving %s", previous)
                self._failed = (pending, str(exc))
                raise
            if fresh.version == previous:
                return False, previous, previous
            self._current = fresh  # atomic rebind; in-flight requests keep the old reference
            set_bundle(fresh.version, fresh.created_at)
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


class Watcher(Periodic):
    """Polls ``CURRENT`` every ``interval_s`` seconds in a daemon thread."""

    def __init__(self, holder: ModelHolder, interval_s: float) -> None:
        super().__init__("bundle-watcher", interval_s)
        self.holder = holder
        self._failed: str | None = None
        self._error: str | None = None  # the last error logged (logged once until it changes)

    def tick(self) -> None:
        try:
            self._check()
        except Exception as exc:  # a bad CURRENT, a disk error: log once, keep watching
            why = f"{type(exc).__name__}: {exc}"
            if why != self._error:
                log.error("bundle watcher: %s; still serving %s", why, self.holder.current.version)
                self._error = why
        else:
            self._error = None

    def _check(self) -> None:
        pending = self.holder.pending_version()
        if pending is None or pending == self._failed:
            return  # don't re-verify (and re-log) the same corrupt bundle every tick
        if not self.holder.check_for_update():
            self._failed = pending
