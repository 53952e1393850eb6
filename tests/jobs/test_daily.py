"""Three simulated days of the daily cycle, end to end, on a small synthetic world.

Day 1 publishes a champion (it must beat most-popular on the fresh holdout); day 2 a broken
challenger (weights that never trained) is kept out by the gate and the champion's bundle keeps
serving; day 3 a planted collapse of one country's clicks raises the alarm for that segment
and no other. Re-running a day changes nothing.
"""

from __future__ import annotations

import dataclasses
import gzip
import random
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import orjson
import pytest

from core.workspace import Workspace
from data.features.config import FeatureConfig
from evaluation.alarm import AlarmConfig
from evaluation.gate import DEFAULT_BENCHMARKS, GateConfig
from evaluation.model_registry import default_registry_url, open_registry
from index.bundle import current_version
from jobs.tune import save_results
from training.train_config import TrainConfig
from world.config import WorldConfig
from world.generate import generate_world

pytestmark = pytest.mark.slow

# built-in demographics, so the world is the same with or without ../shared/data beside the clone
WORLD = dataclasses.replace(
    WorldConfig.demo(seed=5),
    n_users=4000,
    n_artists=400,
    n_genres=10,
    days=28,
    use_real_demographics=False,
)
# the world's very last day looks different (more slate clicks, fewer of them streamed: an edge
# effect of the simulation window, which the alarm flags), so the three days end the day before
DAYS = [WORLD.start + timedelta(days=WORLD.days - 4 + i) for i in range(3)]
# the two-stage day needs no segment alarm, only enough listeners for a gate: half the world
SMALL_WORLD = dataclasses.replace(WORLD, n_users=2000)


def _plant_click_collapse(ws: Workspace, day: date) -> str:
    """Drop every click of the country with the most impressions, in the raw objects that
    arrive on ``day``; returns that country."""
    files = sorted((ws.raw_events / f"dt={day.isoformat()}").glob("*.jsonl.gz"))
    lines = [ln for f in files for ln in gzip.decompress(f.read_bytes()).splitlines()]
    shown = Counter()
    for ln in lines:
        try:
            ev = orjson.loads(ln)
        except orjson.JSONDecodeError:
            continue
        if isinstance(ev, dict) and ev.get("event_type") == "impression" and ev.get("country"):
            shown[ev["country"]] += 1
    country, n = shown.most_common(1)[0]
    assert 250 <= n <= 0.3 * sum(shown.values()), shown  # large enough to see, small enough
    # not to drag every other segment down with it

    def keep(ln: bytes) -> bool:
        try:
            ev = orjson.loads(ln)
        except orjson.JSONDecodeError:
            return True
        return not (
            isinstance(ev, dict)
            and ev.get("event_type") == "click"
            and ev.get("country") == country
        )

    for f in files:
        kept = [ln for ln in gzip.decompress(f.read_bytes()).splitlines() if keep(ln)]
        f.write_bytes(gzip.compress(b"\n".join(kept) + b"\n"))
    return country


def test_three_days_champion_then_rejection_then_segment_alarm(tmp_path, demo_mode) -> None:
    from jobs.daily import DailyConfig, run_day
    from training.train import train_two_tower

    ws = Workspace(tmp_path / "ws").ensure()
    generate_world(ws, WORLD)
    config = DailyConfig(
        train=TrainConfig(epochs=4, batch_size=512),
        features=FeatureConfig(test_days=3, valid_days=3),
        gate=GateConfig(n_boot=500, segment_min_users=40, segment_max_drop=0.08),
        alarm=AlarmConfig(),  # the defaults: at least 200 trials on the day
        # the champion alone: this test is about champion, rejection and alarm (the benchmark
        # reference is tested in the ranker test below and in tests/evaluation)
        benchmarks=(),
        two_stage=False,  # the two-stage day has its own test below
    )

    day1 = run_day(ws, DAYS[0], config)
    assert day1["promoted"], day1["decision"]
    champion_bundle = current_version(ws.bundles)
    assert champion_bundle == day1["bundle_version"]
    _assert_warm(ws, champion_bundle)

    def broken(ws_: Workspace, cfg: TrainConfig) -> Path:  # weights that never move
        return train_two_tower(ws_, dataclasses.replace(cfg, lr=1e-12, epochs=1, refit=False))

    day2 = run_day(ws, DAYS[1], config, train_fn=broken)
    assert not day2["promoted"], day2["decision"]
    build = orjson.loads(ws.feature_dir.meta.read_bytes())["build"]  # from day 1's state
    assert build["mode"] == "incremental" and build["files_read"] > 0, build
    assert any("interval" in r or "below" in r for r in day2["decision"]["reasons"])
    assert current_version(ws.bundles) == champion_bundle
    with open_registry(default_registry_url(ws)) as registry:
        statuses = {r.run_id: r.status for r in registry.runs()}
    assert statuses == {day1["challenger"]: "champion", day2["challenger"]: "rejected"}

    again = run_day(ws, DAYS[1], config, train_fn=broken)  # idempotent: nothing re-runs
    assert again["already_done"] and again["challenger"] == day2["challenger"]

    country = _plant_click_collapse(ws, DAYS[2])
    day3 = run_day(ws, DAYS[2], config)
    flagged = {(a["segment"], a["metric"]) for a in day3["alarms"]}
    assert {s for s, _ in flagged} == {f"country={country}"}, flagged
    assert (f"country={country}", "ctr") in flagged
    for plot in ("ctr_by_segment.png", "churn7_by_segment.png", "champion_vs_challenger.png"):
        assert (ws.daily / DAYS[2].isoformat() / plot).is_file()


