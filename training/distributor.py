"""Launching a training script under Spark's ``TorchDistributor`` (``pyspark.ml.torch``).

``TorchDistributor(num_processes=N, local_mode=True)`` runs ``torchrun --standalone
--nproc_per_node N SCRIPT ARGS`` on the Spark driver, so the script's ranks find the same
``torchrun`` environment they find under ``torchrun`` itself, and Lightning's DDP (gloo on
CPU, NCCL on GPUs) uses them. ``tastemaker train --launcher torchdistributor`` passes the
``tastemaker`` CLI file as the script; a test passes its own worker.

The children import this checkout's packages (``PYTHONPATH``, as the Spark feature engine's
executors do). Only the driver-side mode is wired in (``local_mode=True``): the executor-side
mode (one barrier task per rank, ``local_mode=False``) starts one ``torchrun`` node per task,
which Lightning would need as ``num_nodes=N, devices=1``; that is not done.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from core.settings import Settings

log = logging.getLogger("tastemaker.training")


def run_under_torch_distributor(
    settings: Settings,
    script: Path,
    args: Sequence[str],
    num_processes: int,
    use_gpu: bool = False,
) -> None:
    """Run ``script args`` as ``num_processes`` ranks through ``TorchDistributor`` on a Spark
    session at ``settings.spark_master``. Raises ``SparkUnavailable`` (no Java, no or an
    unsupported pyspark) and ``RuntimeError`` with the ranks' output tail if a rank fails."""
    if num_processes < 1:
        raise ValueError(f"num_processes must be at least 1, got {num_processes}")
    if not Path(script).is_file():
        raise FileNotFoundError(f"no training script at {script}")
    from data.features.spark import spark_session

    spark_session(settings)  # the active session TorchDistributor reads its master from
    from pyspark.ml.torch.distributor import TorchDistributor

    settings.export_checkout_pythonpath()
    log.info("TorchDistributor: %d processes of %s", num_processes, script)
    TorchDistributor(num_processes=num_processes, local_mode=True, use_gpu=use_gpu).run(
        str(script), *args
    )
