"""Register a run, gate it against the champion and publish its bundle only when it wins.

Shared by the daily cycle (:mod:`jobs.daily.steps`) and ``tastemaker demo``
(:mod:`jobs.demo`). The registry rows of "retrieval + ranker" and the gate's contenders are
built here too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.lineage import git_sha
from core.workspace import RunDir, Workspace
from jobs.daily.config import CHALLENGER_MODEL, DailyConfig


def _registry_url(ws: Workspace, config: DailyConfig) -> str:
    from evaluation.model_registry import default_registry_url

    return config.registry_url or default_registry_url(ws)


def champion_run(ws: Workspace, config: DailyConfig) -> Path | None:
    """The champion's run dir (the warm start's origin), or None without a champion."""
    from evaluation.model_registry import open_registry

    with open_registry(_registry_url(ws, config)) as r:
        champion = r.champion()
    if champion is None:
        return None
    run_dir = Path(champion.artefacts["run_dir"])
    return run_dir if run_dir.is_dir() else None


def gate_and_publish(
    ws: Workspace,
    run_dir: Path,
    evaluation: dict[str, Any],
    config: DailyConfig,
    day: str | None = None,
    snapshot: dict[str, Any] | None = None,
    step: Callable[[str, Callable[[], Any]], Any] | None = None,
    ranker: dict[str, Any] | None = None,
    two_stage: dict[str, Any] | None = None,
) -> tuple[Any, str | None, Any]:
    """Register ``run_dir``'s two-tower, gate it against the champion (most-popular when there
    is none) and publish its bundle only when it is promoted. Returns ``(decision,
    bundle_version or None, the champion record after the decision)``. Shared by the daily
    cycle and ``tastemaker demo``.

    ``ranker``: the record of ``training.ranker.train_ranker`` against ``run_dir``. Then
    "retrieval + ranker" is registered too (``<run>+ranker``, model ``two-tower+ranker``); when
    its gate against "retrieval alone" (in the record) promoted it, it is the challenger the
    champion faces and the published bundle carries the ranker, and the plain run is
    ``rejected``; otherwise the ranker row is ``rejected`` and the bundle has no ranker.

    ``two_stage``: the record of ``jobs.two_stage.train_two_stage`` for ``run_dir``. Then the
    two-stage system is registered too (``<run>+two-stage``, model ``two-stage``); when it beat
    retrieval alone on the test week (its record's gate) it is the servable system the
    champion and the best benchmark face, ahead of "retrieval + ranker", and the published
    bundle carries it (``two_stage.ubj`` + ``neighbours.parquet``); otherwise its row is
    ``rejected`` and the bundle does not carry it.

    A challenger kept out behind the best benchmark (``evaluation.gate.leading_benchmark``)
    leaves that peer as the day's best system: it is gated against the champion (most-popular
    when there is none) by the same rules (``decision.instead``) and, promoted, serves through
    its precomputed slates (``jobs.peer``): its benchmark row becomes the champion with that
    bundle. The returned decision is the challenger's, with the peer's in ``instead``."""
    from evaluation.gate import leading_benchmark, run_gate
    from evaluation.model_registry import ModelRecord, open_registry
    from training.export import export_bundle
    from training.ranker import RANKED_MODEL
    from training.two_stage import TWO_STAGE_MODEL_NAME

    def run(name: str, fn: Callable[[], Any]) -> Any:
        return step(name, fn) if step is not None else fn()

    registry = open_registry(_registry_url(ws, config))
    try:
        champion = registry.champion()
        record = ModelRecord(
            run_id=run_dir.name,
            model=CHALLENGER_MODEL,
            day=day,
            git_sha=git_sha(),
            config={
                "train": dataclasses.asdict(config.train),
                "features": dataclasses.asdict(config.features),
            },
            data_snapshot=snapshot or {},
            metrics=evaluation["models"],
            segment_metrics=evaluation["segments"].get(CHALLENGER_MODEL, {}),
            artefacts={"run_dir": str(run_dir), "report": str(RunDir(run_dir).report)},
        )
        registry.register(record)
        ranked_wins = False
        if ranker is not None:
            registry.register(_ranker_record(record, run_dir, ranker))
            ranked_wins = bool(ranker["temporal"]["gate"]["promote"])
        staged_wins = False
        if two_stage is not None:
            registry.register(_two_stage_record(record, run_dir, two_stage))
            staged_wins = bool(two_stage["test"]["gate"]["retrieval alone"]["promote"])
        reference = None
        if champion is not None:
            reference = contender(
                ws,
                config,
                f"champion {champion.run_id}",
                champion.model,
                Path(champion.artefacts["run_dir"]),
                champion.config.get("params"),  # a peer champion: its (tuned) params
            )
        model = RANKED_MODEL if ranked_wins else CHALLENGER_MODEL
        run_id = f"{run_dir.name}+ranker" if ranked_wins else run_dir.name
        if staged_wins:  # the best servable system of the day: multi-source + discovery ranker
            model, run_id = TWO_STAGE_MODEL_NAME, f"{run_dir.name}+{TWO_STAGE_MODEL_NAME}"
        challenger = contender(ws, config, f"challenger {run_id}", model, run_dir)
        overfit = bool(evaluation["overfit_flags"].get(CHALLENGER_MODEL, False))
        bench = benchmark_contenders(ws, config)
        decision = run(
            "gate",
            lambda: run_gate(ws, reference, challenger, config.gate, overfit, benchmarks=bench),
        )
        peer = leading_benchmark(decision, bench)
        if peer is not None:  # the best peer leads the day's system: it faces the champion
            verdict = run("gate-peer", lambda: run_gate(ws, reference, peer, config.gate))
            decision = dataclasses.replace(decision, instead=verdict.as_dict())
        for row in benchmark_records(record, decision, bench):
            registry.register(row)
        if ranker is not None:  # the loser of "retrieval + ranker" vs "retrieval alone"
            sibling = run_dir.name if ranked_wins else f"{run_dir.name}+ranker"
            gate = {k: v for k, v in ranker["temporal"]["gate"].items() if k != "summary"}
            if sibling != run_id:
                registry.set_decision(sibling, "rejected", {**gate, "ranker_gate": True})
        if two_stage is not None:  # two-stage vs retrieval alone: the loser is not served
            gate = {
                k: v
                for k, v in two_stage["test"]["gate"]["retrieval alone"].items()
                if k != "summary"
            }
            losers = [run_dir.name] if staged_wins else [f"{run_dir.name}+{TWO_STAGE_MODEL_NAME}"]
            if staged_wins and ranker is not None:
                losers.append(f"{run_dir.name}+ranker")
            for loser in losers:
                if loser != run_id:
                    registry.set_decision(loser, "rejected", {**gate, "two_stage_gate": True})
        bundle_version = None
        cold = not config.warm_slates

        def publish(served: str, export: Callable[[], Path], verdict: dict[str, Any]) -> str:
            version = Path(run("export", export)).name
            if config.warm_slates:  # CURRENT moves only once the new bundle's slates are in
                run("warm", lambda: warm(ws, config, version))
            registry.set_decision(served, "challenger", verdict)
            registry.set_bundle(served, version)
            registry.promote(served)
            return version

        if decision.promote:
            bundle_version = publish(
                run_id,
                lambda: export_bundle(
                    ws,
                    run_dir,
                    ranker=ranked_wins and not staged_wins,
                    make_current=cold,
                    two_stage=staged_wins,
                ),
                decision.as_dict(),
            )
        else:
            registry.set_decision(run_id, "rejected", decision.as_dict())
        if peer is not None and decision.instead["promote"]:
            from jobs.peer import export_peer_bundle

            bundle_version = publish(
                f"{record.run_id}~{peer.model}",
                lambda: export_peer_bundle(ws, run_dir, peer.model, peer.params, cold),
                {**decision.instead, "best_benchmark": True, "served": "precomputed slates"},
            )
        return decision, bundle_version, registry.champion()
    finally:
        registry.close()


def warm(ws: Workspace, config: DailyConfig, version: str) -> Any:
    """Precompute ``version``'s slates for every user of the features stage, then make it
    ``CURRENT`` (:func:`serving.precompute.warm_and_publish`); raises, CURRENT unmoved, if the
    precompute fails."""
    from serving.precompute import warm_and_publish

    target = config.slate_store_url or str(ws.online_slates)
    return warm_and_publish(
        ws.bundles,
        version,
        ws.feature_dir.user_features,
        target,
        grace_s=config.slate_grace_s,
        bundle_store_url=config.bundle_store_url,
    )


def benchmark_contenders(ws: Workspace, config: DailyConfig) -> list[Any]:
    """The gate's benchmark peers (``config.benchmarks``), each with the params ``tastemaker
    tune`` saved for ``config.tuned_on`` in this workspace, or its defaults."""
    from evaluation.gate import Contender
    from jobs.tune import tuned_params

    out = []
    for name in config.benchmarks:
        params = tuned_params(ws, config.tuned_on, name)
        label = f"benchmark {name}" + (" (tuned)" if params else "")
        out.append(Contender(label, name, params=params))
    return out


def benchmark_records(base: Any, decision: Any, bench: list[Any]) -> list[Any]:
    """One registry row per benchmark the gate scored (status ``benchmark``): its mean metric
    on the gate's users, its params, and whether it was the best (the second reference)."""
    if not decision.benchmark:
        return []
    scores = decision.benchmark["scores"]
    best = decision.benchmark["label"]
    rows = []
    for c in bench:
        verdict = decision.benchmark["decision"] if c.label == best else {}
        rows.append(
            dataclasses.replace(
                base,
                run_id=f"{base.run_id}~{c.model}",
                model=c.model,
                status="benchmark",
                config={"params": dict(c.params or {}), "tuned": bool(c.params)},
                metrics={c.model: {f"test/{decision.metric}": scores[c.label]}},
                segment_metrics={},
                # the run whose files a bundle of this peer carries (jobs.peer)
                artefacts={"challenger": base.run_id, "run_dir": base.artefacts.get("run_dir")},
                decision={
                    "best_benchmark": c.label == best,
                    "reasons": verdict.get("reasons", []),
                    **{k: v for k, v in verdict.items() if k != "reasons"},
                },
            )
        )
    return rows


