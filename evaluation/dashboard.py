"""The dashboard's data: one JSON snapshot the batch jobs write and the web page reads.

Serving must not import evaluation (the package table), so the evaluation side publishes what
the page shows as a file, ``<workspace>/dashboard/state.json``, after each demo and daily run
(or ``tastemaker dashboard``):

* ``evaluation`` — the latest run's temporal evaluation: Recall@K per model, segment values
  with bootstrap intervals, the train/test gap;
* ``registry`` — every registered run with its day, status, Recall@20 and the gate's reasons;
* ``engagement`` — per day and segment (all versions): impressions, CTR, stream-through,
  follow rate, 7/14-day churn, with intervals.

Nothing in it identifies a person: segments and pseudonymous run ids only.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.atomic import write_json
from core.workspace import RunDir, Workspace
from data.lake import is_events_table

log = logging.getLogger("tastemaker.evaluation")

ENGAGEMENT_COLUMNS = (
    "date",
    "segment",
    "impressions",
    "ctr",
    "ctr_lo",
    "ctr_hi",
    "stream_through",
    "stream_through_lo",
    "stream_through_hi",
    "follow_rate",
    "active_users",
    "churn7",
    "churn7_lo",
    "churn7_hi",
    "churn14",
)


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _evaluation(ws: Workspace) -> dict[str, Any] | None:
    try:
        run_dir = ws.latest_run()
    except FileNotFoundError:
        return None
    path = RunDir(run_dir).metrics
    if not path.is_file():
        return None
    ev = json.loads(path.read_text()).get("evaluation")
    if not ev:
        return None
    split = ev.get("split", "test")
    curves = {}
    for model, summary in ev["models"].items():
        pts = sorted(
            (int(k.split("@")[1]), v)
            for k, v in summary.items()
            if k.startswith(f"{split}/recall@")
        )
        curves[model] = [[k, v] for k, v in pts]
    gap = {
        m: {
            "test": ev["models"][m].get(f"{split}/recall@20"),
            "train": ev.get("train_sample", {}).get(m, {}).get("train/recall@20"),
            "flagged": ev.get("overfit_flags", {}).get(m, False),
        }
        for m in ev["models"]
    }
    return {
        "run": run_dir.name,
        "split": split,
        "n_users": ev.get("n_users"),
        "recall_curves": curves,
        "segments": ev.get("segments", {}),
        "gap": gap,
    }


def _registry(ws: Workspace, registry_url: str | None) -> list[dict[str, Any]]:
    from evaluation.model_registry import default_registry_url, open_registry

    url = registry_url or default_registry_url(ws)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).is_file():
        return []
    with open_registry(url) as registry:
        return [
            {
                "run_id": r.run_id,
                "model": r.model,
                "day": r.day,
                "created_at": r.created_at,
                "status": r.status,
                "bundle_version": r.bundle_version,
                "recall@20": r.metrics.get(r.model, {}).get("test/recall@20"),
                "reasons": r.decision.get("reasons", []),
            }
            for r in registry.runs()
        ]


def _engagement(ws: Workspace) -> list[dict[str, Any]]:
    from evaluation.engagement import engagement_table

    if not is_events_table(ws.lake_events) or not is_events_table(ws.lake_users):
        return []
    eng = engagement_table(ws)
    eng = eng[eng["version"] == "*"]
    return eng[list(ENGAGEMENT_COLUMNS)].to_dict(orient="records")


def write_dashboard(ws: Workspace, registry_url: str | None = None) -> Path:
    """Build the snapshot from the workspace and write it atomically; return its path."""
    state = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "evaluation": _evaluation(ws),
        "registry": _registry(ws, registry_url),
        "engagement": _engagement(ws),
    }
    path = ws.dashboard_state
    write_json(path, _clean(state))
    log.info("dashboard snapshot written to %s", path)
    return path
