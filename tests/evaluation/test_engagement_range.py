"""Engagement over a date range reads only the partitions it needs (fewer files than the whole
table) and gives the whole table's rows for those days; the Spark read gives the same table
as the local one."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from core.workspace import Workspace
from data.lake import append_events, event_files, publish_users
from data.schemas import LAKE_EVENTS, USERS
from evaluation.engagement import engagement_table, read_plan

T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)
N_DAYS, N_USERS = 40, 60
RANGE = ("2024-03-12", "2024-03-16")


def _lake_events(rng: np.random.Generator) -> list[dict]:
    """Random slates with clicks, streams and follows the same day, and plain listening;
    users come and go (churn), two bundle versions."""
    rows: list[dict] = []

    def add(kind, user, artist, ts, req=None, ms=None, dur=None, version=None):
        rows.append(
            {
                "event_id": f"e{len(rows)}",
                "event_type": kind,
                "user_key": f"u{user:03d}",
                "artist_id": f"a{artist}",
                "track_id": f"t{artist}",
                "request_id": req,
                "position": None,
                "ms_played": ms,
                "track_duration_ms": dur,
                "event_ts": ts,
                "server_ts": ts,
                "country": None,
                "device": None,
                "bundle_version": version,
                "source": "model" if version else None,
            }
        )

    life = rng.integers(0, N_DAYS, size=(N_USERS, 2))
    for user in range(N_USERS):
        first, last = sorted(life[user])
        for day in range(first, last + 1):
            if rng.random() < 0.4:
                continue
            ts = T0 + timedelta(days=day, hours=int(rng.integers(0, 20)))
            req = f"r{user}-{day}"
            version = "v1" if day < 20 else "v2"
            for pos, artist in enumerate(rng.choice(30, size=3, replace=False)):
                add("impression", user, artist, ts, req, version=version)
                if rng.random() < 0.3:
                    add("click", user, artist, ts + timedelta(minutes=1 + pos), req)
                    if rng.random() < 0.7:
                        ms = int(rng.integers(5_000, 200_000))
                        add(
                            "stream",
                            user,
                            artist,
                            ts + timedelta(minutes=2 + pos),
                            req,
                            ms,
                            200_000,
                        )
                if rng.random() < 0.1:
                    add("follow", user, artist, ts + timedelta(minutes=30))
            add(
                "stream",
                user,
                int(rng.integers(30)),
                ts - timedelta(minutes=5),
                ms=60_000,
                dur=180_000,
            )
    return rows


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("engagement") / "ws").ensure()
    rows = _lake_events(np.random.default_rng(7))
    table = pa.Table.from_pylist(rows, schema=LAKE_EVENTS)
    for k in range(3):  # three commits: several files per day
        append_events(
            ws.lake_events, table.slice(k * (len(rows) // 3 + 1), len(rows) // 3 + 1), f"p{k}", {}
        )
    users = pa.Table.from_pylist(
        [
            {
                "user_key": f"u{u:03d}",
                "age_group": ["18-24", "25-34", "35-44"][u % 3],
                "gender": "fm"[u % 2],
                "country": ["DE", "FR", "SE"][u % 3],
                "region": None,
                "city": None,
                "signup_ts": T0 - timedelta(days=60 - u),
            }
            for u in range(N_USERS)
        ],
        schema=USERS,
    )
    publish_users(ws.lake_users, users, "test")
    return ws


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["day", "version", "segment"]).reset_index(drop=True)


def test_a_date_range_reads_fewer_files_and_gives_the_same_rows(ws):
    whole = read_plan(ws)
    plan = read_plan(ws, RANGE)
    assert len(whole.files) == len(event_files(ws.lake_events))
    # 5 days + the 6 before (the week ending the first) + the 14 after (14-day churn)
    assert len({f.parent.name for f in plan.files}) == 5 + 6 + 14
    assert 0 < len(plan.files) < len(whole.files)

    full = engagement_table(ws)
    part = engagement_table(ws, days=RANGE)
    assert set(part["date"]) == {f"2024-03-{d}" for d in range(12, 17)}
    expected = full[full["date"].between(*RANGE)]
    assert part["churn14"].notna().any() and part["impressions"].sum() > 0
    pd.testing.assert_frame_equal(_sorted(part), _sorted(expected))


@pytest.mark.slow
def test_spark_reads_the_same_engagement_as_the_local_engine(ws, spark):
    for days in (RANGE, None):
        local = engagement_table(ws, days=days)
        on_spark = engagement_table(ws, days=days, spark=spark)
        pd.testing.assert_frame_equal(_sorted(on_spark), _sorted(local))


def test_the_engagement_command_writes_the_range(ws, tmp_path, capsys):
    from tastemaker.cli import main

    out = tmp_path / "eng.parquet"
    args = ["--workspace", str(ws.root), "engagement", "--from", RANGE[0], "--to", RANGE[1]]
    assert main([*args, "--out", str(out)]) == 0
    assert f"read {len(read_plan(ws, RANGE).files)} file(s)" in capsys.readouterr().out
    written = pd.read_parquet(out)
    pd.testing.assert_frame_equal(_sorted(written), _sorted(engagement_table(ws, days=RANGE)))
