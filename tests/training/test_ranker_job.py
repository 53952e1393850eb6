"""The ranking stage (training.ranker, evaluation.ranking, jobs.ranker) on the tiny pipeline's
lake: point in time, refusal of an in-sample retrieval model, and the path to a served bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.constants import DAY_MS
from core.workspace import Workspace
from data.features.build import FeatureConfig, cutoffs, load_event_log
from evaluation.ranking import context_at, slate_metrics
from jobs.ranker import train_ranker
from training.inference import load_scorer
from training.ranker import RANKER_DIR, RankerJobConfig, build_slates, read_labelled


def _slate_days(labelled, lo: int, hi: int) -> list[int]:
    ts = labelled.column("ts_ms").to_numpy()
    return sorted({int(t // DAY_MS) for t in ts if lo <= t < hi})


def _slate_inputs(pipeline):
    """The tiny pipeline's workspace, feature config, event log, cutoffs, labelled slates and
    two-tower scorer: what building ranker slates needs."""
    ws, out = pipeline
    config = FeatureConfig()
    ev = load_event_log(ws, config)
    return ws, config, ev, cutoffs(ev, config), read_labelled(ws), load_scorer(out["run_dir"])


def test_features_of_a_day_never_see_that_day_or_later(pipeline) -> None:
    ws, config, ev, cut, labelled, scorer = _slate_inputs(pipeline)
    day = _slate_days(labelled, cut["valid"], cut["test"])[-2] * DAY_MS
    full = build_slates(labelled, ev, scorer, day, day + DAY_MS, config)
    cut_log = build_slates(labelled, ev.truncate(day), scorer, day, day + DAY_MS, config)
    assert len(full.data.y) > 0
    np.testing.assert_array_equal(full.data.x, cut_log.data.x)
    np.testing.assert_array_equal(full.data.y, cut_log.data.y)
    # the check can fail: the same day's events do change what a later context sees
    later = context_at(ev, day + DAY_MS, config).numeric
    assert not np.array_equal(later, context_at(ev.truncate(day), day + DAY_MS, config).numeric)
    assert np.array_equal(
        context_at(ev, day, config).numeric, context_at(ev.truncate(day), day, config).numeric
    )


def test_a_refit_two_tower_is_refused(pipeline) -> None:
    ws, out = pipeline
    assert json.loads((out["run_dir"] / "config.json").read_text())["train"]["refit"]
    with pytest.raises(ValueError, match="--no-refit"):
        train_ranker(ws, out["run_dir"])


def test_slate_metrics_known_answers() -> None:
    y = np.array([0, 1, 0, 0, 1, 0], np.float32)
    q = np.array([0, 0, 0, 1, 1, 1])
    perfect = slate_metrics(y, q, np.array([0.1, 0.9, 0.2, 0.3, 0.8, 0.1]))
    assert perfect["ndcg"].tolist() == [1.0, 1.0] and perfect["auc"].tolist() == [1.0, 1.0]
    worst = slate_metrics(y, q, np.array([0.9, 0.1, 0.5, 0.3, 0.0, 0.4]))
    assert worst["auc"].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(worst["ndcg"], 1 / np.log2(4))
    constant = slate_metrics(y, q, np.zeros(6))  # ties earn no credit for the click
    np.testing.assert_allclose(constant["auc"], 0.5)
    np.testing.assert_allclose(constant["ndcg"], 1 / np.log2(4))
    none = slate_metrics(np.zeros(3, np.float32), np.zeros(3, int), np.arange(3.0))
    assert none.empty  # a slate without a click has no ranking to score


@pytest.mark.slow
def test_ranker_from_lake_to_served_bundle(pipeline, tmp_path: Path) -> None:
    from serving.model import ServingModel
    from serving.recommender import recommend_from_row
    from training.export import export_bundle
    from training.train import TrainConfig, train_two_tower

    src, _ = pipeline
    ws = Workspace(tmp_path / "ws")
    for part in ("raw", "lake", "features"):
        shutil.copytree(src.root / part, ws.root / part)
    ws.ensure()
    run = train_two_tower(ws, TrainConfig(epochs=2, batch_size=256, refit=False))
    result = train_ranker(ws, run, RankerJobConfig(n_boot=50))
    assert (run / RANKER_DIR / "ranker.ubj").is_file()
    assert set(result["importance"]) <= set(result["features"])
    assert result["rows"]["train_clicks"] > 0 and result["rows"]["held_out_clicks"] > 0
    held = result["held_out_slates"]
    for name in ("ranker", "retrieval", "logged"):
        assert 0.0 <= held[name]["ndcg@10"]["mean"] <= 1.0
    t = result["temporal"]["recall@20"]
    assert t["difference"]["lo"] <= t["difference"]["mean"] <= t["difference"]["hi"]
    gate = result["temporal"]["gate"]
    assert gate["challenger"] == "retrieval + ranker" and gate["champion"] == "retrieval alone"
    assert gate["promote"] == (gate["ci"][0] > 0 and not gate["segment_regressions"])
    assert "## Feature importance" in (run / RANKER_DIR / "report.md").read_text()

    from index import RANKER_FILE, load_bundle

    bundle = load_bundle(export_bundle(ws, run))
    assert RANKER_FILE in bundle.files and bundle.manifest["ranker"]["features"]
    model = ServingModel.from_bundle(bundle)
    assert model.ranker is not None
    import pyarrow.parquet as pq

    row = next(
        r for r in pq.read_table(ws.features / "user_features.parquet").to_pylist() if r["history"]
    )
    items = recommend_from_row(model, row, 10).items
    assert len(items) == 10 and len({r.artist_id for r in items}) == 10
    assert not {r.artist_id for r in items} & set(row["seen"] or [])


def test_extra_negatives_are_unshown_non_clicks_of_clicked_slates(pipeline) -> None:
    ws, config, ev, cut, labelled, scorer = _slate_inputs(pipeline)
    plain = build_slates(labelled, ev, scorer, cut["valid"], cut["test"], config)
    more = build_slates(labelled, ev, scorer, cut["valid"], cut["test"], config, 3)
    clicked = np.unique(plain.data.qid[plain.data.y > 0])
    added = len(more.data.y) - len(plain.data.y)
    assert 0 < added <= 3 * len(clicked)
    assert more.data.y.sum() == plain.data.y.sum()  # no new clicks
    for q in clicked[:20]:
        shown = plain.logged[plain.data.qid == q]
        extra = more.logged[more.data.qid == q][len(shown) :]  # stable sort: shown rows first
        assert len(extra) and (extra == shown.max() + 1).all()
        np.testing.assert_array_equal(more.data.y[more.data.qid == q][len(shown) :], 0)
    assert set(np.unique(more.data.qid)) == set(np.unique(plain.data.qid))
