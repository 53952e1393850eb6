"""``tastemaker daily``: one idempotent cycle for a day, and ``tastemaker models``.

``daily --date D`` (or ``--from D1 --to D2`` to replay a range, one day after another):

1. **ingest** the raw objects that arrived up to ``D`` (later partitions wait for their day);
2. **features** as of the end of the lake (point-in-time; the online store is refreshed);
3. **train** a two-tower challenger (from scratch, or with ``--warm-start`` from the champion's
   weights, :mod:`training.warm_start`);
4. **evaluate** it against the baselines on the fresh holdout (the last ``test_days``);
4b. with ``--ranker``: the two-tower trains without the refit on the validation week, and
   the **ranker** (:mod:`training.ranker`) is fitted on that week's logged slates against it
   (so its retrieval scores there are out of sample), then "retrieval + ranker" is gated
   against "retrieval alone" of the same run with the same rules; the winner of the two is
   the day's challenger (both are registered, the other one ``rejected``);
5. **gate** the challenger against the champion on the same holdout (:mod:`evaluation.gate`);
6. **export + publish** its bundle only when the gate promotes it (with ``ranker.ubj`` only
   when the challenger is "retrieval + ranker"); otherwise the champion's bundle keeps serving
   and the registry records the challenger as ``rejected``;
7. **engagement** (CTR, stream-through, follow rate, 7/14-day churn by segment) from the lake,
   the **regression alarm** for ``D``, plots, and a summary in ``daily/<D>/``.

A day that finished is not run again (its ``daily/<D>/summary.json`` is printed instead), so
re-running a date changes nothing. A failing step raises :class:`DailyStepError` naming the
step; nothing is published before step 6, so the current bundle keeps serving.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from core.atomic import write_bytes, write_json, write_table
from core.workspace import Workspace
from data.features.config import FeatureConfig
from evaluation.alarm import AlarmConfig
from evaluation.gate import GateConfig
from training.train_config import TrainConfig, lake_config

log = logging.getLogger("tastemaker.daily")
ALARM_EXIT = 3  # `tastemaker daily` exit status when the regression alarm fires
CHALLENGER_MODEL = "two-tower"


class DailyStepError(RuntimeError):
    """A step of the daily cycle failed; the bundle that was serving still serves."""

    def __init__(self, day: date, step: str, cause: BaseException) -> None:
        super().__init__(f"daily {day}: step '{step}' failed: {type(cause).__name__}: {cause}")
        self.day, self.step = day, step


@dataclass(frozen=True)
class DailyConfig:
    train: TrainConfig = field(default_factory=lake_config)  # what `tastemaker demo` trains
    features: FeatureConfig = field(default_factory=FeatureConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    alarm: AlarmConfig = field(default_factory=AlarmConfig)
    accounts_url: str | None = None
    registry_url: str | None = None  # default: evaluation.model_registry.default_registry_url
    warm_start: bool = False  # start the challenger from the champion's weights
    # fit the ranking stage against a no-refit two-tower and gate "retrieval + ranker" against
    # "retrieval alone" (off by default: it costs the two-tower the validation week, and on the
    # demo world the ranker loses Recall@20, README "The ranking stage")
    ranker: bool = False


def day_dir(ws: Workspace, day: date) -> Path:
    return ws.root / "daily" / day.isoformat()


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_day(
    ws: Workspace,
    day: date,
    config: DailyConfig | None = None,
    train_fn: Callable[[Workspace, TrainConfig], Path] | None = None,
) -> dict[str, Any]:
    """Run (or, if it already finished, return) the cycle for ``day``; see the module doc."""
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
    ingest = step(
        "ingest",
        lambda: run_ingest(ws, accounts_url=config.accounts_url, now=end_of_day, until=day),
    )
    features = step("features", lambda: build_features(ws, config.features))
    init_from = _champion_run(ws, config) if config.warm_start else None
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
    )

    eng = step("engagement", lambda: engagement_table(ws))
    alarms = check(eng, day.isoformat(), config.alarm)
    for alarm in alarms:
        log.warning(alarm.line())
    write_table(out_dir / "engagement.parquet", _arrow(eng))
    plots = step("plots", lambda: [*_plots(eng, out_dir), _gate_plot(decision, out_dir)])
    step("dashboard", lambda: write_dashboard(ws, config.registry_url))
    summary = {
        "day": day.isoformat(),
        "challenger": _challenger_id(run_dir, ranker),
        "decision": decision.as_dict(),
        "ranker": _ranker_summary(run_dir, ranker, serving),
        "promoted": decision.promote,
        "bundle_version": bundle_version,
        "serving_run": serving.run_id if serving else None,
        "serving_bundle": serving.bundle_version if serving else None,
        "test_recall@20": {m: v.get("test/recall@20") for m, v in evaluation["models"].items()},
        "engagement": _today_vs_yesterday(eng, day),
        "alarms": [a.as_dict() for a in alarms],
        "plots": [str(p) for p in plots],
        "ingest": {k: ingest[k] for k in ("read", "accepted", "duplicates", "quarantined")},
        "timings": timings,
    }
    write_bytes(out_dir / "report.md", render_summary(summary).encode())
    write_json(done, summary)  # last: the day counts as done only when everything is written
    return summary


def _fit_ranker(ws: Workspace, run_dir: Path, config: DailyConfig) -> dict[str, Any]:
    """Fit the ranker against ``run_dir`` (a no-refit two-tower) and gate "retrieval + ranker"
    against "retrieval alone" with the daily gate's rules; the job's record."""
    from training.ranker import RankerJobConfig, train_ranker

    job = RankerJobConfig(n_boot=config.gate.n_boot, gate=config.gate)
    return dict(train_ranker(ws, run_dir, job, config.features))


def _challenger_id(run_dir: Path, ranker: dict[str, Any] | None) -> str:
    """The registry id of the day's challenger: the run, or ``<run>+ranker`` when the ranker
    beat its own retrieval."""
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


def _champion_run(ws: Workspace, config: DailyConfig) -> Path | None:
    """The champion's run dir (the warm start's origin), or None without a champion."""
    from evaluation.model_registry import default_registry_url, open_registry

    with open_registry(config.registry_url or default_registry_url(ws)) as r:
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
) -> tuple[Any, str | None, Any]:
    """Register ``run_dir``'s two-tower, gate it against the champion (most-popular when there
    is none) and publish its bundle only when it is promoted. Returns ``(decision,
    bundle_version or None, the champion record after the decision)``. Shared by the daily
    cycle and ``tastemaker demo``.

    ``ranker``: the record of ``training.ranker.train_ranker`` against ``run_dir``. Then
    "retrieval + ranker" is registered too (``<run>+ranker``, model ``two-tower+ranker``); when
    its gate against "retrieval alone" (in the record) promoted it, it is the challenger the
    champion faces and the published bundle carries the ranker, and the plain run is
    ``rejected``; otherwise the ranker row is ``rejected`` and the bundle has no ranker."""
    from evaluation.gate import run_gate
    from evaluation.model_registry import ModelRecord, default_registry_url, open_registry
    from training.export import export_bundle
    from training.ranker import RANKED_MODEL

    def run(name: str, fn: Callable[[], Any]) -> Any:
        return step(name, fn) if step is not None else fn()

    registry = open_registry(config.registry_url or default_registry_url(ws))
    try:
        champion = registry.champion()
        record = ModelRecord(
            run_id=run_dir.name,
            model=CHALLENGER_MODEL,
            day=day,
            git_sha=_git_sha(),
            config={
                "train": dataclasses.asdict(config.train),
                "features": dataclasses.asdict(config.features),
            },
            data_snapshot=snapshot or {},
            metrics=evaluation["models"],
            segment_metrics=evaluation["segments"].get(CHALLENGER_MODEL, {}),
            artefacts={"run_dir": str(run_dir), "report": str(run_dir / "report.md")},
        )
        registry.register(record)
        ranked_wins = False
        if ranker is not None:
            registry.register(_ranker_record(record, run_dir, ranker))
            ranked_wins = bool(ranker["temporal"]["gate"]["promote"])
        reference = None
        if champion is not None:
            reference = _contender(
                ws,
                config,
                f"champion {champion.run_id}",
                champion.model,
                Path(champion.artefacts["run_dir"]),
            )
        model = RANKED_MODEL if ranked_wins else CHALLENGER_MODEL
        run_id = f"{run_dir.name}+ranker" if ranked_wins else run_dir.name
        challenger = _contender(ws, config, f"challenger {run_id}", model, run_dir)
        overfit = bool(evaluation["overfit_flags"].get(CHALLENGER_MODEL, False))
        decision = run("gate", lambda: run_gate(ws, reference, challenger, config.gate, overfit))
        if ranker is not None:  # the loser of "retrieval + ranker" vs "retrieval alone"
            sibling = run_dir.name if ranked_wins else f"{run_dir.name}+ranker"
            gate = {k: v for k, v in ranker["temporal"]["gate"].items() if k != "summary"}
            registry.set_decision(sibling, "rejected", {**gate, "ranker_gate": True})
        bundle_version = None
        if decision.promote:
            bundle_version = Path(
                run("export", lambda: export_bundle(ws, run_dir, ranker=ranked_wins))
            ).name
            registry.set_decision(run_id, "challenger", decision.as_dict())
            registry.set_bundle(run_id, bundle_version)
            registry.promote(run_id)
        else:
            registry.set_decision(run_id, "rejected", decision.as_dict())
        return decision, bundle_version, registry.champion()
    finally:
        registry.close()


def _ranker_record(base: Any, run_dir: Path, ranker: dict[str, Any]) -> Any:
    """The registry row of "``run_dir``'s two-tower re-ranked by its ranker"."""
    from training.ranker import RANKED_MODEL, RANKER_DIR

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
            "report": str(run_dir / RANKER_DIR / "report.md"),
            "ranker": str(run_dir / RANKER_DIR),
        },
    )


def _contender(ws: Workspace, config: DailyConfig, label: str, model: str, run_dir: Path) -> Any:
    """A gate contender; "two-tower+ranker" is scored by re-ranking its run's two-tower."""
    from evaluation.gate import Contender
    from training.ranker import RANKED_MODEL, ranked_per_user

    if model != RANKED_MODEL:
        return Contender(label, model, run_dir)
    return Contender(
        label,
        model,
        run_dir,
        per_user=lambda data, metric: ranked_per_user(ws, run_dir, data, metric, config.features),
    )


