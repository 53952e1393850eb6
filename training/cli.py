"""``tastemaker train``, ``tastemaker export`` and ``tastemaker index rebuild``.

``train`` feeds the one two-tower from either source: the workspace's features (the lake
pipeline), or ``--interactions FILE --out DIR`` (a user's own interaction log, through
``training.byod``). Every flag left out keeps ``training.train_config.TrainConfig``'s default.
Torch is imported inside the handlers so other commands stay light.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from typing import Any

log = logging.getLogger("tastemaker.training")

# flag -> (TrainConfig field, type); model fields live under TrainConfig.model
_TRAIN_FLAGS: dict[str, tuple[str, Any]] = {
    "epochs": ("epochs", int),
    "batch_size": ("batch_size", int),
    "lr": ("lr", float),
    "lr_schedule": ("lr_schedule", str),
    "temperature": ("temperature", float),
    "uniform_negatives": ("uniform_negatives", int),
    "history_keep": ("history_keep", float),
    "val_fraction": ("val_fraction", float),
    "positives": ("positives", str),
    "user_features": ("user_features", str),
    "max_train_examples": ("max_train_examples", int),
    "accelerator": ("accelerator", str),
    "precision": ("precision", str),
    "seed": ("seed", int),
}
_MODEL_FLAGS = ("dim", "history_len", "pooling", "members")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train the two-tower model (on the lake, or on --interactions)"
    )
    for flag, (_, typ) in _TRAIN_FLAGS.items():
        p.add_argument("--" + flag.replace("_", "-"), type=typ, default=None)
    p.add_argument("--devices", default=None, help="number of devices (>1: DDP), or 'auto'")
    p.add_argument("--dim", type=int, default=None, help="vector size (embeddings too)")
    p.add_argument("--history-len", type=int, default=None)
    p.add_argument("--pooling", choices=("mean", "attention", "self-attention"), default=None)
    p.add_argument(
        "--members",
        type=int,
        default=None,
        help="an ensemble of this many two-towers in one model (dim is split between them)",
    )
    p.add_argument(
        "--refit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="lake: after picking the epoch count on valid, retrain on train + valid",
    )
    p.add_argument("--interactions", default=None, help="bring-your-own-data: CSV/TSV/Parquet log")
    p.add_argument("--out", default=None, help="run dir for --interactions mode")
    p.add_argument("--model", default="two-tower", help="recommender for --interactions mode")
    p.add_argument("--artist-meta", default=None, help="artists file with tags (--interactions)")
    p.add_argument(
        "--init-from",
        default=None,
        help="lake mode: warm-start from this two-tower run dir (e.g. the champion's)",
    )
    p.set_defaults(func=_train)

    e = subparsers.add_parser("export", help="export a run as a serving bundle (ONNX + FAISS)")
    e.add_argument("--run", default=None, help="run dir (default: the latest run)")
    e.set_defaults(func=_export)

    idx = subparsers.add_parser("index", help="the serving bundle's artist index")
    kinds = idx.add_subparsers(dest="index_command", required=True)
    rb = kinds.add_parser(
        "rebuild",
        help="re-embed the current catalogue with the current model and publish a bundle "
        "(no training; new artists are placed by their tags)",
    )
    rb.add_argument("--run", default=None, help="run dir (default: the latest run)")
    rb.set_defaults(func=_rebuild)


def config_from_args(args: argparse.Namespace) -> Any:
    from training.train_config import TrainConfig

    base = TrainConfig()
    kw = {
        field: getattr(args, flag)
        for flag, (field, _) in _TRAIN_FLAGS.items()
        if getattr(args, flag, None) is not None
    }
    if getattr(args, "refit", None) is not None:
        kw["refit"] = args.refit
    if getattr(args, "devices", None) is not None:
        kw["devices"] = args.devices if args.devices == "auto" else int(args.devices)
    model_kw = {f: getattr(args, f) for f in _MODEL_FLAGS if getattr(args, f, None) is not None}
    if "dim" in model_kw:
        model_kw["embed_dim"] = model_kw["dim"]
    return dataclasses.replace(base, model=dataclasses.replace(base.model, **model_kw), **kw)


def _train(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.interactions or args.out:
        if not (args.interactions and args.out):
            raise ValueError(
                "bring-your-own-data mode needs both --interactions FILE and --out DIR"
            )
        from training.byod import train_interactions

        out = train_interactions(args.interactions, args.out, args.model, args.artist_meta, config)
        print(f"trained {args.model} on {args.interactions} -> {out}")
        return 0
    from training.train import train_two_tower

    run_dir = train_two_tower(args.ws, config, init_from=args.init_from)
    metrics = json.loads((run_dir / "metrics.json").read_text())["validation"]
    print(f"run {run_dir}")
    print(f"val/recall@20 {metrics['val/recall@20']:.4f}  val/ndcg@20 {metrics['val/ndcg@20']:.4f}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from training.export import export_bundle

    bundle = export_bundle(args.ws, args.run)
    print(f"bundle {bundle}")
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    from training.export import export_bundle

    bundle = export_bundle(args.ws, args.run, rebuild=True)
    print(f"bundle {bundle}")
    return 0
