"""Run by ``test_ddp_lake.py`` (not collected by pytest), or by hand under ``torchrun``: trains
the lake path (``training.train.train_two_tower``) on a workspace's features with ``--devices``
CPU processes (Lightning DDP over gloo; without torchrun Lightning re-launches this script for
the other ranks) and writes, per rank, ``rank<r>.json``: every training step's rows, softmax
columns and a digest of its batch, a digest of the weights at the end of each fit, the run dir
it returned and the seconds it took.

    python tests/training/ddp_lake_worker.py WORKSPACE OUT --devices 2
    torchrun --nproc_per_node 2 tests/training/ddp_lake_worker.py WORKSPACE OUT --devices 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from core.workspace import Workspace  # noqa: E402
from training.train import train_two_tower  # noqa: E402
from training.train_config import TrainConfig, default_model  # noqa: E402


def tiny_config(devices: int, lake_batches: str = "masked", batch_size: int = 64) -> TrainConfig:
    """The tiny world's lake config (the test builds the same one for its one-process view)."""
    return TrainConfig(
        model=replace(default_model(), history_len=20, dim=32, embed_dim=32),
        epochs=4,
        batch_size=batch_size,
        lr=1e-2,
        patience=4,
        history_keep=0.75,
        lr_schedule="constant",
        max_train_examples=None,
        lake_batches=lake_batches,
        accelerator="cpu",
        devices=devices,
    )


def batch_digest(batch: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(batch):
        h.update(k.encode())
        h.update(batch[k].detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def row_digests(batch: dict[str, torch.Tensor]) -> list[str]:
    """One short digest per row of the batch (its history, positive, weight, ...)."""
    parts = [
        batch[k].detach().cpu().reshape(len(batch["artist"]), -1).numpy() for k in sorted(batch)
    ]
    return [
        hashlib.sha256(b"".join(p[i].tobytes() for p in parts)).hexdigest()[:12]
        for i in range(len(batch["artist"]))
    ]


def weights_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def main() -> None:
    import pytorch_lightning as pl

    p = argparse.ArgumentParser()
    p.add_argument("workspace", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--lake-batches", default="masked")
    p.add_argument("--batch-size", type=int, default=64, help="per rank")
    args = p.parse_args()
    torch.set_num_threads(1)
    record: dict[str, Any] = {"steps": [], "weights": []}

    class Capture(pl.Callback):
        fit = -1

        def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            self.fit += 1

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
            record["rank"], record["world"] = trainer.global_rank, trainer.world_size
            record["steps"].append(
                {
                    "fit": self.fit,
                    "epoch": trainer.current_epoch,
                    "rows": len(batch["artist"]),
                    "n_candidates": module.n_candidates,
                    "batch": batch_digest(batch),
                    "row_digests": row_digests(batch),
                }
            )

        def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            record["weights"].append(weights_digest(module))

    started = time.perf_counter()
    run_dir = train_two_tower(
        Workspace(args.workspace),
        tiny_config(args.devices, args.lake_batches, args.batch_size),
        callbacks=[Capture()],
    )
    record["seconds"] = time.perf_counter() - started
    record["run_dir"] = str(run_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"rank{record.get('rank', 0)}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
