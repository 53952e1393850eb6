"""``tastemaker train`` and ``tastemaker export``.

``train`` has two modes: on the workspace's features (the lake pipeline), or with
``--interactions FILE --out DIR`` on a user's own interaction log (delegated to
``training.byod``). Torch is imported inside the handlers so other commands stay light.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging

log = logging.getLogger("tastemaker.training")


def register(subparsers: argparse._SubParsersAction) -> None:
    from training.train_config import TrainConfig

    defaults = TrainConfig()
    p = subparsers.add_parser("train", help="train the two-tower model (lake or --interactions)")
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--dim", type=int, default=defaults.dim)
    p.add_argument("--history-len", type=int, default=defaults.history_len)
    p.add_argument("--pooling", choices=("mean", "attention"), default=defaults.pooling)
    p.add_argument("--positives", choices=("first", "all"), default=defaults.positives)
    p.add_argument(
        "--user-features", choices=("history", "segments", "full"), default=defaults.user_features
    )
    p.add_argument(
        "--refit",
        action=argparse.BooleanOptionalAction,
        default=defaults.refit,
        help="after picking the epoch count on valid, retrain on train + valid",
    )
    p.add_argument("--max-train-examples", type=int, default=defaults.max_train_examples)
    p.add_argument("--accelerator", default=defaults.accelerator, help="auto | cpu | gpu")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--interactions", default=None, help="bring-your-own-data: CSV/TSV/Parquet log")
    p.add_argument("--out", default=None, help="run dir for --interactions mode")
    p.add_argument("--model", default="two-tower", help="recommender for --interactions mode")
    p.add_argument("--artist-meta", default=None, help="artist metadata for --interactions mode")
    p.set_defaults(func=_train)

    e = subparsers.add_parser("export", help="export a run as a serving bundle (ONNX + FAISS)")
    e.add_argument("--run", default=None, help="run dir (default: the latest run)")
    e.set_defaults(func=_export)


def _train(args: argparse.Namespace) -> int:
    if args.interactions or args.out:
        if not (args.interactions and args.out):
            raise ValueError(
                "bring-your-own-data mode needs both --interactions FILE and --out DIR"
            )
        from training.byod import train_interactions

        out = train_interactions(args.interactions, args.out, args.model, args.artist_meta)
        print(f"trained {args.model} on {args.interactions} -> {out}")
        return 0
    from training.train import train_two_tower
    from training.train_config import TrainConfig

    config = dataclasses.replace(
        TrainConfig(),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        dim=args.dim,
        history_len=args.history_len,
        pooling=args.pooling,
        positives=args.positives,
        user_features=args.user_features,
        refit=args.refit,
        max_train_examples=args.max_train_examples,
        accelerator=args.accelerator,
        seed=args.seed,
    )
    run_dir = train_two_tower(args.ws, config)
    metrics = json.loads((run_dir / "metrics.json").read_text())["validation"]
    print(f"run {run_dir}")
    print(f"val/recall@20 {metrics['val/recall@20']:.4f}  val/ndcg@20 {metrics['val/ndcg@20']:.4f}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from training.export import export_bundle

    bundle = export_bundle(args.ws, args.run)
    print(f"bundle {bundle}")
    return 0
