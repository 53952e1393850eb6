"""Bundles in an object store: published once by the promoting job, pulled by every replica.

A replica keeps no state of its own: with ``bundle_store_url`` set (``s3://bucket/bundles``
through s3fs, ``file:///shared/bundles``, ``memory://…`` in tests: any fsspec URL, via
:class:`data.ingest.objectstore.ObjectStore`) its bundles folder is only a cache. The layout in
the store is the local one (``<version>/<file>``, ``<version>/manifest.json``, ``CURRENT``):

* :func:`push_bundle` uploads a verified version folder, the manifest last (a version without
  its manifest is not complete); :func:`set_remote_current` then names it (one PUT).
* :class:`BundleMirror` pulls what the store's ``CURRENT`` names into a hidden temp folder,
  verifies every file against the manifest's sha256 (:func:`index.load_bundle`), renames it
  into place and only then moves the local ``CURRENT``, which the service's watcher follows. A
  bundle that fails its checksum is refused (logged once, never swapped in): the replica keeps
  serving its bundle, or, at start, waits for a good one (:meth:`BundleMirror.wait`).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from core.settings import Settings
from core.urls import redact_url
from data.ingest.objectstore import ObjectStore
from index import CorruptBundleError, load_bundle
from index.bundle import CURRENT, MANIFEST, current_version, prune_bundles, set_current
from serving.periodic import Periodic

log = logging.getLogger("tastemaker.serving")
LOCAL_KEEP = 2  # the served bundle and the one before (in-flight requests, a quick rollback)


def _safe(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise CorruptBundleError(f"bundle store names {name!r}, which is not a plain file name")
    return name


def push_bundle(store: ObjectStore, version_dir: Path) -> str:
    """Upload a local version folder (verified first); the manifest goes last. Its version."""
    bundle = load_bundle(version_dir)
    version = _safe(bundle.version)
    for name in bundle.files:
        store.write_bytes(f"{version}/{_safe(name)}", (bundle.path / name).read_bytes())
    store.write_bytes(f"{version}/{MANIFEST}", (bundle.path / MANIFEST).read_bytes())
    log.info("pushed bundle %s to %s", version, redact_url(store.url))
    return version


def set_remote_current(store: ObjectStore, version: str) -> None:
    """Name ``version`` (already pushed) as the store's current bundle."""
    if not store.exists(f"{_safe(version)}/{MANIFEST}"):
        raise FileNotFoundError(f"bundle {version} was never pushed to {redact_url(store.url)}")
    store.write_bytes(CURRENT, f"{version}\n".encode())
    log.info("bundle store %s: CURRENT -> %s", redact_url(store.url), version)


def point_store_at(url: str, bundles_dir: Path, version: str) -> None:
    """Make the store at ``url`` serve ``version`` of ``bundles_dir`` (a manual promote or a
    rollback): pushed first when the store lacks it, then its ``CURRENT``."""
    store = ObjectStore(url)
    if not store.exists(f"{_safe(version)}/{MANIFEST}"):
        push_bundle(store, Path(bundles_dir) / version)
    set_remote_current(store, version)


def remote_current(store: ObjectStore) -> str | None:
    if not store.exists(CURRENT):
        return None
    return store.read_bytes(CURRENT).decode().strip() or None


def pull_bundle(store: ObjectStore, version: str, local_dir: Path) -> Path:
    """Download ``version`` into ``local_dir/<version>`` and verify it; a valid copy already
    there is kept. Raises :class:`CorruptBundleError` (nothing left behind) when a file fails
    its checksum or the manifest is unreadable."""
    local_dir.mkdir(parents=True, exist_ok=True)
    final = local_dir / _safe(version)
    if (final / MANIFEST).is_file():
        try:
            load_bundle(final)
            return final
        except CorruptBundleError:
            shutil.rmtree(final, ignore_errors=True)  # a damaged cache: fetch it again
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=local_dir))
    try:
        raw = store.read_bytes(f"{version}/{MANIFEST}")
        try:
            manifest = json.loads(raw)
            names = list(manifest["files"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptBundleError(f"bundle {version}: unreadable manifest: {exc}") from exc
        for name in names:
            (tmp / _safe(name)).write_bytes(store.read_bytes(f"{version}/{name}"))
        (tmp / MANIFEST).write_bytes(raw)
        bundle = load_bundle(tmp)  # every file against its sha256
        if bundle.version != version:
            raise CorruptBundleError(f"bundle folder {version} holds version {bundle.version}")
        try:
            tmp.rename(final)
        except OSError:  # another worker process of this replica put it in place first
            if not (final / MANIFEST).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


class BundleMirror:
    """Keeps ``local_dir`` (the service's bundles folder) on the store's ``CURRENT``."""

    def __init__(self, url: str, local_dir: Path) -> None:
        self.store = ObjectStore(url)
        self.local_dir = Path(local_dir)
        self.refused: dict[str, str] = {}  # version -> why (versions are immutable: once)

    def sync(self) -> bool:
        """Pull and switch to the store's current bundle; True when the local ``CURRENT``
        moved. A corrupt bundle is refused (False), the local one stays."""
        version = remote_current(self.store)
        if version is None or version == current_version(self.local_dir):
            return False
        if version in self.refused:
            return False
        started = time.perf_counter()
        try:
            pull_bundle(self.store, version, self.local_dir)
        except CorruptBundleError as exc:
            self.refused[version] = str(exc)
            log.error("refusing bundle %s from the bundle store: %s", version, exc)
            return False
        set_current(self.local_dir, version)
        prune_bundles(self.local_dir, LOCAL_KEEP)
        log.info("pulled bundle %s in %.2f s", version, time.perf_counter() - started)
        return True

    def has_good_bundle(self) -> bool:
        try:
            load_bundle(self.local_dir)
        except (CorruptBundleError, FileNotFoundError):
            return False
        return True

    def wait(self, timeout_s: float, interval_s: float = 1.0) -> None:
        """At start: sync, and wait until a verified bundle is in place (one pulled, or one
        already cached); raise ``TimeoutError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.sync()
            except OSError as exc:  # the store unreachable: keep trying until the deadline
                log.warning("bundle store %s: %s", redact_url(self.store.url), exc)
            if self.has_good_bundle():
                return
            if time.monotonic() >= deadline:
                why = "; ".join(f"{v}: {r}" for v, r in self.refused.items()) or "none published"
                raise TimeoutError(
                    f"no valid bundle from {redact_url(self.store.url)} after {timeout_s:.0f} s "
                    f"({why})"
                )
            time.sleep(interval_s)


class BundlePuller(Periodic):
    """Syncs the mirror every ``interval_s`` in a daemon thread (the reload watcher then
    swaps to what the local ``CURRENT`` names)."""

    def __init__(self, mirror: BundleMirror, interval_s: float) -> None:
        super().__init__("bundle-puller", interval_s)
        self.mirror = mirror

    def tick(self) -> None:
        try:
            self.mirror.sync()
        except Exception:  # an unreachable store must not kill the thread
            log.exception("bundle store sync failed; still serving the local bundle")


def start_mirror(settings: Settings) -> BundleMirror | None:
    """With ``settings.bundle_store_url``: a mirror into ``settings.bundles_path``, synced
    and waited on (up to ``bundle_wait_s``) until a verified bundle is there; else None."""
    if not settings.bundle_store_url:
        return None
    mirror = BundleMirror(settings.bundle_store_url, settings.bundles_path)
    mirror.wait(settings.bundle_wait_s)
    return mirror