def _ranker_record(base: Any, run_dir: Path, ranker: dict[str, Any]) -> Any:
    """The registry row of "``run_dir``'s two-tower re-ranked by its ranker"."""
    from training.ranker import RANKED_MODEL, RANKER_REPORT

    t = ranker["temporal"]
    metrics = {
        RANKED_MODEL: {
            f"test/{m}": v["two-tower+ranker"]["mean"]
            for m, v in t.items()
            if isinstance(v, dict) and "difference" in v
        },
        CHALLENGER_MODEL: {
            f"test/{m}": v["two-tower"]["mean"]
            for m, v in t.items()
            if isinstance(v, dict) and "difference" in v
        },
        "held_out_slates": {
            k: ranker["held_out_slates"][k]["ndcg@10"]["mean"]
            for k in ("ranker", "retrieval", "logged")
        },
        "importance": ranker["importance"],
    }
    return dataclasses.replace(
        base,
        run_id=f"{run_dir.name}+ranker",
        model=RANKED_MODEL,
        config={**base.config, "ranker": ranker["job"], "ranker_fit": ranker["fit"]},
        metrics=metrics,
        segment_metrics=t["segments"]["two-tower+ranker"],
        artefacts={
            "run_dir": str(run_dir),
            "report": str(RunDir(run_dir).ranker / RANKER_REPORT),
            "ranker": str(RunDir(run_dir).ranker),
        },
    )


