"""The workspace's "latest run" is a pointer the training job writes, never a guess."""

from __future__ import annotations

import os
import time

import pytest

from core.workspace import Workspace


def test_latest_run_is_the_recorded_one_not_the_newest_folder(tmp_path) -> None:
    ws = Workspace(tmp_path).ensure()
    with pytest.raises(FileNotFoundError, match="tastemaker train"):
        ws.latest_run()
    finished, unfinished = ws.runs / "r1", ws.runs / "r2"
    finished.mkdir(parents=True)
    ws.set_latest_run(finished)
    unfinished.mkdir()  # a crashed or running job: newer, but never recorded
    later = time.time() + 60
    os.utime(unfinished, (later, later))
    assert ws.latest_run() == finished


def test_pointer_to_a_missing_run_is_named(tmp_path) -> None:
    ws = Workspace(tmp_path).ensure()
    (ws.runs / "gone").mkdir(parents=True)
    ws.set_latest_run(ws.runs / "gone")
    (ws.runs / "gone").rmdir()
    with pytest.raises(FileNotFoundError, match="'gone'"):
        ws.latest_run()


def test_only_runs_of_this_workspace_can_be_recorded(tmp_path) -> None:
    ws = Workspace(tmp_path / "ws").ensure()
    with pytest.raises(ValueError, match="not a run dir"):
        ws.set_latest_run(tmp_path / "elsewhere")
