"""FAISS artist indexes and versioned bundles. Knows nothing about users."""

from index.bundle import (
    FILES,
    NEIGHBOURS_FILE,
    PEER_SLATES_FILE,
    RANKER_FILE,
    TWO_STAGE_FILE,
    Bundle,
    BundleNotFoundError,
    CorruptBundleError,
    load_bundle,
    publish_bundle,
)
from index.choose import RecallGateError, build_checked_index, spec_for
from index.faiss_index import ArtistIndex, IndexLoadError, IndexSpec, build_index

__all__ = [
    "FILES",
    "NEIGHBOURS_FILE",
    "PEER_SLATES_FILE",
    "RANKER_FILE",
    "TWO_STAGE_FILE",
    "ArtistIndex",
    "Bundle",
    "BundleNotFoundError",
    "CorruptBundleError",
    "IndexLoadError",
    "IndexSpec",
    "RecallGateError",
    "build_checked_index",
    "spec_for",
    "build_index",
    "load_bundle",
    "publish_bundle",
]
