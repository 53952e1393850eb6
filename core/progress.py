"""One progress bar for the jobs where a person waits on many small steps (ingest's objects).

A tqdm bar on stderr, drawn only when stderr is a terminal: under tests, in CI logs and when
output is piped there is no bar. While it is drawn, log lines are printed above it instead of
through it. The bar leaves nothing behind; the job logs its own summary line when it is done.
``TQDM_DISABLE=1`` (read by tqdm itself) turns every bar off.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm


def stderr_is_terminal() -> bool:
    return sys.stderr is not None and sys.stderr.isatty()


@contextmanager
def progress_bar(
    total: int, *, desc: str, unit: str = "it", disable: bool | None = None
) -> Iterator[tqdm]:
    """A bar of ``total`` steps (advance it with ``bar.update()``); ``disable=None``: auto.

    A disabled bar accepts the same calls and draws nothing."""
    if disable is None:
        disable = not stderr_is_terminal()
    with tqdm(
        total=total, desc=desc, unit=unit, disable=disable, leave=False, file=sys.stderr
    ) as bar:
        if disable:
            yield bar
        else:
            with logging_redirect_tqdm():
                yield bar