def _arrow(frame: Any) -> Any:
    import pyarrow as pa

    return pa.Table.from_pandas(frame, preserve_index=False)


def _today_vs_yesterday(eng: Any, day: date) -> dict[str, Any]:
    rows = eng[(eng["version"] == "*") & (eng["segment"] == "all=all")].set_index("date")
    out: dict[str, Any] = {}
    for label, d in (("today", day), ("yesterday", day - timedelta(days=1))):
        key = d.isoformat()
        if key in rows.index:
            r = rows.loc[key]
            out[label] = {
                "impressions": int(r["impressions"]),
                "ctr": float(r["ctr"]),
                "stream_through": float(r["stream_through"]),
                "follow_rate": float(r["follow_rate"]),
            }
    for col in ("churn7", "churn14"):  # the latest day whose following window is complete
        known = rows[col].dropna()
        if len(known):
            out[f"latest_{col}"] = {"date": known.index[-1], "value": float(known.iloc[-1])}
    return out


def _plots(eng: Any, out_dir: Path) -> list[Path]:
    """CTR and 7-day churn over days, one line per segment value, one panel per field."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = eng[eng["version"] == "*"]
    paths = []
    for metric, label in (("ctr", "CTR (clicks per 100 impressions)"), ("churn7", "7-day churn")):
        fields = ["all", "age_group", "gender", "country", "tenure"]
        fig, axes = plt.subplots(1, len(fields), figsize=(4 * len(fields), 3.2), sharey=True)
        for ax, f in zip(axes, fields, strict=True):
            for seg, g in rows[rows["segment"].str.startswith(f + "=")].groupby("segment"):
                g = g[g["impressions"] >= 20] if metric == "ctr" else g
                ax.plot(g["date"], g[metric], label=str(seg).split("=", 1)[1], lw=1)
            ax.set_title(f)
            ax.tick_params(axis="x", labelrotation=90, labelsize=6)
            ax.legend(fontsize=6)
        axes[0].set_ylabel(label)
        fig.tight_layout()
        path = out_dir / f"{metric}_by_segment.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def _gate_plot(decision: Any, out_dir: Path) -> Path:
    """Champion against challenger on the gate's metric, the delta's interval as a whisker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    champ, chall = decision.champion_score, decision.challenger_score
    lo, hi = decision.ci
    ax.bar([0, 1], [champ, chall], color=["#98a2b3", "#1f7a5c" if decision.promote else "#b42318"])
    ax.errorbar(
        [1],
        [champ + decision.delta],
        yerr=[[decision.delta - lo], [hi - decision.delta]],
        color="#101828",
        capsize=6,
    )
    ax.set_xticks(
        [0, 1], [decision.champion.split(" (")[0][:24], decision.challenger[:24]], fontsize=7
    )
    ax.set_ylabel(f"{decision.metric} ({decision.n_users} users)")
    ax.set_title("promoted" if decision.promote else "kept out", fontsize=9)
    fig.tight_layout()
    path = out_dir / "champion_vs_challenger.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def render_summary(summary: dict[str, Any]) -> str:
    d = summary["decision"]
    eng = summary["engagement"]
    lines = [
        f"# Daily cycle {summary['day']}",
        "",
        f"Challenger `{summary['challenger']}`: **{'promoted' if d['promote'] else 'kept out'}**. "
        + " ".join(f"{r}." for r in d["reasons"]),
        "",
        f"Serving: run `{summary['serving_run']}`, bundle `{summary['serving_bundle']}`.",
        "",
        "| model | test Recall@20 |",
        "|---|---|",
    ]
    lines += [f"| {m} | {v:.4f} |" for m, v in summary["test_recall@20"].items() if v is not None]
    r = summary.get("ranker")
    if r:
        ndcg = r["held_out_ndcg@10"]
        lines += [
            "",
            f"Ranker `{r['run_id']}` (held-out slates NDCG@10 {ndcg['ranker']:.4f} vs "
            f"retrieval {ndcg['retrieval']:.4f}): {r['summary']}. "
            + (
                "The serving bundle carries it."
                if r["serving"]
                else "The serving bundle has no ranker from this day."
            ),
        ]
    if "today" in eng:
        t, y = eng["today"], eng.get("yesterday")
        lines += [
            "",
            f"CTR today {t['ctr']:.2f} per 100 impressions"
            + (f" (yesterday {y['ctr']:.2f})" if y else "")
            + f"; stream-through {t['stream_through']:.2f}; "
            f"follows {t['follow_rate']:.2f} per 100 impressions.",
        ]
    for h in (7, 14):
        if f"latest_churn{h}" in eng:
            c = eng[f"latest_churn{h}"]
            lines.append(
                f"{h}-day churn of the users active in the week to {c['date']}: {c['value']:.3f}."
            )
    lines += ["", "## Alarms", ""]
    lines += [
        f"- {a['segment']}: {a['metric']} {a['value']:.3f} < {a['threshold']:.3f}"
        for a in summary["alarms"]
    ] or ["none"]
    return "\n".join(lines) + "\n"


