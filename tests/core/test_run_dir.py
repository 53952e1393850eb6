"""The files inside a run and a feature folder are named once (core.workspace)."""

from __future__ import annotations

from core.workspace import RunDir, Workspace


def test_run_dir_names_the_files_of_a_run(tmp_path) -> None:
    ws = Workspace(tmp_path).ensure()
    run = ws.run("r1")
    assert run == RunDir(ws.runs / "r1") and run.name == "r1"
    names = [run.config, run.vocab, run.checkpoint, run.metrics, run.lineage, run.report]
    assert [p.name for p in names] == [
        "config.json",
        "vocab.json",
        "checkpoint.ckpt",
        "metrics.json",
        "lineage.json",
        "report.md",
    ]
    assert run.ranker == ws.runs / "r1" / "ranker" and run.plot("segments").name == "segments.png"
    run.path.mkdir(parents=True)
    ws.set_latest_run(run.path)
    assert RunDir(ws.latest_run()) == run


def test_feature_files_are_the_ones_the_feature_job_writes(tmp_path) -> None:
    ws = Workspace(tmp_path)
    assert ws.feature_dir.user_features == tmp_path / "features" / "user_features.parquet"
    assert (
        ws.feature_dir.eval_users.name == "eval.parquet" and ws.feature_dir.meta.name == "meta.json"
    )
    assert {p.name for p in ws.feature_dir.lineage_inputs()} == {
        "examples.parquet",
        "sequences.parquet",
        "eval.parquet",
        "artist_features.parquet",
        "trending.parquet",
        "meta.json",
    }
