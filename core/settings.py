"""The one configuration object, read from ``TASTEMAKER_*`` environment variables.

This is the only module that touches the environment (``tests/core/test_settings.py`` checks
it): the CLI builds one :class:`Settings` and passes it down, and the service builds one in
its app factory. The pseudonymisation secret is a field here; the rule that decides whether
it may be used (the public demo key only in demo mode) belongs to
:func:`data.pii.pseudonym_key`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.workspace import Workspace

ENV_PREFIX = "TASTEMAKER_"

MAX_K = 100
MIN_SECRET_CHARS = 16  # the pseudonymisation and token keys: shorter is refused at start


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    workspace: Path = Path("workspace")
    # PII: the HMAC secret for user ids ($TASTEMAKER_PSEUDONYM_KEY) and demo mode
    # ($TASTEMAKER_DEMO=1: synthetic data, the public demo key is allowed)
    pseudonym_key: SecretStr | None = None
    demo: bool = False
    accounts_url: str | None = None  # account table; default <workspace>/pii/accounts.sqlite
    # the model registry: its own database, never the account table's (that one holds PII)
    registry_url: str | None = None  # default sqlite:///<workspace>/registry.sqlite
    data_dir: Path | None = None  # research data sets; default <repository>/../shared/data
    bundle_dir: Path | None = None  # a bundles dir (follows CURRENT) or one version folder
    # the object store bundles are published to (s3://bucket/prefix, file://..., any fsspec
    # URL): when set, bundle_dir is a cache the service fills from it (serving.bundle_store)
    bundle_store_url: str | None = None
    bundle_wait_s: Annotated[float, Field(ge=0)] = 120.0  # at start: wait this long for one
    online_store_url: str | None = None  # redis://... or a SQLite path; default in workspace
    default_k: Annotated[int, Field(ge=1, le=MAX_K)] = 10
    max_k: Annotated[int, Field(ge=1, le=MAX_K)] = MAX_K
    reload_interval_s: Annotated[float, Field(ge=0.0)] = 5.0  # poll CURRENT; 0 = /admin/reload only
    admin_token: str | None = None  # when set, /admin/* needs header X-Admin-Token
    onnx_threads: Annotated[int, Field(ge=1)] = 1  # per request; replicas scale out, not threads
    faiss_threads: Annotated[int, Field(ge=1)] = 1  # OpenMP per query; >1 only adds waits
    # the 6 a.m. burst (serving/): shed instead of queueing, time out instead of hanging
    # a request that waited longer after it was parsed -> 503. It may also have waited about as
    # long unparsed in its socket (one busy loop turn), so served latency stays under ~2x this
    max_queue_ms: Annotated[float, Field(gt=0)] = 15.0
    max_inflight: Annotated[int, Field(ge=1)] = 64  # concurrent API requests per process
    retry_after_s: Annotated[int, Field(ge=1)] = 1  # Retry-After on a shed 503
    store_timeout_ms: Annotated[float, Field(gt=0)] = 50.0  # per online-store call (Redis)
    # real-time micro-batching (serving.batcher): a request waits at most this long for others
    # to share its ONNX call and index search; 0 = every request scored alone
    batch_max_wait_ms: Annotated[float, Field(ge=0, le=2.0)] = 2.0
    batch_max_rows: Annotated[int, Field(ge=1)] = 64  # a batch this full goes at once
    store_cooldown_s: Annotated[float, Field(ge=0)] = 1.0  # after a store failure, skip it
    health_interval_s: Annotated[float, Field(gt=0)] = 1.0  # background readiness probe period
    slate_max_age_s: Annotated[float, Field(gt=0)] = 36 * 3600.0  # precomputed slates older -> live
    event_bus_url: str | None = None  # redis://... : POST /v1/events and slate logs go to the
    # stream the subscriber drains; unset: batches are written to the raw object store
    event_stream: str = "tastemaker:events"  # the stream key the subscriber drains
    # live rows written by `tastemaker stream-features` (redis://...); unset: the event bus's
    # Redis when there is one. The service reads them over the batch rows (fresh features).
    stream_state_url: str | None = None
    events_store_url: str | None = None  # raw object store; default <workspace>/raw
    # the feature job's engine (`tastemaker features --engine`): "local" (one process, numpy)
    # or "spark" (PySpark; spark_master local[N], spark://host:port or a Spark Connect sc://)
    feature_engine: Literal["local", "spark"] = "local"
    spark_master: str = "local[*]"
    spark_python: Path | None = None  # Spark's Python workers; default: this interpreter
    # the driver JVM's heap (`spark.driver.memory`, e.g. "4g"); in local[N] mode that JVM is
    # also the executor. Unset: Spark's default (1g). Ignored for a Spark Connect master.
    spark_driver_memory: str | None = None
    # `tastemaker train --launcher`: "lightning" (Lightning starts the other ranks, or the
    # ones torchrun started) or "torchdistributor" (Spark's TorchDistributor on spark_master
    # starts train_processes ranks)
    train_launcher: Literal["lightning", "torchdistributor"] = "lightning"
    train_processes: Annotated[int, Field(ge=1)] = 2
    slate_store_url: str | None = (
        None  # precomputed slates; default <workspace>/online/slates.sqlite
    )
    # --- issue 20: who may do what (docs/privacy.md, docs/serving.md "Security") --------------
    # listener tokens (``tastemaker token``): HMAC over the pseudonymous id and an expiry. The
    # current key signs; the previous one still verifies, for one token lifetime after a
    # rotation. Unset outside demo mode: POST /v1/events is off (403).
    token_key: SecretStr | None = None
    token_key_previous: SecretStr | None = None
    token_ttl_s: Annotated[int, Field(ge=10, le=7 * 86400)] = 3600
    service_token: SecretStr | None = None  # the app backend's: any listener's recommendations
    # outside demo mode the recommendation calls need the listener's token or the service
    # token; this opens them (a gateway in front authenticates instead)
    public_recommendations: bool = False
    # per listener and per client address, events accepted per minute (429 + Retry-After)
    events_per_listener_per_min: Annotated[int, Field(ge=1)] = 600
    events_per_client_per_min: Annotated[int, Field(ge=1)] = 6000
    max_body_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024  # 413 beyond, before parsing
    max_header_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024  # all headers together: 431
    event_queue_bytes: Annotated[int, Field(ge=1024)] = 64 << 20  # sink backlog; then 503
    # /metrics: on the API port only in demo mode or with X-Admin-Token; with a port set, it is
    # served there instead (metrics_host, default loopback) and the API port has none
    metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    metrics_host: str = "127.0.0.1"

    @field_validator("pseudonym_key", "token_key", "token_key_previous", "service_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"must be at least {MIN_SECRET_CHARS} characters")
        return value

    @property
    def layout(self) -> Workspace:
        """The workspace these settings name; every default path below comes from it."""
        return Workspace(self.workspace)

    @property
    def bundles_path(self) -> Path:
        return self.bundle_dir or self.layout.bundles

    @property
    def slate_store_target(self) -> str:
        return self.slate_store_url or str(self.layout.online_slates)

    @property
    def events_store_target(self) -> str:
        return self.events_store_url or str(self.layout.raw)

    @property
    def stream_state_target(self) -> str | None:
        """Where the streamed live rows are (None: no streaming, batch rows only)."""
        return self.stream_state_url or self.event_bus_url

    @property
    def online_store_target(self) -> str:
        return self.online_store_url or str(self.layout.online_users)

    @property
    def spark_python_path(self) -> str:
        """The interpreter Spark's Python workers run (pinned: the project's, never a PATH
        lookup on the worker)."""
        return str(self.spark_python or Path(sys.executable))

    def export_spark_env(self) -> None:
        """Pin Spark's Python: pyspark starts its workers with ``$PYSPARK_PYTHON`` (read by
        pyspark itself, not a Spark conf), so the feature job sets it before its session."""
        os.environ["PYSPARK_PYTHON"] = self.spark_python_path
        os.environ["PYSPARK_DRIVER_PYTHON"] = self.spark_python_path

    def export_checkout_pythonpath(self) -> None:
        """Put this checkout first on ``$PYTHONPATH``, so that processes started from a script
        file (the ranks ``TorchDistributor`` starts) import these packages, not an installed
        copy."""
        root = str(Path(__file__).resolve().parents[1])
        rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *rest])

    def child_env(self) -> dict[str, str]:
        """The ``TASTEMAKER_*`` variables from which a child process (a uvicorn worker) builds
        these same settings: every field that was set, from the environment or an override."""
        env = {}
        for name in sorted(self.model_fields_set):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[ENV_PREFIX + name.upper()] = str(value)
        return env

    def export_env(self) -> None:
        """Write :meth:`child_env` into this process's environment, for the children it starts
        (uvicorn's worker processes build their Settings from it)."""
        os.environ.update(self.child_env())
