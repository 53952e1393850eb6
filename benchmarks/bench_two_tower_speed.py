"""Two-tower training throughput: (user, artist) examples per second through the real
LightningModule and batches (``training.pairs.MaskedPairs``), default model size (d = 256,
history 50, batch 2,048, 17,634-row artist table like HetRec's). CPU always; CUDA in bf16 too
when a GPU is present (none was on the machine that wrote the committed numbers).
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import scipy.sparse as sp
import torch

from models.base import Interactions
from training.train_config import TrainConfig
from training.two_tower_recommender import TwoTowerRecommender

COMMAND = "python -m benchmarks.run --only two_tower_speed"


def synthetic(n_users: int, n_artists: int, per_user: int, seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_users), per_user)
    cols = rng.zipf(1.3, size=len(rows)) % n_artists  # long-tailed like real listening
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_artists))
    m.data[:] = 1.0
    users = np.array([f"u{i}" for i in range(n_users)])
    return Interactions(m, users, np.array([f"a{i}" for i in range(n_artists)]))


def throughput(config: TrainConfig, inter: Interactions) -> tuple[float, int]:
    """(examples/s over the second epoch onwards, examples per epoch)."""
    rec = TwoTowerRecommender(dataclasses.replace(config, epochs=1))
    rec.fit(inter)  # warm-up: allocation, first-epoch costs
    rec = TwoTowerRecommender(config)
    rec.fit(inter)
    n = int(inter.matrix.nnz)
    return n * config.epochs / rec.fit_seconds, n


def main(quick: bool = False) -> str:
    inter = synthetic(1_000 if quick else 4_000, 17_632, 50)
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        cfg = TrainConfig(epochs=2, accelerator="cpu", precision="32-true")
        rate, n = throughput(cfg, inter)
        rows.append(f"| CPU, {threads} thread(s), fp32 | {rate:,.0f} |")
    if torch.cuda.is_available():
        cfg = TrainConfig(epochs=2, accelerator="gpu", precision="bf16-mixed")
        rate, n = throughput(cfg, inter)
        rows.append(f"| {torch.cuda.get_device_name()}, bf16-mixed | {rate:,.0f} |")
    return (
        "\n".join(
            [
                "## Two-tower training throughput",
                "",
                f"Command: `{COMMAND}{' --quick' if quick else ''}` ({n:,} examples an epoch, "
                "batch 2,048, d = 256; examples/s of the Lightning fit, second run after a "
                "warm-up; machines are shared, so read the ratio between rows).",
                "",
                "| device | examples/s |",
                "|---|---|",
                *rows,
            ]
        )
        + "\n"
    )


if __name__ == "__main__":
    print(main(quick="--quick" in sys.argv[1:]))