def _assert_warm(ws: Workspace, version: str) -> None:
    """Warm, then publish: the service that picks up the promoted bundle answers >= 99 % of a
    sample of the users with history from slates precomputed for that bundle."""
    import pyarrow.parquet as pq

    from core.settings import Settings
    from serving.app import create_app
    from serving.recommender import from_slate

    users = pq.read_table(ws.feature_dir.user_features, columns=["user_key", "history"])
    keys = [k for k, h in zip(*users.to_pydict().values(), strict=True) if h]
    sample = random.Random(0).sample(keys, min(500, len(keys)))
    app = create_app(Settings(workspace=ws.root, reload_interval_s=0))
    recommender = app.state.recommender
    model = recommender.holder.current
    assert model.version == version
    sources = Counter()
    for key in sample:  # the request path after pseudonymisation (the world's ids are hashed)
        slate = recommender.slate(key, model.version)
        sources[from_slate(model, slate, 10).source if slate is not None else "live"] += 1
    assert sources["precomputed"] >= 0.99 * len(sample), sources


def test_daily_ranker_is_gated_recorded_and_shipped_only_when_it_wins(tmp_path, demo_mode) -> None:
    """`daily --ranker`: the two-tower trains without refit, the ranker is fitted against it,
    "retrieval + ranker" is gated against "retrieval alone"; both are registered with their
    decisions, and the published bundle carries ranker.ubj iff the ranker is the champion."""
    import json

    from evaluation.gate import Contender, run_gate
    from index import load_bundle
    from jobs.daily import DailyConfig, run_day
    from jobs.daily.publish import contender
    from training.export import export_bundle
    from training.ranker import RANKED_MODEL

    ws = Workspace(tmp_path / "ws").ensure()
    generate_world(ws, WORLD)
    gate = GateConfig(n_boot=200, segment_min_users=40, segment_max_drop=0.08)
    config = DailyConfig(
        train=TrainConfig(epochs=4, batch_size=512),
        features=FeatureConfig(test_days=3, valid_days=3),
        gate=gate,
        ranker=True,
        two_stage=False,  # the ranker alone: the two-stage day has its own test below
    )
    # tuned params for one benchmark, as `tastemaker tune --dataset demo --model ease` saves them
    save_results(ws, "demo", {"validation": {}, "models": {"ease": {"best_params": {"l2": 50.0}}}})
    day = run_day(ws, DAYS[0], config)
    run_dir = ws.root / "runs" / day["ranker"]["run_id"].removesuffix("+ranker")
    assert json.loads((run_dir / "config.json").read_text())["train"]["refit"] is False
    ranker_won = day["ranker"]["decision"]["promote"]
    assert day["ranker"]["decision"]["challenger"] == "retrieval + ranker"
    assert day["challenger"] == run_dir.name + ("+ranker" if ranker_won else "")

    with open_registry(default_registry_url(ws)) as registry:
        rows = {r.run_id: r for r in registry.runs()}
    # every benchmark the gate scored beside the challenger is recorded, the best marked (and
    # serving, when it led the kept-out challenger and beat most-popular in its place)
    bench = {k: rows.pop(k) for k in list(rows) if rows[k].model in DEFAULT_BENCHMARKS}
    assert set(bench) == {f"{run_dir.name}~{m}" for m in DEFAULT_BENCHMARKS}
    verdict = day["decision"]["benchmark"]
    assert set(verdict["scores"]) == {
        f"benchmark {m}" + (" (tuned)" if m == "ease" else "") for m in DEFAULT_BENCHMARKS
    }
    assert bench[f"{run_dir.name}~ease"].config["params"] == {"l2": 50.0}
    best = [b for b in bench.values() if b.decision["best_benchmark"]]
    assert len(best) == 1 and verdict["model"] == best[0].model
    peer_serves = bool(day["decision"].get("instead", {}).get("promote"))
    assert best[0].status == ("champion" if peer_serves else "benchmark")
    assert all(b.status == "benchmark" for b in bench.values() if b is not best[0])
    assert verdict["scores"][verdict["label"]] == max(verdict["scores"].values())
    # promoted only if it beat the best benchmark too
    assert not day["promoted"] or verdict["decision"]["promote"]
    assert set(rows) == {run_dir.name, f"{run_dir.name}+ranker"}
    ranked = rows[f"{run_dir.name}+ranker"]
    assert ranked.model == RANKED_MODEL and ranked.artefacts["run_dir"] == str(run_dir)
    assert "reasons" in ranked.decision and ranked.metrics[RANKED_MODEL]["test/recall@20"] >= 0
    loser = rows[run_dir.name if ranker_won else f"{run_dir.name}+ranker"]
    assert loser.status == "rejected" and loser.decision["ranker_gate"]
    winner = rows[day["challenger"]]
    assert winner.status == ("champion" if day["promoted"] else "rejected")
    assert winner.decision["promote"] == day["promoted"]

    current = current_version(ws.bundles)
    if day["promoted"]:
        bundle = load_bundle(ws.bundles / current)
        assert current == day["bundle_version"] == winner.bundle_version
        has = (ws.bundles / current / "ranker.ubj").is_file()
        assert has == ranker_won == ("ranker" in bundle.manifest), (has, ranker_won)
        assert day["ranker"]["serving"] == ranker_won
    # the export follows the decision either way: the same run with and without its ranker
    for carry in (False, True):
        path = export_bundle(ws, run_dir, ranker=carry)
        assert (path / "ranker.ubj").is_file() == carry
        assert ("ranker" in load_bundle(path).manifest) == carry

    # the gate scores a "two-tower+ranker" contender as the ranker job did on the same users
    again = run_gate(
        ws,
        Contender("retrieval", "two-tower", run_dir),
        contender(ws, config, "ranked", RANKED_MODEL, run_dir),
        gate,
    )
    job = day["ranker"]["decision"]
    assert again.n_users == job["n_users"]
    assert again.challenger_score == pytest.approx(job["challenger_score"], abs=1e-6)
    assert again.champion_score == pytest.approx(job["champion_score"], abs=0.01)


