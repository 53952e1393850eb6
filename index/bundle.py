"""Versioned, checksummed bundles: the unit that training publishes and serving loads.

Publishing writes every file into a hidden temp folder beside the others, records each file's
sha256 in ``manifest.json``, fsyncs, renames the folder into place and only then atomically
rewrites ``CURRENT``. A reader therefore sees either the old bundle or the complete new one,
never a mix, and a publisher killed midway leaves only a stray ``.tmp-*`` folder.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import astuple, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.atomic import write_bytes
from core.lineage import sha256_file

log = logging.getLogger("tastemaker.index")

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class BundleFiles:
    """The files a serving bundle holds (docs/CONTRACTS.md "Bundle"), named here once."""

    user_tower: str = "user_tower.onnx"
    artist_index: str = "artists.faiss"
    vocab: str = "vocab.json"
    artists: str = "artists.parquet"
    trending: str = "trending.json"

    @property
    def serving(self) -> tuple[str, ...]:
        return astuple(self)


FILES = BundleFiles()
# Optional: the ranking stage's booster, present when the manifest has a "ranker" section
# (feature names, serving position, candidates); checksummed like every other file.
RANKER_FILE = "ranker.ubj"
# Optional: the two-stage system, present exactly when the manifest has a "two_stage" section
# (features, candidate depths): its discovery ranker and each artist's top-M co-listening
# neighbours (artist_id, neighbours, similarity); both checksummed like every other file.
TWO_STAGE_FILE = "two_stage.ubj"
NEIGHBOURS_FILE = "neighbours.parquet"
# Optional: a benchmark peer (ItemKNN, EASE, ALS) served through precomputed slates, present
# exactly when the manifest has a "peer" section (model, params, listeners): every listener's
# top-k of that peer (data.schemas.PEER_SLATES); it takes the place of retrieval and rankers.
PEER_SLATES_FILE = "peer_slates.parquet"
CURRENT = "CURRENT"
DEFAULT_KEEP = 3


class CorruptBundleError(RuntimeError):
    """A bundle file is missing, unreadable or does not match its manifest checksum."""


class BundleNotFoundError(FileNotFoundError):
    """No bundle has been published where one was expected."""


@dataclass(frozen=True)
class Bundle:
    """A verified bundle folder: its version, manifest and the files the manifest lists."""

    path: Path
    version: str
    manifest: dict[str, Any] = field(repr=False)

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(sorted(self.manifest["files"]))

    def file(self, name: str) -> Path:
        """Path of a file the manifest lists; a missing entry is a corrupt bundle."""
        if name not in self.manifest["files"]:
            raise CorruptBundleError(
                f"bundle {self.path} has no {name!r}; its manifest lists: {', '.join(self.files)}"
            )
        return self.path / name


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_version(now: datetime | None = None) -> str:
    """A version name that sorts by publish time: ``20240131T120000Z-1a2b3c``."""
    now = now or datetime.now(timezone.utc)
    return f"{now.astimezone(timezone.utc):%Y%m%dT%H%M%S}Z-{uuid.uuid4().hex[:6]}"


def _check_name(name: str) -> None:
    if not name or name in (MANIFEST, CURRENT) or "/" in name or "\\" in name or name[0] == ".":
        raise ValueError(
            f"bundle file name {name!r} is not allowed: use a plain file name other than "
            f"{MANIFEST!r} and {CURRENT!r}"
        )


def publish_bundle(
    bundles_dir: str | os.PathLike[str],
    files: Mapping[str, Path | bytes],
    manifest: dict[str, Any],
    *,
    version: str | None = None,
    keep: int = DEFAULT_KEEP,
    make_current: bool = True,
) -> str:
    """Publish ``files`` (name -> source path or bytes) as a new version; return its name.

    ``make_current=False`` puts the version in place without moving ``CURRENT`` (a promotion
    that warms the new bundle's slates first, then calls :func:`set_current`).

    ``manifest`` is the caller's metadata (run_id, metrics, model); ``version``,
    ``created_at`` and ``files`` (sha256 and size per file) are filled in here. Only the
    ``keep`` newest versions (and always the current one) survive.
    """
    if not files:
        raise ValueError("publish_bundle needs at least one file")
    if keep < 1:
        raise ValueError(f"keep must be >= 1; got {keep}")
    root = Path(bundles_dir)
    root.mkdir(parents=True, exist_ok=True)
    version = version or new_version()
    _check_name(version)
    final = root / version
    if final.exists():
        raise ValueError(f"bundle version {version!r} already exists in {root}")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=root))
    try:
        checksums: dict[str, dict[str, Any]] = {}
        for name, source in files.items():
            _check_name(name)
            target = tmp / name
            if isinstance(source, bytes | bytearray):
                target.write_bytes(source)
            else:
                src = Path(source)
                if not src.is_file():
                    raise FileNotFoundError(f"bundle file {name!r}: source {src} does not exist")
                shutil.copyfile(src, target)
            with open(target, "rb+") as f:
                os.fsync(f.fileno())
            checksums[name] = {"sha256": sha256_file(target), "size": target.stat().st_size}
        full = {
            **manifest,
            "version": version,
            "created_at": manifest.get("created_at") or datetime.now(timezone.utc).isoformat(),
            "files": checksums,
        }
        write_bytes(
            tmp / MANIFEST,
            (json.dumps(full, indent=2, sort_keys=True, default=str) + "\n").encode(),
        )
        _fsync_dir(tmp)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if make_current:
        write_bytes(root / CURRENT, f"{version}\n".encode())
    log.info("published bundle %s (%d files) in %s", version, len(files), root)
    prune_bundles(root, keep)
    return version


def list_versions(bundles_dir: str | os.PathLike[str]) -> list[str]:
    """Published versions, oldest first (hidden temp folders are not versions)."""
    root = Path(bundles_dir)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file()
    )


MAX_POINTER_BYTES = 256
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def current_version(bundles_dir: str | os.PathLike[str]) -> str | None:
    """The version ``CURRENT`` names; None when there is no ``CURRENT`` (or it is empty).

    Read defensively: a pointer that is not short ASCII text naming a plain folder name (no
    path separator, no ``..``, not hidden) raises :class:`CorruptBundleError` without quoting
    the content, so ``CURRENT`` can never lead outside the bundles folder.
    """
    pointer = Path(bundles_dir) / CURRENT
    if not pointer.is_file():
        return None
    with pointer.open("rb") as f:
        raw = f.read(MAX_POINTER_BYTES + 1)
    if len(raw) > MAX_POINTER_BYTES:
        raise CorruptBundleError(f"{pointer} is over {MAX_POINTER_BYTES} bytes: not a version")
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise CorruptBundleError(f"{pointer} is not ASCII text: not a version") from None
    if not text:
        return None
    if not _VERSION.match(text) or ".." in text:
        raise CorruptBundleError(f"{pointer} does not name a bundle folder (bad characters)")
    return text


def set_current(bundles_dir: str | os.PathLike[str], version: str) -> None:
    """Point ``CURRENT`` at an already published ``version`` (a rollback or a manual promote);
    the bundle is verified first, so a corrupt one is refused and the old one keeps serving."""
    root = Path(bundles_dir)
    load_bundle(root / version)
    write_bytes(root / CURRENT, f"{version}\n".encode())
    log.info("CURRENT -> %s in %s", version, root)


def prune_bundles(bundles_dir: str | os.PathLike[str], keep: int = DEFAULT_KEEP) -> list[str]:
    """Delete all but the ``keep`` newest versions, never the current one; return the deleted."""
    root = Path(bundles_dir)
    versions = list_versions(root)
    current = current_version(root)
    doomed = [v for v in versions[: max(0, len(versions) - keep)] if v != current]
    for v in doomed:
        shutil.rmtree(root / v, ignore_errors=True)
        log.info("pruned old bundle %s", v)
    return doomed


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Open and verify a bundle: a version folder, or a bundles dir (follows ``CURRENT``).

    Every file listed in the manifest is checked against its sha256; any mismatch raises
    :class:`CorruptBundleError` naming the file.
    """
    path = Path(path)
    if (path / CURRENT).is_file():
        version = current_version(path)
        if not version:
            raise CorruptBundleError(f"{path / CURRENT} is empty")
        folder = path / version
        if not folder.is_dir():
            raise CorruptBundleError(
                f"{path / CURRENT} points at {version!r}, which does not exist"
            )
    elif (path / MANIFEST).is_file():
        folder = path
    else:
        raise BundleNotFoundError(
            f"no bundle in {path} (no {CURRENT} or {MANIFEST}); run `tastemaker export` "
            "to publish one, or point --bundle at a bundle folder"
        )
    manifest_path = folder / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise CorruptBundleError(f"{manifest_path} is not readable JSON: {exc}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise CorruptBundleError(f"{manifest_path} has no 'files' table of checksums")
    for name, entry in manifest["files"].items():
        file = folder / name
        if not file.is_file():
            raise CorruptBundleError(f"bundle file {file} is listed in the manifest but missing")
        expected = entry.get("sha256") if isinstance(entry, dict) else None
        actual = sha256_file(file)
        if actual != expected:
            raise CorruptBundleError(
                f"bundle file {file} fails its checksum (manifest sha256 {expected}, "
                f"file sha256 {actual}); republish with `tastemaker export`"
            )
    version = str(manifest.get("version") or folder.name)
    return Bundle(path=folder, version=version, manifest=manifest)
