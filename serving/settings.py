"""The service's one configuration object, read from ``TASTEMAKER_*`` environment variables.

The pseudonymisation secret is not a field: it is read by :func:`data.pii.pseudonym_key`
(``TASTEMAKER_PSEUDONYM_KEY`` / ``TASTEMAKER_DEMO``), the single owner of that rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from data.pii import pseudonym_key

MAX_K = 100


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TASTEMAKER_", frozen=True, extra="ignore")

    workspace: Path = Path("workspace")
    bundle_dir: Path | None = None  # a bundles dir (follows CURRENT) or one version folder
    online_store_url: str | None = None  # redis://... or a SQLite path; default in workspace
    default_k: Annotated[int, Field(ge=1, le=MAX_K)] = 10
    max_k: Annotated[int, Field(ge=1, le=MAX_K)] = MAX_K
    reload_interval_s: Annotated[float, Field(ge=0.0)] = 5.0  # poll CURRENT; 0 = /admin/reload only
    admin_token: str | None = None  # when set, /admin/* needs header X-Admin-Token
    onnx_threads: Annotated[int, Field(ge=1)] = 1  # per request; replicas scale out, not threads
    faiss_threads: Annotated[int, Field(ge=1)] = 1  # OpenMP per query; >1 only adds waits

    @property
    def bundles_path(self) -> Path:
        return self.bundle_dir or self.workspace / "bundles"

    @property
    def online_store_target(self) -> str:
        return self.online_store_url or str(self.workspace / "online" / "users.sqlite")

    def pseudonym_key(self) -> bytes:
        return pseudonym_key()
