"""The ``tastemaker`` program: one subcommand per job.

All the argparse code lives in this package: each module of :mod:`tastemaker.commands` adds
its subcommands (``register(sub)``), and this file assembles them, sets up logging, builds the
one :class:`core.settings.Settings` (the ``TASTEMAKER_*`` environment plus the command line's
overrides) and hands it down as ``args.settings``, with ``args.ws``, the workspace it names.
The packages below keep the plain functions the commands call. Heavy imports (torch, faiss)
happen inside the handlers, so ``tastemaker serve`` never imports torch.

Commands: world, import hetrec, ingest, publish, subscribe, features, train, train ranker,
export, index rebuild, evaluate, tune, recommend, compare, dashboard, serve, precompute, daily,
models, simulate, demo, token, erase.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from core.settings import Settings
from core.workspace import Workspace
from tastemaker.commands import DEPRECATED

COMMAND_MODULES = (
    "tastemaker.commands.world",  # world
    "tastemaker.commands.imports",  # import hetrec
    "tastemaker.commands.ingest",  # ingest, publish, subscribe
    "tastemaker.commands.stream",  # stream-features: the bus -> live online rows
    "tastemaker.commands.lake",  # lake history, optimize, vacuum, migrate
    "tastemaker.commands.features",  # features
    "tastemaker.commands.train",  # train, train ranker, export, index rebuild
    "tastemaker.commands.evaluate",  # evaluate, recommend, compare, dashboard
    "tastemaker.commands.tune",  # tune: every model, the same validation protocol and budget
    "tastemaker.commands.serve",  # serve, precompute
    "tastemaker.commands.daily",  # daily: the retrain-gate-publish cycle; models: the registry
    "tastemaker.commands.simulate",  # simulate: A/B test of policies on the synthetic listeners
    "tastemaker.commands.demo",  # demo: every stage on the default world, then serve
    "tastemaker.commands.privacy",  # token: a listener's event token; erase: forget a listener
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


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The environment's settings, with every flag whose ``dest`` names a Settings field
    (``--workspace``, ``--accounts-url`` ...) and was given on the command line laid over
    them; the workspace is made absolute."""
    overrides: dict[str, Any] = {
        name: getattr(args, name)
        for name in Settings.model_fields
        if getattr(args, name, None) is not None
    }
    settings = Settings(**overrides)
    return settings.model_copy(update={"workspace": Path(settings.workspace).resolve()})


def _quiet_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("onnxscript", "onnx_ir", "lightning", "pytorch_lightning", "faiss", "py4j"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # the ONNX exporter warns about every optional torchvision op it cannot register
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    # framework deprecation notes are for us, not for a person running a job
    if not verbose:
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*axis name.*", category=UserWarning)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line, with ``settings`` (:func:`settings_from_args`) and ``ws`` (the
    workspace it names, created if missing) attached: what every handler receives."""
    args = build_parser().parse_args(argv)
    args.settings = settings_from_args(args)
    args.ws = Workspace(args.settings.workspace).ensure()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except ValidationError as exc:
        # field and reason only: the input may be a secret (a too-short key)
        why = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False)
        )
        print(f"tastemaker: error: invalid settings: {why}", file=sys.stderr)
        return 2
    _quiet_logging(args.verbose)
    if getattr(args, DEPRECATED, None):
        print(getattr(args, DEPRECATED), file=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ConnectionError, RuntimeError) as exc:
        if args.verbose:
            raise
        print(f"tastemaker {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
