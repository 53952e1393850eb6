"""The serving fixtures (a published synthetic bundle, a SQLite online store, the test key)."""

from tests.serving.conftest import bundles_dir, pseudonym_key, store_path

__all__ = ["bundles_dir", "pseudonym_key", "store_path"]
