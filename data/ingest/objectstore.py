"""The raw zone: an object store behind fsspec.

A local folder by default (``Workspace.raw``); ``s3://bucket/prefix`` through s3fs for real
deployments (``endpoint_url`` for S3-compatible stores such as MinIO). Paths handed to and
returned by :class:`ObjectStore` are relative to the store's root and use ``/``, so the same
ingest code runs on both. Writes are atomic: locally a temp file beside the target and a
rename (:mod:`core.atomic`); on S3 a single PUT, which S3 makes visible all at once.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import fsspec

from core import atomic
from core.urls import redact_url

log = logging.getLogger("tastemaker.data")


class ObjectStore:
    """A flat namespace of immutable objects under one root URL (local path or ``s3://``)."""

    def __init__(self, url: str | os.PathLike[str], **storage_options: Any) -> None:
        url = str(url)
        self.url = url
        protocol = urlsplit(url).scheme if "://" in url else "file"
        if protocol in ("", "file"):
            self.local = True
            self.root = str(Path(url.removeprefix("file://")).resolve())
            self.fs = fsspec.filesystem("file")
        else:
            self.local = False
            if protocol == "s3" and "endpoint_url" in storage_options:
                storage_options.setdefault("client_kwargs", {})
                storage_options["client_kwargs"]["endpoint_url"] = storage_options.pop(
                    "endpoint_url"
                )
            self.fs = fsspec.filesystem(protocol, **storage_options)
            self.root = url.split("://", 1)[1].rstrip("/")

    def __repr__(self) -> str:
        return f"ObjectStore({redact_url(self.url)!r})"

    def _full(self, path: str) -> str:
        path = path.strip("/")
        if ".." in path.split("/"):
            raise ValueError(f"object path {path!r} must not contain '..'")
        return f"{self.root}/{path}" if path else self.root

    def _relative(self, full: str) -> str:
        full = full.removeprefix("file://")
        root = self.root.rstrip("/") + "/"
        if not full.startswith(root):
            raise ValueError(f"object {full!r} is outside the store root {self.root!r}")
        return full[len(root) :]

    def list(self, prefix: str = "") -> list[str]:
        """Every object below ``prefix`` (recursively), as sorted store-relative paths.

        Temp files of interrupted local writes (``.tmp-*``) are not objects and are skipped.
        """
        base = self._full(prefix)
        if not self.fs.exists(base):
            return []
        if not self.local:
            self.fs.invalidate_cache(base)
        found = self.fs.find(base)
        paths = [self._relative(p) for p in found]
        return sorted(p for p in paths if not p.rsplit("/", 1)[-1].startswith(".tmp-"))

    def read_bytes(self, path: str) -> bytes:
        try:
            return self.fs.cat_file(self._full(path))
        except FileNotFoundError:
            raise FileNotFoundError(f"no object {path!r} in {self!r}") from None

    def write_bytes(self, path: str, data: bytes) -> None:
        full = self._full(path)
        if self.local:
            atomic.write_bytes(full, data)
        else:
            self.fs.pipe_file(full, data)  # one PUT: visible all at once or not at all

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self._full(path)))

    def size(self, path: str) -> int:
        return int(self.fs.size(self._full(path)))


def open_store(source_url: str | os.PathLike[str] | None, default: Path) -> ObjectStore:
    """The store at ``source_url``; the local folder ``default`` when it is None.

    ``s3://`` URLs read their endpoint from ``$AWS_ENDPOINT_URL`` as s3fs/botocore do.
    """
    if source_url is None:
        return ObjectStore(default)
    return ObjectStore(source_url)