def test_daily_two_stage_is_gated_recorded_and_served_only_when_it_wins(tmp_path, demo_mode):
    """`daily --two-stage`: a no-refit sibling fits the discovery ranker, the refit challenger
    serves it; the two-stage system is registered, gated against retrieval alone and then,
    as the day's servable system, against the champion and the best benchmark; the bundle
    carries it iff it is the champion, and the gate scores it as the job did."""
    import json

    from evaluation.gate import Contender, run_gate
    from index import NEIGHBOURS_FILE, TWO_STAGE_FILE, load_bundle
    from jobs.daily import DailyConfig, run_day
    from jobs.daily.publish import contender
    from training.two_stage import TWO_STAGE_MODEL_NAME

    ws = Workspace(tmp_path / "ws").ensure()
    generate_world(ws, SMALL_WORLD)
    gate = GateConfig(n_boot=200, segment_min_users=40, segment_max_drop=0.08)
    config = DailyConfig(
        train=TrainConfig(epochs=4, batch_size=512),
        features=FeatureConfig(test_days=3, valid_days=3),
        gate=gate,
        two_stage=True,
        benchmarks=("itemknn",),  # the best peer of these worlds; all four: the ranker test
    )
    day = run_day(ws, DAYS[0], config)
    ts = day["two_stage"]
    run_dir = ws.root / "runs" / ts["run_id"].removesuffix(f"+{TWO_STAGE_MODEL_NAME}")
    assert json.loads((run_dir / "config.json").read_text())["train"]["refit"] is True
    fit_cfg = json.loads((ws.root / "runs" / ts["fit_run"] / "config.json").read_text())
    assert fit_cfg["train"]["refit"] is False and ts["fit_run"] != run_dir.name
    assert ws.latest_run() == run_dir  # the sibling does not become the latest run
    record = json.loads((run_dir / "two_stage" / "two_stage.json").read_text())
    won = record["test"]["gate"]["retrieval alone"]["promote"]
    assert day["challenger"] == (ts["run_id"] if won else run_dir.name)

    with open_registry(default_registry_url(ws)) as registry:
        rows = {r.run_id: r for r in registry.runs() if r.status != "benchmark"}
    assert set(rows) == {run_dir.name, ts["run_id"]}
    staged = rows[ts["run_id"]]
    assert staged.model == TWO_STAGE_MODEL_NAME
    assert staged.metrics[TWO_STAGE_MODEL_NAME]["test/recall@20"] == pytest.approx(
        record["test"]["recall@20"]["two-stage"]["mean"]
    )
    loser = rows[run_dir.name if won else ts["run_id"]]
    assert loser.status == "rejected" and loser.decision["two_stage_gate"]
    winner = rows[day["challenger"]]
    assert winner.status == ("champion" if day["promoted"] else "rejected")
    if day["promoted"]:
        folder = ws.bundles / current_version(ws.bundles)
        has = {TWO_STAGE_FILE, NEIGHBOURS_FILE} <= set(load_bundle(folder).files)
        assert has == won == ts["serving"]

    # the gate scores a "two-stage" contender as the job did on the same users
    again = run_gate(
        ws,
        Contender("retrieval", "two-tower", run_dir),
        contender(ws, config, "two-stage", TWO_STAGE_MODEL_NAME, run_dir),
        gate,
    )
    job = record["test"]["gate"]["retrieval alone"]
    assert again.n_users == job["n_users"]
    assert again.challenger_score == pytest.approx(job["challenger_score"], abs=1e-6)


