"""The subcommands of ``tastemaker``, one module per area.

Each module has ``register(sub)``, which adds its parsers to the program's subparsers. A
handler takes the parsed namespace and reads ``args.settings`` (the one
:class:`core.settings.Settings`, built by :mod:`tastemaker.cli` from the environment and the
command line) and ``args.ws`` (the :class:`core.workspace.Workspace` at ``settings.workspace``).
A flag whose ``dest`` names a Settings field (``accounts_url``, ``bundle_dir`` ...) overrides
that field. Heavy imports (torch, faiss) stay inside the handlers.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

DEPRECATED = "deprecated"  # the namespace attribute that carries an old spelling's warning


def deprecated_alias(
    sub: argparse._SubParsersAction,
    old: str,
    new: str,
    configure: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Keep the old spelling ``tastemaker OLD`` of ``tastemaker NEW`` for one release: a
    command left out of the list that ``configure`` sets up exactly as it sets up the new
    one, and that prints one deprecation line to stderr when used (:mod:`tastemaker.cli`)."""
    alias = sub.add_parser(old)  # no help=: not listed
    configure(alias)
    alias.set_defaults(**{DEPRECATED: f"tastemaker {old} is deprecated; use tastemaker {new}"})
