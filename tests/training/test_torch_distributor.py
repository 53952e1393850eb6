"""The lake path's DDP script under Spark's ``TorchDistributor`` (local[2] session, the
driver-side mode, 2 CPU gloo processes), against the same script under ``torchrun``: both
ranks train, agree, share every global batch as under ``torchrun``, and end with the very
weights the ``torchrun`` ranks end with; rank 0 writes one complete run dir. Then
``tastemaker train --launcher torchdistributor`` itself, on a short config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.settings import Settings
from core.workspace import Workspace
from tests.training import test_ddp_lake as ddp
from tests.training.test_ddp_lake import (
    WORKER,
    _batches,
    _check_one_run_dir,
    _check_ranks_agree,
    _epochs,
    _train,
)

lake = ddp.lake  # that module's fixture: a tiny world's lake and features


def _copy(source: Workspace, root: Path) -> Workspace:
    ws = Workspace(root / "ws")
    shutil.copytree(source.root, ws.root)
    return ws


@pytest.mark.slow
def test_worker_under_torch_distributor_trains_as_under_torchrun(
    spark, lake, tmp_path, monkeypatch
):
    from training.distributor import run_under_torch_distributor

    monkeypatch.setenv("PYTHONPATH", "")  # restored after; the launcher sets it
    ws = _copy(lake, tmp_path / "td")
    out = tmp_path / "td" / "out"
    args = [ws.root, out, "--devices", "2", "--lake-batches", "masked", "--batch-size", "64"]
    run_under_torch_distributor(
        Settings(spark_master="local[2]"), WORKER, [str(a) for a in args], 2
    )
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    _check_ranks_agree(ranks)
    run = _check_one_run_dir(ws, ranks)

    _, reference = _train(lake, tmp_path / "torchrun", 2, "masked", torchrun=True)
    for got, want in zip(ranks, reference, strict=True):
        assert got["rank"] == want["rank"]
        assert _epochs(got) == _epochs(want)
        for fit, epoch in _epochs(want):
            assert _batches(got, fit, epoch) == _batches(want, fit, epoch), (fit, epoch)
        assert got["weights"] == want["weights"], "TorchDistributor's ranks trained otherwise"
    history = json.loads((run / "metrics.json").read_text())["history"]
    want_run = Path(reference[0]["run_dir"])
    assert history == json.loads((want_run / "metrics.json").read_text())["history"]


@pytest.mark.slow
def test_train_command_with_the_torch_distributor_launcher(
    spark, lake, tmp_path, monkeypatch, capsys
):
    from tastemaker.cli import main

    monkeypatch.setenv("PYTHONPATH", "")
    ws = _copy(lake, tmp_path / "cli")
    argv = ["--workspace", str(ws.root), "train", "--launcher", "torchdistributor"]
    argv += ["--num-processes", "2", "--master", "local[2]", "--accelerator", "cpu"]
    argv += ["--epochs", "2", "--no-refit", "--dim", "16", "--history-len", "10"]
    argv += ["--batch-size", "64"]
    assert main(argv) == 0
    run = ws.latest_run()
    assert {p.name for p in ws.runs.iterdir()} == {"LATEST", run.name}, "one run dir"
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["devices"] == 2 and config["model"]["dim"] == 16, config
    assert len(json.loads((run / "metrics.json").read_text())["history"]) == 2
    out = capsys.readouterr().out
    lines = out.splitlines()
    # the summary once (rank 0's, passed on; the launcher adds none), each rank's log
    assert lines.count(f"run {run}") == 1, out[-2000:]
    assert sum(line.startswith("val/recall@20 ") for line in lines) == 1, out[-2000:]
    assert sum("tastemaker.training: train examples" in line for line in lines) == 2, out[-2000:]

    # the ranks' argv can't carry --devices against --num-processes
    assert main([*argv, "--devices", "3"]) == 2


def test_each_rank_runs_the_same_train_command(tmp_path):
    from tastemaker.cli import parse_args
    from tastemaker.commands.train import config_from_args, rank_argv

    argv = ["--workspace", str(tmp_path / "ws"), "train", "--launcher", "torchdistributor"]
    argv += ["--num-processes", "3", "--epochs", "2", "--lr", "0.5", "--no-refit"]
    argv += ["--dim", "16", "--pooling", "attention", "--init-from", "runs/x"]
    args = parse_args(argv)
    assert args.settings.train_launcher == "torchdistributor"
    rank = parse_args(rank_argv(args, 3))
    assert rank.settings.train_launcher == "lightning", "a rank must not launch again"
    assert rank.ws.root == args.ws.root and rank.init_from == "runs/x"
    want = config_from_args(args)
    assert config_from_args(rank) == type(want)(**{**vars(want), "devices": 3})
    assert want.devices != 3
