"""The lake path (``training.train.train_two_tower``) on 2 CPU processes (gloo), against the
same run on one process: the ranks end with identical weights, each step's softmax sees both
ranks' positives (the global batch), each rank trains on its own share of the one-process
epoch (never the whole of it), every rank runs as many steps, and rank 0 alone writes one
complete run dir whose model evaluates well above random; the same worker under ``torchrun``.
The processes run ``ddp_lake_worker.py``; the row loader's sharding is also checked in-process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from core.workspace import Workspace

WORKER = Path(__file__).with_name("ddp_lake_worker.py")
RUN_FILES = ("config.json", "vocab.json", "checkpoint.ckpt", "metrics.json", "lineage.json")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A tiny world's lake and features (demo pseudonym key)."""
    from data.features.build import FeatureConfig, build_features
    from data.ingest.job import run_ingest
    from world.generate import WorldConfig, generate_world

    ws = Workspace(tmp_path_factory.mktemp("lake") / "ws").ensure()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TASTEMAKER_DEMO", "1")
        mp.delenv("TASTEMAKER_PSEUDONYM_KEY", raising=False)
        generate_world(ws, WorldConfig.tiny(seed=0))
        run_ingest(ws)
        build_features(ws, FeatureConfig())
    return ws


def _train(
    lake: Workspace,
    root: Path,
    devices: int,
    lake_batches: str,
    batch_size: int = 64,
    torchrun: bool = False,
) -> tuple[Workspace, list]:
    """Copy the workspace, train on it with ``devices`` processes (Lightning starts the other
    ranks, or ``torchrun`` starts them all); per-rank records."""
    ws = Workspace(root / "ws")
    shutil.copytree(lake.root, ws.root)
    port = str(_free_port())
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK"):
        env.pop(name, None)
    out = root / "out"
    cmd = [sys.executable]
    if torchrun:
        cmd += ["-m", "torch.distributed.run", "--nproc_per_node", str(devices)]
        cmd += ["--master_port", port]
    cmd += [str(WORKER), str(ws.root), str(out), "--devices", str(devices)]
    cmd += ["--lake-batches", lake_batches, "--batch-size", str(batch_size)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ws, [json.loads((out / f"rank{r}.json").read_text()) for r in range(devices)]


def _batches(record: dict, fit: int, epoch: int, key: str = "batch") -> list:
    return [s[key] for s in record["steps"] if s["fit"] == fit and s["epoch"] == epoch]


def _epochs(record: dict) -> set[tuple[int, int]]:
    return {(s["fit"], s["epoch"]) for s in record["steps"]}


def _check_one_run_dir(ws: Workspace, ranks: list[dict]) -> Path:
    run_dirs = {r["run_dir"] for r in ranks}
    assert len(run_dirs) == 1, f"the ranks returned different run dirs: {run_dirs}"
    run = Path(run_dirs.pop())
    assert {p.name for p in ws.runs.iterdir()} == {"LATEST", run.name}, "one run dir"
    assert ws.latest_run() == run
    for name in (*RUN_FILES, "report.md"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    best = metrics["validation"]
    assert best == max(metrics["history"], key=lambda h: h["val/recall@20"])
    assert (
        f"Best epoch {best['epoch']}: val/recall@20 {best['val/recall@20']:.4f}"
        in (run / "report.md").read_text()
    )
    return run


def _check_ranks_agree(ranks: list[dict]) -> None:
    r0, r1 = ranks
    assert (r0["rank"], r0["world"], r1["rank"], r1["world"]) == (0, 2, 1, 2)
    # one digest per fit: the selection fit, then the refit on train + valid
    assert len(r0["weights"]) == 2 and r0["weights"] == r1["weights"], "the ranks drifted apart"
    assert _epochs(r0) == _epochs(r1)
    for fit, epoch in _epochs(r0):
        n0, n1 = (len(_batches(r, fit, epoch)) for r in ranks)
        assert n0 == n1 > 0, f"fit {fit} epoch {epoch}: rank steps {n0} != {n1}"
    for r in ranks:
        for s in r["steps"]:
            # B rows on this rank; its softmax's columns are both ranks' positives
            assert s["n_candidates"] == 2 * s["rows"], s


def _check_sane(ws: Workspace, run: Path) -> float:
    import training  # noqa: F401  (registers the two-tower with the evaluation registry)
    from evaluation.evaluate import evaluate_temporal

    models = evaluate_temporal(ws, run, models=("two-tower", "random"), n_boot=20)["models"]
    two_tower, random = models["two-tower"]["test/recall@20"], models["random"]["test/recall@20"]
    # the tiny world has ~120 artists, so random is not negligible there (~0.15 Recall@20)
    assert two_tower > 1.5 * random, (two_tower, random)
    return two_tower


@pytest.mark.slow
def test_two_ranks_of_batch_b_train_as_one_process_of_batch_2b(lake, tmp_path):
    ws1, (one,) = _train(lake, tmp_path / "one", 1, "masked", batch_size=128)
    ws2, ranks = _train(lake, tmp_path / "two", 2, "masked", batch_size=64)
    _check_ranks_agree(ranks)
    # every rank draws the one-process epoch and takes every other slice of it, so step k's
    # global batch (rank 0's rows, then rank 1's) is exactly the one-process run's batch k: a
    # rank that trained on the whole epoch, or on the other's rows, fails here
    shared = _epochs(one) & _epochs(ranks[0])
    assert {(0, e) for e in range(4)} <= shared
    for fit, epoch in sorted(shared):
        single = _batches(one, fit, epoch, "row_digests")
        r0, r1 = (_batches(r, fit, epoch, "row_digests") for r in ranks)
        assert len(r0) == len(single) > 0, (fit, epoch)
        for k, rows in enumerate(single):
            assert r0[k] + r1[k] == rows, f"fit {fit} epoch {epoch} step {k}"
    assert all(s["n_candidates"] == s["rows"] == 128 for s in one["steps"])
    # ... and the softmax over the gathered batch with averaged gradients is the one-process
    # step: the validation curves agree (to a rounding flip of one target)
    curves = [
        [h["val/recall@20"] for h in json.loads((run / "metrics.json").read_text())["history"]]
        for run in (_check_one_run_dir(ws1, [one]), _check_one_run_dir(ws2, ranks))
    ]
    assert curves[0] == pytest.approx(curves[1], abs=0.015), curves
    assert _check_sane(ws2, Path(ranks[0]["run_dir"])) > 0.0


@pytest.mark.slow
def test_sequential_lake_batches_are_disjoint_between_ranks(lake, tmp_path):
    ws, ranks = _train(lake, tmp_path / "two", 2, "sequential")
    _check_ranks_agree(ranks)
    for fit, epoch in _epochs(ranks[0]):
        rows0, rows1 = (
            Counter(d for b in _batches(r, fit, epoch, "row_digests") for d in b) for r in ranks
        )
        # distinct examples can look alike (a first stream has an empty history), so a few
        # rows may match; a rank that read the whole epoch would share every row
        shared = sum((rows0 & rows1).values()) / sum(rows0.values())
        assert shared < 0.1, f"fit {fit} epoch {epoch}: {shared:.0%} of rank 0's rows on rank 1"
    run = _check_one_run_dir(ws, ranks)
    _check_sane(ws, run)


@pytest.mark.slow
def test_the_same_script_under_torchrun(lake, tmp_path):
    ws, ranks = _train(lake, tmp_path / "torchrun", 2, "masked", torchrun=True)
    _check_ranks_agree(ranks)
    _check_one_run_dir(ws, ranks)


@pytest.mark.parametrize("n", [1000, 1001, 100, 3])
def test_row_loader_gives_each_rank_a_disjoint_equal_share(monkeypatch, n):
    import numpy as np

    import training.datamodule as dm

    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(dm, "rank_world", lambda rank=rank: (rank, 2))
        loader = dm._row_loader(n, 64, 0, lambda rows: rows)
        loader.sampler.set_epoch(1)  # type: ignore[attr-defined]
        shares.append([np.asarray(b).tolist() for b in loader])
    (a, b) = shares
    assert len(a) == len(b) > 0 and [len(x) for x in a] == [len(x) for x in b]
    rows_a, rows_b = sum(a, []), sum(b, [])
    assert not set(rows_a) & set(rows_b)
    assert len(rows_a) == (n // 2 if n // 2 <= 64 else n // 2 // 64 * 64)
