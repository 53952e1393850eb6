"""FAISS artist indexes and versioned bundles. Knows nothing about users."""

from index.bundle import (
    ARTIST_INDEX_FILE,
    ARTISTS_FILE,
    SERVING_FILES,
    TRENDING_FILE,
    USER_TOWER_FILE,
    VOCAB_FILE,
    Bundle,
    BundleNotFoundError,
    CorruptBundleError,
    load_bundle,
    publish_bundle,
)
from index.faiss_index import ArtistIndex, IndexLoadError, IndexSpec, build_index

__all__ = [
    "ARTISTS_FILE",
    "ARTIST_INDEX_FILE",
    "SERVING_FILES",
    "TRENDING_FILE",
    "USER_TOWER_FILE",
    "VOCAB_FILE",
    "ArtistIndex",
    "Bundle",
    "BundleNotFoundError",
    "CorruptBundleError",
    "IndexLoadError",
    "IndexSpec",
    "build_index",
    "load_bundle",
    "publish_bundle",
]
