"""Run the HTTP API on uvicorn: one process, or several workers that build the same settings.

Imports ONNX and FAISS (through the app), never torch.
"""

from __future__ import annotations

from typing import Any

from core.settings import Settings

PROTOCOL = "serving.shed:ArrivalStampingProtocol"  # uvicorn's httptools + arrival stamps


def run_server(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    """Serve ``settings``'s bundle and stores on ``host:port`` until stopped. A missing bundle
    or store fails here, before binding (and, with ``workers > 1``, before forking)."""
    import uvicorn

    from serving.app import create_app

    common: dict[str, Any] = dict(
        host=host,
        port=port,
        log_level="info",
        access_log=False,  # ~0.1 ms a request; /metrics counts requests instead
        http=PROTOCOL,
        loop="uvloop",
        backlog=4096,
    )
    if settings.metrics_port:
        if workers > 1:
            raise SystemExit("TASTEMAKER_METRICS_PORT serves one process's metrics: --workers 1")
        from prometheus_client import start_http_server

        # /metrics apart from the API: its own address (loopback by default), no token
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    if workers <= 1:
        app = create_app(settings)
        uvicorn.run(app, **common)
        return
    create_app(settings)  # the same early failure, in the parent, before forking workers
    settings.export_env()  # the workers build their Settings from the environment
    uvicorn.run("serving.app:create_app", factory=True, workers=workers, **common)
