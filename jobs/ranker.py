"""The ranking stage's job: fit the ranker (``training.ranker``), measure it
(``evaluation.ranking``) and write ``runs/<run>/ranker/`` (booster, record, report)."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from core.atomic import write_bytes, write_json
from core.constants import DAY_MS
from core.workspace import RunDir, Workspace
from data.features.build import FeatureConfig, cutoffs, load_event_log
from data.features.ranker import RANKER_FEATURES, SERVING_POSITION
from evaluation.ranking import (
    evaluate_slates,
    evaluate_temporal_rerank,
    render_report,
    reranked_metrics,
)
from models.ranker import fit_ranker
from training.inference import load_scorer
from training.ranker import (
    RANKER_DIR,
    RANKER_MODEL,
    RANKER_RECORD,
    RANKER_REPORT,
    RankerJobConfig,
    build_slates,
    load_ranker,
    read_labelled,
)

log = logging.getLogger("tastemaker.training")


def refuse_refit(run_dir: Path, why: str) -> None:
    """A ValueError naming ``why`` when ``run_dir`` was refit on train + valid: a model fitted
    at the validation cutoff needs candidates the two-tower did not train on."""
    train_cfg = json.loads(RunDir(run_dir).config.read_text()).get("train", {})
    if train_cfg.get("refit", False):
        raise ValueError(f"run {run_dir.name} was refit on train + valid, so {why}")


def train_ranker(
    ws: Workspace,
    run_dir: str | Path | None = None,
    config: RankerJobConfig | None = None,
    fconfig: FeatureConfig | None = None,
) -> dict[str, Any]:
    """Fit the ranker against ``run_dir``'s two-tower (default: the latest run), evaluate it,
    write ``<run>/ranker/``; returns the record (also ``ranker.json``)."""
    config = config or RankerJobConfig()
    fconfig = fconfig or FeatureConfig()
    run_dir = Path(run_dir) if run_dir else ws.latest_run()
    refuse_refit(
        run_dir,
        "its retrieval scores on the validation week's slates (the ranker's training data) are "
        "in-sample; train the two-tower with `tastemaker train --no-refit` and fit the ranker "
        "against that run",
    )
    started = time.perf_counter()
    ev = load_event_log(ws, fconfig)
    cut = cutoffs(ev, fconfig)
    scorer = load_scorer(run_dir)
    labelled = read_labelled(ws)
    stop_day = cut["test"] - DAY_MS
    log.info("ranker: building slates (train, early stopping, held out)")
    fit_part = build_slates(
        labelled, ev, scorer, cut["valid"], cut["test"], fconfig, config.extra_negatives
    )
    held = build_slates(labelled, ev, scorer, cut["test"], cut["end"], fconfig)
    train_part = fit_part.take(fit_part.day < stop_day // DAY_MS)
    valid_part = fit_part.take(fit_part.day >= stop_day // DAY_MS)
    ranker, record = fit_ranker(train_part.data, valid_part.data, RANKER_FEATURES, config.model)
    log.info("ranker: %d rounds, valid/ndcg@10 %.4f", record["rounds"], record["valid/ndcg@10"])
    result: dict[str, Any] = {
        "run_id": run_dir.name,
        "features": list(RANKER_FEATURES),
        "serving_position": SERVING_POSITION,
        "fit": record,
        "job": dataclasses.asdict(config),
        "rows": {
            "train": int(len(train_part.data.y)),
            "train_clicks": int(train_part.data.y.sum()),
            "valid": int(len(valid_part.data.y)),
            "held_out": int(len(held.data.y)),
            "held_out_clicks": int(held.data.y.sum()),
        },
        "importance": ranker.importance(),
        "held_out_slates": evaluate_slates(ranker, held, config.n_boot, config.seed),
        "temporal": evaluate_temporal_rerank(ws, ev, scorer, ranker, cut["test"], config, fconfig),
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    out = run_dir / RANKER_DIR
    out.mkdir(exist_ok=True)
    write_bytes(out / RANKER_MODEL, ranker.to_bytes())
    write_json(out / RANKER_RECORD, result)
    write_bytes(out / RANKER_REPORT, render_report(result).encode())
    return result


def ranked_per_user(
    ws: Workspace, run_dir: Path, data: Any, metric: str, fconfig: FeatureConfig | None = None
) -> np.ndarray:
    """``(U_warm,)`` per-user ``metric`` of "``run_dir``'s two-tower top-N re-ranked by its
    ranker" on ``data``'s (``evaluation.temporal.TemporalData``) warm users, in the order of
    ``np.flatnonzero(data.warm)``: what ``evaluation.gate`` needs of a ``"two-tower+ranker"``
    contender. The artist context is taken as of the test cutoff of today's features."""
    fconfig = fconfig or FeatureConfig()
    record = json.loads((Path(run_dir) / RANKER_DIR / RANKER_RECORD).read_text())
    ev = load_event_log(ws, fconfig)
    users = data.users.take(pa.array(np.flatnonzero(data.warm)))
    k = int(metric.split("@")[1]) if "@" in metric else 20
    _, ranked = reranked_metrics(
        ev,
        load_scorer(run_dir),
        load_ranker(run_dir),
        users,
        cutoffs(ev, fconfig)["test"],
        int(record["job"]["candidates"]),
        (k,),
        fconfig,
    )
    if metric not in ranked:
        raise ValueError(f"unknown gate metric {metric!r}; have {sorted(ranked)}")
    return np.asarray(ranked[metric], np.float64)
