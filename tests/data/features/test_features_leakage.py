"""Point in time: a planted event at t changes nothing that a row before t can see, and the
examples carry exactly what ``user_features_at`` gives at their event time."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.workspace import Workspace
from data.features.build import FeatureConfig, build_features, load_event_log, user_features_at
from data.schemas import USER_DENSE_FIELDS, USER_SEGMENT_FIELDS
from tests.data.features.features_lake import (
    artists_table,
    at,
    ev,
    events_table,
    users_table,
    write_lake,
)

KINDS = ("impression", "click", "stream", "stream", "stream", "follow", "unfollow")


def random_lake(seed: int = 7, n_events: int = 600) -> tuple[list[dict], pa.Table, pa.Table]:
    rng = np.random.default_rng(seed)
    users = users_table(
        [(f"u{i}", "25-34", "f", "DE", "BE", at(-40 + 3 * i)) for i in range(12)]
    )  # u10, u11 sign up during the data: tenure changes over time
    rows = []
    for _ in range(n_events):
        kind = KINDS[rng.integers(len(KINDS))]
        a = int(rng.zipf(1.5)) % 8
        track = f"t{a}-{rng.integers(3)}"
        rows.append(
            ev(
                kind,
                f"u{rng.integers(14)}",
                f"a{a}",
                at(float(rng.uniform(0, 21))),
                track if kind == "stream" else None,
                int(rng.uniform(5_000, 300_000)) if kind == "stream" else None,
                240_000 if kind == "stream" else None,
            )
        )
    return rows, users, artists_table([f"a{i}" for i in range(7)])


def _build(tmp_path, name, rows, users, artists):
    ws = Workspace(tmp_path / name)
    write_lake(ws, events_table(rows), users, artists)
    build_features(ws, FeatureConfig(), online="")
    return {n: pq.read_table(ws.features / f"{n}.parquet") for n in ("examples", "eval")}


def _before(table: pa.Table, t) -> pa.Table:
    return table.filter(
        pc.less(table["event_ts"], pa.scalar(t, table.schema.field("event_ts").type))
    )


@pytest.mark.parametrize("planted_kind", ["stream", "click", "impression", "follow"])
def test_a_planted_event_is_invisible_before_its_time(tmp_path, planted_kind):
    rows, users, artists = random_lake()
    t = at(10, 7)  # inside the valid window [day 7, day 14)
    busy = "u3"  # an existing user with events on both sides of t
    planted = ev(planted_kind, busy, "a1", t, "t1-0", 9_000_000, 240_000)
    if planted_kind != "stream":
        planted.update(track_id=None, ms_played=None, track_duration_ms=None)
    base = _build(tmp_path, "base", rows, users, artists)
    plant = _build(tmp_path, "plant", [*rows, planted], users, artists)

    # every example before t, every column (hist_end, segments, dense), is unchanged
    assert _before(plant["examples"], t).equals(_before(base["examples"], t))
    # eval state frozen at the valid cutoff (< t) is unchanged; only targets may grow
    state = [c for c in base["eval"].column_names if c != "targets"]
    valid = [e.filter(pc.equal(e["split"], "valid")) for e in (base["eval"], plant["eval"])]
    common = pc.is_in(valid[1]["user_key"], value_set=valid[0]["user_key"])
    assert valid[1].filter(common).select(state).equals(valid[0].select(state))

    # ... while the plant is visible to what comes after it, so this test can fail
    after = [
        e.filter(
            pc.and_(
                pc.equal(e["user_key"], busy),
                pc.greater_equal(e["event_ts"], pa.scalar(t, e.schema.field("event_ts").type)),
            )
        )
        for e in (base["examples"], plant["examples"])
    ]
    assert after[0].num_rows > 0 and not after[1].equals(after[0])


@pytest.mark.parametrize("followed_len", [100, 2])
def test_examples_equal_user_features_at_their_event_time(tmp_path, followed_len: int):
    """... and an example's ``followed`` is the newest ``followed_len`` of the user's."""
    rows, users, artists = random_lake(seed=11)
    ws = Workspace(tmp_path / "ws")
    write_lake(ws, events_table(rows), users, artists)
    build_features(ws, FeatureConfig(followed_len=followed_len), online="")
    examples = pq.read_table(ws.features / "examples.parquet").to_pylist()
    seqs = {
        r["user_key"]: r["artists"]
        for r in pq.read_table(ws.features / "sequences.parquet").to_pylist()
    }
    log = load_event_log(ws)
    checked = followed = capped = 0
    for ex in examples[::7]:
        state = user_features_at(log, None, ex["event_ts"]).to_pylist()
        row = next(r for r in state if r["user_key"] == ex["user_key"])
        for f in (*USER_SEGMENT_FIELDS, *USER_DENSE_FIELDS):
            assert ex[f] == row[f], (f, ex)
        hist = seqs[ex["user_key"]][max(0, ex["hist_end"] - 100) : ex["hist_end"]]
        assert row["history"] == hist[::-1]
        # follows strictly before the event, newest first
        assert ex["followed"] == row["followed"][:followed_len], ex
        followed += bool(row["followed"])
        capped += len(row["followed"]) > followed_len
        checked += 1
    assert checked > 50 and followed > 10
    assert capped > 5 if followed_len == 2 else capped == 0


def test_truncating_the_log_changes_no_earlier_state(tmp_path):
    """user_features_at over the whole log equals it over the log cut at as_of."""
    rows, users, artists = random_lake(seed=3)
    full = user_features_at(events_table(rows), users, at(9, 5), artists=artists)
    cut = [r for r in rows if r["event_ts"] < at(9, 5)]
    assert user_features_at(events_table(cut), users, at(9, 5), artists=artists).equals(full)
