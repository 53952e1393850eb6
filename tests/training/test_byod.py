"""Bring your own data through the CLI: train, recommend, evaluate on a TSV with a known answer."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from tastemaker.cli import main

BLOCKS, PER = 3, 5


def _write_tsv(path, rows):
    path.write_text(
        "user_id\tartist_id\tweight\n" + "".join(f"{u}\t{a}\t{w}\n" for u, a, w in rows)
    )


@pytest.fixture()
def files(tmp_path):
    train, test = [], []
    for b in range(BLOCKS):
        for i in range(PER):
            for j in range(PER):
                row = (f"user{b}{i}", f"art{b}{j}", 3)
                (test if (i == 0 and j == PER - 1) else train).append(row)
    test.append(("stranger", "art00", 1))
    _write_tsv(tmp_path / "train.tsv", train)
    _write_tsv(tmp_path / "test.tsv", test)
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ease", "itemknn", "popular"])
def test_train_recommend_evaluate(files, model):
    run = files / "runs" / "mine"
    ws = ["--workspace", str(files / "ws")]
    from training.byod import train_interactions

    train_interactions(files / "train.tsv", run, model)
    assert json.loads((run / "config.json").read_text())["model"] == model
    out = files / "recs.parquet"
    assert (
        main([*ws, "recommend", "--run", str(run), "--all-users", "--k", "100", "--out", str(out)])
        == 0
    )
    recs = pq.read_table(out).to_pandas()
    assert list(recs.columns) == ["user_id", "artist_id", "rank", "score"]
    train_pairs = {
        (f"user{b}{i}", f"art{b}{j}")
        for b in range(BLOCKS)
        for i in range(PER)
        for j in range(PER)
        if not (i == 0 and j == PER - 1)
    }
    assert not train_pairs & set(zip(recs.user_id, recs.artist_id, strict=True))
    # every user gets all artists they do not have (catalogue of 15 < k)
    assert len(recs[recs.user_id == "user00"]) == 15 - 4
    if model != "popular":
        first = recs[(recs.user_id == "user00") & (recs["rank"] == 1)].artist_id.item()
        assert first == "art04"

    assert main([*ws, "evaluate", "--run", str(run), "--test", str(files / "test.tsv")]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["evaluation"]["n_cold_users"] == 1
    if model != "popular":
        assert metrics["test/recall@10"] == 1.0
    assert (run / "report.md").read_text().startswith("<!-- evaluation:start -->")


def test_unknown_model_and_unknown_user_are_clear_errors(files):
    from evaluation.runs import recommend_run
    from training.byod import train_interactions

    with pytest.raises(ValueError, match="unknown model 'svd'"):
        train_interactions(files / "train.tsv", files / "x", "svd")
    train_interactions(files / "train.tsv", files / "run", "popular")
    with pytest.raises(ValueError, match="not in the training interactions"):
        recommend_run(files / "run", 5, ["nobody"])
