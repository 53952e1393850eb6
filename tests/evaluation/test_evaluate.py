"""evaluate_temporal on hand-written feature tables with a known answer, and the report."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from core.atomic import write_json, write_table
from core.workspace import Workspace
from data.schemas import EVAL_USERS, EXAMPLES, USER_DENSE_FIELDS, USER_SEGMENT_FIELDS
from evaluation.evaluate import evaluate_temporal
from evaluation.report import compare_runs

BLOCKS, PER = 3, 6
T = datetime(2024, 3, 1, tzinfo=timezone.utc)


def _rows(schema: pa.Schema, rows: list[dict]) -> pa.Table:
    cols = {}
    for f in schema:
        default = [] if pa.types.is_list(f.type) else (0.0 if f.name in USER_DENSE_FIELDS else None)
        cols[f.name] = [r.get(f.name, default) for r in rows]
    return pa.table(cols, schema=schema)


def write_features(ws: Workspace) -> None:
    """Block world: user b*PER of each block lacks the block's last artist until the test
    window, where it becomes the user's only target. One extra user is cold (no train)."""
    examples, evals = [], []
    for b in range(BLOCKS):
        country = "DE" if b < 2 else "FR"
        for i in range(PER):
            user = f"u{b * PER + i}"
            seg = {
                "age_group": "25-34" if i % 2 else "18-24",
                "gender": "f" if i % 3 else "m",
                "country": country,
                "tenure_bucket": "long",
                "activity_level": "mid",
            }
            own = [f"a{b * PER + j}" for j in range(PER) if not (i == 0 and j == PER - 1)]
            for j, artist in enumerate(own):
                split = "valid" if j == 0 and i == 1 else "train"  # valid rows are train too
                examples.append(
                    {
                        "split": split,
                        "user_key": user,
                        "artist_id": artist,
                        "event_type": "stream",
                        "event_ts": T,
                        "weight": 1.0,
                        "hist_end": 0,
                        **seg,
                    }
                )
            if i == 0:
                evals.append(
                    {
                        "split": "test",
                        "user_key": user,
                        "as_of": T,
                        "history": own,
                        "seen": own,
                        "targets": [f"a{(b + 1) * PER - 1}"],
                        **seg,
                    }
                )
    evals.append(
        {
            "split": "test",
            "user_key": "new",
            "as_of": T,
            "history": [],
            "seen": [],
            "targets": ["a0", "a99"],
            **dict.fromkeys(USER_SEGMENT_FIELDS, "unknown"),
        }
    )
    write_table(ws.features / "examples.parquet", _rows(EXAMPLES, examples))
    write_table(ws.features / "eval.parquet", _rows(EVAL_USERS, evals))


BASELINES = ("random", "popular", "trending", "itemknn", "ease", "als")


@pytest.mark.slow
def test_evaluate_temporal_known_answer_and_report(tmp_path):
    ws = Workspace(tmp_path / "ws")
    write_features(ws)
    run = ws.runs / "r1"
    write_json(run / "metrics.json", {"val/recall@20": 0.5})
    (run / "report.md").write_text("# Training\nloss went down\n")

    result = evaluate_temporal(ws, run, models=BASELINES, n_boot=50, train_sample_users=10)

    assert result["n_warm_users"] == 3 and result["n_cold_users"] == 1
    assert abs(result["cold_artist_target_share"] - 1 / 5) < 1e-9  # a99 of 5 target pairs
    for name in ("itemknn", "ease", "als"):
        assert result["models"][name]["test/recall@10"] == 1.0
        assert result["models"][name]["test/mrr"] == 1.0
    assert set(result["cold_start"]) == {"random", "popular", "trending"}
    assert result["cold_start"]["popular"]["test/recall@10"] == 0.5  # a0 yes, a99 never
    seg = result["segments"]["ease"]["country"]
    assert seg["DE"]["n_users"] == 2 and seg["FR"]["n_users"] == 1
    mean, lo, hi = seg["DE"]["recall@20"]
    assert lo <= mean <= hi

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val/recall@20"] == 0.5  # training's metrics kept
    assert metrics["test/recall@20"] == result["models"]["random"]["test/recall@20"]
    assert metrics["evaluation"]["split"] == "test"
    for png in ("recall_at_k.png", "train_test_gap.png", "segments.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (run / "report.md").read_text()
    assert report.index("![Recall@K") < report.index("| model |") < report.index("# Training")

    again = evaluate_temporal(ws, run, models=("popular",), n_boot=10, train_sample_users=3)
    report = (run / "report.md").read_text()
    assert report.count("<!-- evaluation:start -->") == 1 and "loss went down" in report
    assert list(again["models"]) == ["popular"]
    table = compare_runs([run])
    assert "| r1 | popular |" in table
