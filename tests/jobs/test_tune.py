"""``tastemaker tune``: the same protocol and budget for every model, never the test split.

A tiny synthetic world (temporal protocol) and a small HetRec-shaped folder (holdout
protocol). The test split is proven untouched by changing its targets and showing that every
trial of every model scores exactly the same.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.workspace import Workspace
from data.features.build import FeatureConfig, build_features
from data.ingest.job import run_ingest
from data.splits import holdout_mask
from evaluation.temporal import load_temporal
from jobs.tune import (
    MODELS,
    HoldoutValidation,
    TemporalValidation,
    TuneConfig,
    defaults,
    run_tuning,
    tuned_params,
)
from world.config import WorldConfig
from world.generate import generate_world

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def features_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    mp = pytest.MonkeyPatch()
    mp.setenv("TASTEMAKER_DEMO", "1")
    mp.delenv("TASTEMAKER_PSEUDONYM_KEY", raising=False)
    ws = Workspace(tmp_path_factory.mktemp("tune") / "ws").ensure()
    generate_world(ws, WorldConfig.tiny(seed=3))
    run_ingest(ws)
    build_features(ws, FeatureConfig())
    mp.undo()
    return ws


def _histories(record: dict) -> dict[str, list[tuple]]:
    return {
        m: [(t["params"], t["recall@20"], t["ndcg@20"]) for t in s["history"]]
        for m, s in record["models"].items()
    }


def test_tune_cli_runs_every_model_with_the_same_budget(features_ws: Workspace) -> None:
    from tastemaker.cli import main

    rc = main(["--workspace", str(features_ws.root), "tune", "--model", "all", "--trials", "2"])
    assert rc == 0
    saved = json.loads((features_ws.tuning / "demo.json").read_text())
    assert set(saved["models"]) == set(MODELS)
    assert "valid" in saved["validation"]["protocol"]
    for model, study in saved["models"].items():
        assert study["trials"] == 2 and len(study["history"]) == 2
        assert study["history"][0]["params"] == pytest.approx(defaults(model, "demo"))
        assert study["history"][1]["params"] != study["history"][0]["params"]
        values = [t["recall@20"] for t in study["history"]]
        assert study["best_value"] == max(values)
        assert 0.0 <= study["best_value"] <= 1.0
        assert tuned_params(features_ws, "demo", model) == study["best_params"]
    assert saved["models"]["als"]["best_value"] > 0.0  # a real fit, not an empty ranking
    # scratch workspaces of the two-tower's trials are gone; the real one has no new run
    assert [p.name for p in features_ws.tuning.iterdir()] == ["demo.json"]
    assert not features_ws.runs.exists() or not any(features_ws.runs.iterdir())


def _rewrite_test_targets(features: Path) -> None:
    """Every test-split target and every test-week example of ``features`` replaced by
    artists chosen at random: what the test split says changes completely."""
    rng = np.random.default_rng(0)
    eval_path, ex_path = features / "eval.parquet", features / "examples.parquet"
    users = pq.read_table(eval_path)
    artists = np.unique(pc.list_flatten(users["seen"]).to_numpy(zero_copy_only=False))
    is_test = users["split"].to_numpy(zero_copy_only=False) == "test"
    targets = users["targets"].to_pylist()
    for i in np.flatnonzero(is_test):
        targets[i] = list(rng.choice(artists, size=len(targets[i]), replace=False))
    col = users.schema.get_field_index("targets")
    users = users.set_column(col, users.schema.field(col), pa.array(targets, users["targets"].type))
    pq.write_table(users, eval_path)
    ex = pq.read_table(ex_path)
    aid = ex["artist_id"].to_numpy(zero_copy_only=False).copy()
    test_rows = ex["split"].to_numpy(zero_copy_only=False) == "test"
    aid[test_rows] = rng.choice(artists, size=int(test_rows.sum()))
    col = ex.schema.get_field_index("artist_id")
    ex = ex.set_column(col, ex.schema.field(col), pa.array(aid, ex["artist_id"].type))
    shutil.rmtree(ex_path)  # the build's folder of day files -> one file: readers take either
    pq.write_table(ex, ex_path)


def test_tuning_never_reads_the_test_split(features_ws: Workspace, tmp_path: Path) -> None:
    other = Workspace(tmp_path / "ws").ensure()
    shutil.copytree(features_ws.features, other.features)
    _rewrite_test_targets(other.features)
    # the rewrite is material: the test split's targets differ, the valid split's do not
    before, after = load_temporal(features_ws, "test"), load_temporal(other, "test")
    assert before.users["targets"].to_pylist() != after.users["targets"].to_pylist()
    valid = [load_temporal(w, "valid").users["targets"].to_pylist() for w in (features_ws, other)]
    assert valid[0] == valid[1]

    config = TuneConfig(trials=2)
    a = run_tuning(features_ws, TemporalValidation(features_ws), MODELS, config)
    b = run_tuning(other, TemporalValidation(other), MODELS, config)
    assert _histories(a) == _histories(b)


def _hetrec_folder(root: Path, seed: int = 0, n_users: int = 60, n_artists: int = 80) -> Path:
    """A HetRec-shaped folder: users with 5-25 artists drawn from a few taste clusters."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    lines = ["userID\tartistID\tweight"]
    for u in range(n_users):
        cluster = u % 4
        pool = np.arange(cluster * 20, cluster * 20 + 30) % n_artists
        for a in rng.choice(pool, size=rng.integers(5, 25), replace=False):
            lines.append(f"{u + 2}\t{a + 1}\t{int(rng.integers(1, 500))}")
    (root / "user_artists.dat").write_text("\n".join(lines) + "\n")
    (root / "artists.dat").write_text(
        "id\tname\turl\tpictureURL\n"
        + "".join(f"{a + 1}\tartist {a}\thttp://x\t\n" for a in range(n_artists))
    )
    (root / "tags.dat").write_text("tagID\ttagValue\n" + "".join(f"{c}\tg{c}\n" for c in range(4)))
    (root / "user_taggedartists.dat").write_text(
        "userID\tartistID\ttagID\tday\tmonth\tyear\n"
        + "".join(f"2\t{a + 1}\t{(a // 20) % 4}\t1\t1\t2009\n" for a in range(n_artists))
    )
    return root