def test_a_peer_ahead_of_the_challenger_serves_through_its_slates(tmp_path, demo_mode):
    """Day one, a challenger that never trained: it trails the best benchmark (the tuned
    ItemKNN), so that peer faces most-popular in its place, wins, and is what serves: its
    bundle carries its slates (params as tuned), the API answers from them, and the registry
    makes its benchmark row the champion."""
    from index import PEER_SLATES_FILE, load_bundle
    from jobs.daily import DailyConfig, run_day
    from training.train import train_two_tower

    ws = Workspace(tmp_path / "ws").ensure()
    generate_world(ws, SMALL_WORLD)
    tuned = {"neighbours": 60, "shrink": 5.0}
    save_results(ws, "demo", {"validation": {}, "models": {"itemknn": {"best_params": tuned}}})
    config = DailyConfig(
        train=TrainConfig(epochs=1, batch_size=512, refit=False),
        features=FeatureConfig(test_days=3, valid_days=3),
        gate=GateConfig(n_boot=200, segment_min_users=40, segment_max_drop=0.08),
        two_stage=False,
        benchmarks=("popular", "itemknn"),
    )

    def broken(ws_: Workspace, cfg: TrainConfig) -> Path:  # weights that never move
        return train_two_tower(ws_, dataclasses.replace(cfg, lr=1e-12))

    day = run_day(ws, DAYS[0], config, train_fn=broken)
    decision = day["decision"]
    assert not decision["promote"]
    assert decision["benchmark"]["label"] == "benchmark itemknn (tuned)"
    instead = decision["instead"]
    assert instead["promote"], instead
    assert instead["challenger"] == "benchmark itemknn (tuned)"
    assert instead["champion"].startswith("most-popular")
    peer_id = f"{day['challenger']}~itemknn"
    assert day["serving_run"] == peer_id and day["serving_model"] == "itemknn"

    version = current_version(ws.bundles)
    assert version == day["bundle_version"] == day["serving_bundle"]
    bundle = load_bundle(ws.bundles / version)
    assert PEER_SLATES_FILE in bundle.files and bundle.manifest["peer"]["params"] == tuned
    assert bundle.manifest["system"] == "itemknn (precomputed slates)"
    _assert_warm(ws, version)  # warm, then publish: its slates were in before CURRENT moved

    with open_registry(default_registry_url(ws)) as registry:
        rows = {r.run_id: r for r in registry.runs()}
        champion = registry.champion()
    assert champion is not None and champion.run_id == peer_id
    assert champion.model == "itemknn" and champion.bundle_version == version
    assert champion.config["params"] == tuned and champion.decision["best_benchmark"]
    assert rows[day["challenger"]].status == "rejected"
    assert rows[f"{day['challenger']}~popular"].status == "benchmark"
    report = (ws.daily / DAYS[0].isoformat() / "report.md").read_text()
    assert "In its place, `benchmark itemknn (tuned)`" in report
    assert f"Serving: `itemknn`, run `{peer_id}`" in report
