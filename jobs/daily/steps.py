"""``run_day``: the daily cycle's steps in order (see :mod:`jobs.daily`), each timed and named."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from core.atomic import write_bytes, write_json, write_table
from core.workspace import Workspace
from jobs.daily.config import CHALLENGER_MODEL, DailyConfig, DailyStepError, day_dir
from jobs.daily.publish import champion_run, gate_and_publish
from jobs.daily.report import gate_plot, render_summary, segment_plots, to_arrow, today_vs_yesterday
from training.train_config import TrainConfig

log = logging.getLogger("tastemaker.daily")


def run_day(
    ws: Workspace,
    day: date,
    config: DailyConfig | None = None,
    train_fn: Callable[[Workspace, TrainConfig], Path] | None = None,
    key: bytes | None = None,
) -> dict[str, Any]:
    """Run (or, if it already finished, return) the cycle for ``day``; see :mod:`jobs.daily`.
    ``key``: the pseudonymisation secret for ingest (the CLI passes its Settings' key)."""
    from data.features.build import build_features
    from data.ingest.job import run_ingest
    from evaluation.alarm import check
    from evaluation.dashboard import write_dashboard
    from evaluation.engagement import engagement_table
    from evaluation.evaluate import evaluate_temporal
    from training.train import train_two_tower

    config = config or DailyConfig()
    out_dir = day_dir(ws, day)
    done = out_dir / "summary.json"
    if done.is_file():
        log.info("daily %s already done; nothing to re-run (%s)", day, done)
        return {**json.loads(done.read_text()), "already_done": True}
    timings: dict[str, float] = {}

    def step(name: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        log.info("daily %s: %s ...", day, name)
        try:
            result = fn()
        except Exception as exc:
            log.error("daily %s: step %s failed; the serving bundle is unchanged", day, name)
            raise DailyStepError(day, name, exc) from exc
        timings[name] = round(time.perf_counter() - started, 2)
        return result

    end_of_day = datetime.combine(day + timedelta(days=1), datetime.min.time(), timezone.utc)
    step("erase", lambda: drain_erasures(ws, config, key))  # before anything reads the lake
    ingest = step(
        "ingest",
        lambda: run_ingest(
            ws, accounts_url=config.accounts_url, now=end_of_day, until=day, key=key
        ),
    )
    # incremental from the state the previous day's build carried; a full rebuild (one log
    # line says why) when there is none, it is another config's, or files left the table
    features = step("features", lambda: build_features(ws, config.features, incremental=True))
    init_from = champion_run(ws, config) if config.warm_start else None
    # the ranker learns from the validation week's slates: its two-tower must not have seen them
    train_cfg = dataclasses.replace(config.train, refit=False) if config.ranker else config.train
    if train_fn is None:
        run_dir = Path(step("train", lambda: train_two_tower(ws, train_cfg, init_from)))
    else:
        run_dir = Path(step("train", lambda: train_fn(ws, train_cfg)))
    evaluation = step(
        "evaluate",
        lambda: evaluate_temporal(
            ws, run_dir, models=(CHALLENGER_MODEL, "popular", "ease", "itemknn")
        ),
    )
    ranker = step("ranker", lambda: _fit_ranker(ws, run_dir, config)) if config.ranker else None
    two_stage = (
        step("two-stage", lambda: fit_two_stage(ws, run_dir, train_cfg, config, train_fn))
        if config.two_stage
        else None
    )
    snapshot = {
        "to": day.isoformat(),
        "cutoffs": features.get("cutoffs"),
        "lake_manifest": ingest.get("run_id"),
        "events_read": ingest["read"],
    }
    decision, bundle_version, serving = gate_and_publish(
        ws,
        run_dir,
        evaluation,
        config,
        day=day.isoformat(),
        snapshot=snapshot,
        step=step,
        ranker=ranker,
        two_stage=two_stage,
    )

    eng = step("engagement", lambda: engagement_table(ws))
    alarms = check(eng, day.isoformat(), config.alarm)
    for alarm in alarms:
        log.warning(alarm.line())
    write_table(out_dir / "engagement.parquet", to_arrow(eng))
    plots = step("plots", lambda: [*segment_plots(eng, out_dir), gate_plot(decision, out_dir)])
    step("dashboard", lambda: write_dashboard(ws, config.registry_url))
    summary = {
        "day": day.isoformat(),
        "challenger": _challenger_id(run_dir, ranker, two_stage),
        "decision": decision.as_dict(),
        "ranker": _ranker_summary(run_dir, ranker, serving),
        "two_stage": _two_stage_summary(run_dir, two_stage, serving),
        "promoted": decision.promote,
        "bundle_version": bundle_version,
        "serving_run": serving.run_id if serving else None,
        "serving_model": serving.model if serving else None,
        "serving_bundle": serving.bundle_version if serving else None,
        "test_recall@20": {m: v.get("test/recall@20") for m, v in evaluation["models"].items()},
        "engagement": today_vs_yesterday(eng, day),
        "alarms": [a.as_dict() for a in alarms],
        "plots": [str(p) for p in plots],
        "ingest": {k: ingest[k] for k in ("read", "accepted", "duplicates", "quarantined")},
        "timings": timings,
    }
    write_bytes(out_dir / "report.md", render_summary(summary).encode())
    write_json(done, summary)  # last: the day counts as done only when everything is written
    return summary


def drain_erasures(ws: Workspace, config: DailyConfig, key: bytes | None) -> list[dict]:
    """Carry out the filed erasure requests (``tastemaker erase --queue``; jobs.erase)."""
    from core.settings import Settings
    from jobs.erase import drain

    settings = Settings(workspace=ws.root, accounts_url=config.accounts_url)
    return drain(ws, settings, key=key)


def _fit_ranker(ws: Workspace, run_dir: Path, config: DailyConfig) -> dict[str, Any]:
    """Fit the ranker against ``run_dir`` (a no-refit two-tower) and gate "retrieval + ranker"
    against "retrieval alone" with the daily gate's rules; the job's record."""
    from jobs.ranker import train_ranker
    from training.ranker import RankerJobConfig

    job = RankerJobConfig(n_boot=config.gate.n_boot, gate=config.gate)
    return dict(train_ranker(ws, run_dir, job, config.features))


def fit_two_stage(
    ws: Workspace,
    run_dir: Path,
    train_cfg: TrainConfig,
    config: DailyConfig,
    train_fn: Callable[[Workspace, TrainConfig], Path] | None,
) -> dict[str, Any]:
    """Fit the two-stage system for ``run_dir``: its ranker learns at the validation cutoff
    from a two-tower that never saw the validation week (``run_dir`` itself when it was not
    refit, else a no-refit sibling trained now); the record of ``jobs.two_stage``."""
    from jobs.two_stage import train_two_stage
    from training.train import train_two_tower
    from training.two_stage import TwoStageConfig

    fit_run = run_dir
    if train_cfg.refit:
        sibling = dataclasses.replace(train_cfg, refit=False)
        fit_run = Path((train_fn or train_two_tower)(ws, sibling))
        ws.set_latest_run(run_dir)  # the day's challenger stays the latest run
    job = TwoStageConfig(n_boot=config.gate.n_boot)
    return dict(train_two_stage(ws, fit_run, run_dir, job, config.features, config.gate))


def _two_stage_summary(run_dir: Path, two_stage: dict[str, Any] | None, serving: Any) -> Any:
    if two_stage is None:
        return None
    t = two_stage["test"]
    run_id = f"{run_dir.name}+two-stage"
    return {
        "run_id": run_id,
        "fit_run": two_stage["fit_run"],
        "test_recall@20": {k: v["mean"] for k, v in t["recall@20"].items() if "−" not in k},
        "summary": t["gate"]["retrieval alone"]["summary"],
        "serving": bool(serving is not None and serving.run_id == run_id),
    }


def _challenger_id(
    run_dir: Path, ranker: dict[str, Any] | None, two_stage: dict[str, Any] | None = None
) -> str:
    """The registry id of the day's challenger: the run, ``<run>+two-stage`` when the
    two-stage system beat retrieval alone, else ``<run>+ranker`` when the ranker beat it."""
    if two_stage is not None and two_stage["test"]["gate"]["retrieval alone"]["promote"]:
        return f"{run_dir.name}+two-stage"
    if ranker is not None and ranker["temporal"]["gate"]["promote"]:
        return f"{run_dir.name}+ranker"
    return run_dir.name


def _ranker_summary(run_dir: Path, ranker: dict[str, Any] | None, serving: Any) -> Any:
    if ranker is None:
        return None
    gate = ranker["temporal"]["gate"]
    s = ranker["held_out_slates"]
    return {
        "run_id": f"{run_dir.name}+ranker",
        "decision": {k: v for k, v in gate.items() if k != "summary"},
        "summary": gate["summary"],
        "held_out_ndcg@10": {k: s[k]["ndcg@10"]["mean"] for k in ("ranker", "retrieval")},
        "serving": bool(serving is not None and serving.run_id == f"{run_dir.name}+ranker"),
    }
