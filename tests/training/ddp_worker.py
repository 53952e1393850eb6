"""Run by ``test_ddp.py`` (not collected by pytest): fits the two-tower with 2 CPU processes
(Lightning DDP over gloo; Lightning re-launches this script as rank 1) and writes, per rank,
a digest of the final weights and how many columns the last step's softmax saw."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from models.base import Interactions  # noqa: E402
from training.train_config import TrainConfig, default_model  # noqa: E402
from training.two_tower_recommender import TwoTowerRecommender  # noqa: E402

BATCH = 16


def main(out: Path) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    dense = (rng.random((40, 30)) < 0.3).astype(np.float32)
    m = sp.csr_matrix(dense)
    inter = Interactions(
        m, np.array([f"u{i}" for i in range(40)]), np.array([f"a{i}" for i in range(30)])
    )
    cfg = TrainConfig(
        model=replace(default_model(), history_len=10, dim=8, embed_dim=8),
        epochs=1,
        batch_size=BATCH,
        accelerator="cpu",
        devices=2,
    )
    captured: dict[str, int] = {}

    import pytorch_lightning as pl

    class Capture(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
            captured["n_candidates"] = module.n_candidates
            captured["rows"] = len(batch["artist"])
            captured["rank"] = trainer.global_rank
            captured["world"] = trainer.world_size

    rec = TwoTowerRecommender(cfg).fit(inter, callbacks=[Capture()])
    assert rec.model is not None
    digest = hashlib.sha256()
    for k, v in sorted(rec.model.state_dict().items()):
        digest.update(k.encode())
        digest.update(v.detach().cpu().numpy().tobytes())
    released = not torch.distributed.is_initialized()  # no live gloo group left to abort at exit
    captured_out = {**captured, "weights": digest.hexdigest(), "released": released}
    (out / f"rank{captured['rank']}.json").write_text(json.dumps(captured_out))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