# --- CLI ----------------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("daily", help="one idempotent daily cycle (ingest ... gate ... publish)")
    p.add_argument("--date", type=date.fromisoformat, help="the day to run (YYYY-MM-DD)")
    p.add_argument("--from", dest="start", type=date.fromisoformat, help="replay from this day")
    p.add_argument("--to", dest="end", type=date.fromisoformat, help="... to this day")
    p.add_argument("--accounts-url", default=None)
    p.add_argument(
        "--warm-start",
        action="store_true",
        help="start each challenger from the champion's weights (default: scratch)",
    )
    p.add_argument(
        "--ranker",
        action="store_true",
        help="train the two-tower without refit, fit the XGBoost ranker against it and "
        "gate 'retrieval + ranker' against 'retrieval alone'",
    )
    p.add_argument(
        "--min-delta",
        type=float,
        default=GateConfig.min_delta,
        help="Recall@20 margin a challenger must win by",
    )
    p.set_defaults(func=_daily)

    m = sub.add_parser("models", help="the model registry: list | promote RUN | rollback")
    m.add_argument("action", choices=("list", "promote", "rollback"))
    m.add_argument("run_id", nargs="?")
    m.add_argument("--accounts-url", default=None)
    m.set_defaults(func=_models)


def _days(args: argparse.Namespace) -> list[date]:
    if args.date and not (args.start or args.end):
        return [args.date]
    if args.start and args.end and not args.date:
        if args.end < args.start:
            raise ValueError(f"--to {args.end} is before --from {args.start}")
        return [args.start + timedelta(days=i) for i in range((args.end - args.start).days + 1)]
    raise ValueError("pass --date D, or --from D1 --to D2")


