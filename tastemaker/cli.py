"""The ``tastemaker`` program: one subcommand per job.

Each package registers its own subcommands (``register(subparsers)`` in its ``cli`` module),
so this file only assembles them and sets up logging. Heavy imports (torch, faiss) happen
inside the command functions, so ``tastemaker serve`` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Sequence

from core.settings import Settings
from core.workspace import Workspace

COMMAND_MODULES = (
    "world.cli",  # world
    "data.cli",  # import
    "data.ingest.cli",  # ingest, publish, subscribe
    "data.features.cli",  # features
    "training.cli",  # train, export (and registers the two-tower with evaluation)
    "training.ranker_cli",  # train-ranker: the XGBoost ranking stage
    "evaluation.cli",  # evaluate, recommend, compare
    "serving.cli",  # serve
    "tastemaker.commands.daily",  # daily: the retrain-gate-publish cycle; models: the registry
    "tastemaker.commands.simulate",  # simulate: A/B test of policies on the synthetic listeners
    "tastemaker.commands.demo",  # demo: every stage on the default world, then serve
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tastemaker", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workspace",
        default=None,
        help="workspace folder (default: $TASTEMAKER_WORKSPACE or ./workspace)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("onnxscript", "onnx_ir", "lightning", "pytorch_lightning", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # the ONNX exporter warns about every optional torchvision op it cannot register
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    # framework deprecation notes are for us, not for a person running a job
    if not args.verbose:
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*axis name.*", category=UserWarning)
    args.ws = Workspace.from_env(args.workspace).ensure()
    args.settings = Settings()
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ConnectionError, RuntimeError) as exc:
        if args.verbose:
            raise
        print(f"tastemaker {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
