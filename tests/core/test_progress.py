"""The progress bar: off when stderr is not a terminal (tests, CI, pipes), drawn when asked."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from core.progress import progress_bar, stderr_is_terminal


def test_no_bar_under_tests(capsys: pytest.CaptureFixture[str]) -> None:
    assert not stderr_is_terminal()
    with progress_bar(3, desc="ingest", unit="object") as bar:
        for _ in range(3):
            bar.update()
    assert capsys.readouterr().err == ""


def test_a_drawn_bar_counts_and_lets_log_lines_through(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    logger = logging.getLogger("tastemaker.test_progress")
    handler = logging.StreamHandler(err)
    logger.addHandler(handler)
    try:
        with progress_bar(2, desc="ingest", unit="object", disable=False) as bar:
            bar.update()
            logger.warning("halfway")
            bar.update()
            assert bar.n == 2
    finally:
        logger.removeHandler(handler)
    assert "ingest" in err.getvalue() and "halfway" in err.getvalue()