def _daily(args: argparse.Namespace) -> int:
    config = DailyConfig(
        accounts_url=args.settings.accounts_url,
        registry_url=args.settings.registry_url,
        warm_start=args.warm_start,
        gate=GateConfig(min_delta=args.min_delta),
        ranker=args.ranker,
    )
    status = 0
    for day in _days(args):
        summary = run_day(args.ws, day, config)
        d = summary["decision"]
        again = " (already done)" if summary.get("already_done") else ""
        print(
            f"{summary['day']}{again}: challenger {summary['challenger']} "
            f"{'PROMOTED' if d['promote'] else 'kept out'} — {'; '.join(d['reasons'])}"
        )
        if summary.get("ranker"):
            print(f"  ranker: {summary['ranker']['summary']}")
        print(
            f"  serving bundle {summary['serving_bundle']}; "
            f"engagement {json.dumps(summary['engagement'].get('today', {}))}"
        )
        for a in summary["alarms"]:
            print(
                "  ALARM " + f"{a['segment']}: {a['metric']} {a['value']:.3f} "
                f"< {a['threshold']:.3f} (trailing mean {a['baseline']:.3f})"
            )
            status = ALARM_EXIT
        print(f"  report: {day_dir(args.ws, day) / 'report.md'}")
    return status


def _models(args: argparse.Namespace) -> int:
    from evaluation.model_registry import default_registry_url, open_registry
    from index.bundle import set_current

    with open_registry(args.settings.registry_url or default_registry_url(args.ws)) as registry:
        if args.action == "list":
            for r in registry.runs():
                score = r.metrics.get(r.model, {}).get("test/recall@20")
                cell = f"{score:.4f}" if isinstance(score, float) else "-"
                print(
                    f"{r.run_id:36s} {r.model:10s} {r.status:10s} day={r.day} "
                    f"recall@20={cell} bundle={r.bundle_version}"
                )
            return 0
        if args.action == "promote":
            if not args.run_id:
                raise ValueError("models promote needs a RUN id (see `tastemaker models list`)")
            target = registry.get(args.run_id)
            if not target.bundle_version:
                raise ValueError(
                    f"run {args.run_id} has no bundle; export it first "
                    f"(`tastemaker export --run {target.artefacts.get('run_dir')}`)"
                )
            set_current(args.ws.bundles, target.bundle_version)
            registry.promote(args.run_id)
            print(f"champion: {args.run_id} (bundle {target.bundle_version})")
            return 0
        demoted, restored = registry.rollback()
        set_current(args.ws.bundles, str(restored.bundle_version))
        print(
            f"rolled back: {demoted.run_id} -> {restored.run_id} (bundle {restored.bundle_version})"
        )
        return 0