def test_hetrec_tuning_uses_the_training_part_only(tmp_path: Path) -> None:
    from data.importers import import_hetrec

    folder = _hetrec_folder(tmp_path / "a")
    inter, _ = import_hetrec(folder)
    codes = np.unique(inter["user_id"].to_numpy(zero_copy_only=False), return_inverse=True)[1]
    test = holdout_mask(codes, 0.2, 0)  # the benchmark's split 0 (data.importers.holdout_split)
    assert 0 < test.sum() < len(test)
    # the same folder with every test pair pointing at a different artist of the user's cluster
    other = tmp_path / "b"
    shutil.copytree(folder, other)
    rows = (folder / "user_artists.dat").read_text().splitlines()
    users = inter["user_id"].to_pylist()
    artists = inter["artist_id"].to_pylist()
    mine: dict[str, set[str]] = {}
    for u, a in zip(users, artists, strict=True):
        mine.setdefault(u, set()).add(a)
    changed = 0
    for i in np.flatnonzero(test):
        free = sorted({str(a) for a in range(1, 81)} - mine[users[i]])
        new = free[i % len(free)]
        mine[users[i]].add(new)
        rows[i + 1] = f"{users[i]}\t{new}\t7"
        changed += 1
    (other / "user_artists.dat").write_text("\n".join(rows) + "\n")
    assert changed == test.sum()

    config = TuneConfig(trials=2)
    ws_a, ws_b = Workspace(tmp_path / "wa"), Workspace(tmp_path / "wb")
    a = run_tuning(ws_a, HoldoutValidation.from_hetrec(folder), MODELS, config)
    b = run_tuning(ws_b, HoldoutValidation.from_hetrec(other), MODELS, config)
    assert _histories(a) == _histories(b)
    assert a["models"]["itemknn"]["best_value"] > 0.0
    assert (ws_a.tuning / "hetrec.json").is_file()


def test_tuning_merges_models_into_the_dataset_file(tmp_path: Path) -> None:
    folder = _hetrec_folder(tmp_path / "h")
    ws = Workspace(tmp_path / "ws")
    validation = HoldoutValidation.from_hetrec(folder)
    run_tuning(ws, validation, ("ease",), TuneConfig(trials=1))
    run_tuning(ws, validation, ("itemknn",), TuneConfig(trials=1))
    saved = json.loads((ws.tuning / "hetrec.json").read_text())
    assert set(saved["models"]) == {"ease", "itemknn"}
    assert tuned_params(ws, "hetrec", "ease") == defaults("ease", "hetrec")
    with pytest.raises(ValueError, match="cannot tune"):
        run_tuning(ws, validation, ("popular",), TuneConfig(trials=1))
