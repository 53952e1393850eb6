"""Data parallelism on CPU: 2 processes (gloo) end with identical weights, and each rank's
softmax sees the positives of both ranks (the global batch)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("ddp_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_ranks_end_identical_and_see_the_global_batch(tmp_path):
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world"] == 2 for r in ranks)
    assert ranks[0]["weights"] == ranks[1]["weights"], "DDP ranks drifted apart"
    assert all(r["released"] for r in ranks), "a rank kept its process group after fit"
    for r in ranks:
        # each rank holds B rows; its softmax columns are both ranks' positives
        assert r["n_candidates"] == 2 * r["rows"], r