def _two_stage_record(base: Any, run_dir: Path, two_stage: dict[str, Any]) -> Any:
    """The registry row of ``run_dir``'s two-stage system (its test-week comparison)."""
    from training.two_stage import TWO_STAGE_MODEL_NAME, TWO_STAGE_REPORT, two_stage_dir

    t = two_stage["test"]
    metrics: dict[str, Any] = {}
    for m, v in t.items():
        if isinstance(v, dict) and isinstance(v.get("two-stage"), dict):
            for name, ci in v.items():
                if "−" not in name:  # the systems, not their differences
                    key = TWO_STAGE_MODEL_NAME if name == "two-stage" else name
                    metrics.setdefault(key, {})[f"test/{m}"] = ci["mean"]
    metrics["importance"] = two_stage["importance"]
    metrics["candidates"] = {
        k: v for k, v in two_stage["rows"].items() if k.startswith(("candidate", "by_source"))
    }
    return dataclasses.replace(
        base,
        run_id=f"{run_dir.name}+{TWO_STAGE_MODEL_NAME}",
        model=TWO_STAGE_MODEL_NAME,
        config={**base.config, "two_stage": two_stage["job"], "fit_run": two_stage["fit_run"]},
        metrics=metrics,
        segment_metrics={},
        artefacts={
            "run_dir": str(run_dir),
            "report": str(two_stage_dir(run_dir) / TWO_STAGE_REPORT),
            "two_stage": str(two_stage_dir(run_dir)),
        },
    )


def contender(
    ws: Workspace,
    config: DailyConfig,
    label: str,
    model: str,
    run_dir: Path,
    params: Mapping[str, Any] | None = None,
) -> Any:
    """A gate contender; "two-tower+ranker" is scored by re-ranking its run's two-tower, the
    "two-stage" system by its candidates and discovery ranker (``jobs.two_stage``), a peer
    (served through slates, ``jobs.peer``) fitted afresh with ``params``."""
    from evaluation.gate import Contender
    from jobs.ranker import ranked_per_user
    from jobs.two_stage import two_stage_gate_values
    from training.ranker import RANKED_MODEL
    from training.two_stage import TWO_STAGE_MODEL_NAME

    if model == TWO_STAGE_MODEL_NAME:
        return Contender(
            label,
            model,
            run_dir,
            per_user=lambda data, metric: two_stage_gate_values(
                ws, run_dir, data, metric, config.features
            ),
        )

    if model != RANKED_MODEL:
        return Contender(label, model, run_dir, params=params)
    return Contender(
        label,
        model,
        run_dir,
        per_user=lambda data, metric: ranked_per_user(ws, run_dir, data, metric, config.features),
    )
