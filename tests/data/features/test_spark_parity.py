"""The Spark engine writes the local engine's tables: same rows, columns and types.

A tiny world's lake (deleted users and late events included) plus planted point-in-time edge
cases: events exactly at the valid and test cutoffs, a late event committed after the events
of later days (and at the very millisecond of another event of its user, so the read order
decides the tie), and a deleted user (events, no account row). Both engines build from the
same lake version; every table is compared sorted by its key, floats to 1e-9.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.constants import DAY_MS
from core.workspace import Workspace
from data.features.build import FeatureConfig, build_features
from data.features.config import split_cutoffs
from data.lake import append_events, events_dataset, read_users
from tests.data.features.features_lake import ev, events_table
from tests.fixtures.tables import assert_same_column

pytestmark = pytest.mark.slow

KEYS = {
    "examples": ["user_key", "event_ts", "artist_id", "event_type"],
    "sequences": ["user_key"],
    "eval_users": ["split", "user_key"],
    "user_features": ["user_key"],
    "artist_features": ["artist_id"],
    "trending": ["segment", "rank"],
}
DELETED = "deleted-user-planted"


def _ms(t: int) -> datetime:
    return datetime.fromtimestamp(t / 1000, tz=timezone.utc)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    from data.ingest.job import run_ingest
    from world.generate import WorldConfig, generate_world

    ws = Workspace(tmp_path_factory.mktemp("parity") / "ws").ensure()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TASTEMAKER_DEMO", "1")
        mp.delenv("TASTEMAKER_PSEUDONYM_KEY", raising=False)
        generate_world(ws, WorldConfig.tiny(seed=0))
        run_ingest(ws)
    lake_events = events_dataset(ws.lake_events).to_table()
    cut = split_cutoffs(pc.max(lake_events["event_ts"]).value, FeatureConfig())
    users = read_users(ws.lake_users)["user_key"].to_pylist()
    someone, other = users[0], users[1]
    artists = pq.read_table(ws.lake_artists)["artist_id"].to_pylist()
    early = cut["valid"] - 10 * DAY_MS + 3_600_000
    rows = [
        # exactly at the cutoffs: test/valid examples, and outside the state at the cutoff
        ev("stream", someone, artists[0], _ms(cut["test"]), "t-cut", 90_000, 180_000),
        ev("click", someone, artists[1], _ms(cut["valid"])),
        ev("follow", other, artists[2], _ms(cut["test"])),
        # late: days before events already in the lake, and tied with another of its events
        ev("stream", other, artists[3], _ms(early), "t-late", 60_000, 200_000),
        ev("follow", other, artists[3], _ms(early)),
        ev("stream", other, artists[4], _ms(early), "t-late", 10_000, 200_000),
        # a deleted user: events, no account row
        ev("stream", DELETED, artists[0], _ms(cut["valid"] - DAY_MS), "t-cut", 120_000, 180_000),
        ev("follow", DELETED, artists[5], _ms(cut["test"] + DAY_MS)),
    ]
    append_events(ws.lake_events, events_table(rows), "zz-planted", {})
    return ws


def _tables(ws: Workspace) -> dict[str, pa.Table]:
    out = ws.feature_dir
    return {name: pq.read_table(getattr(out, name)) for name in KEYS}


@pytest.fixture(scope="module")
def local_ws(lake: Workspace, tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("local") / "ws")


@pytest.fixture(scope="module")
def built(lake: Workspace, local_ws: Workspace, spark) -> tuple[dict, dict, dict, dict]:
    shutil.copytree(lake.root, local_ws.root)
    local_meta = build_features(local_ws, online="")
    spark_meta = build_features(lake, online="", spark=spark)
    return _tables(local_ws), _tables(lake), local_meta, spark_meta


@pytest.mark.parametrize("name", list(KEYS))
def test_spark_writes_the_local_tables(built, name: str) -> None:
    local, spark, _, _ = built
    a, b = local[name], spark[name]
    assert b.schema == a.schema
    assert b.num_rows == a.num_rows > 0
    order = [(k, "ascending") for k in KEYS[name]]
    a, b = a.sort_by(order), b.sort_by(order)
    for column in a.column_names:
        assert_same_column(a[column], b[column], f"{name}.{column}")


def test_the_edge_cases_are_in_the_tables(built, lake: Workspace) -> None:
    local, spark, local_meta, spark_meta = built
    assert spark_meta["counts"] == local_meta["counts"]
    assert spark_meta["cutoffs"] == local_meta["cutoffs"]
    assert spark_meta["lake_version"] == local_meta["lake_version"]
    cut = {k: datetime.fromisoformat(v) for k, v in local_meta["cutoffs"].items()}
    ex = spark["examples"]
    at_test = ex.filter(
        pc.equal(ex["event_ts"], pa.scalar(cut["test"], ex.schema.field("event_ts").type))
    )
    assert "test" in at_test["split"].to_pylist()
    at_valid = ex.filter(
        pc.equal(ex["event_ts"], pa.scalar(cut["valid"], ex.schema.field("event_ts").type))
    )
    assert set(at_valid["split"].to_pylist()) == {"valid"}
    users = spark["user_features"]
    deleted = users.filter(pc.equal(users["user_key"], DELETED))
    assert deleted.num_rows == 1 and deleted["age_group"][0].as_py() == "unknown"
    assert DELETED not in read_users(lake.lake_users)["user_key"].to_pylist()
    ev_rows = spark["eval_users"].filter(pc.equal(spark["eval_users"]["user_key"], DELETED))
    assert ev_rows["split"].to_pylist() == ["test"] and len(ev_rows["targets"][0]) == 1


def test_a_spark_job_that_dies_leaves_the_last_tables(
    built, lake: Workspace, spark, tmp_path
) -> None:
    """A task fails late (the catalogue's tags are not lists: the artist stage dies after the
    user stage wrote its parts): the feature folder keeps the previous build's files, byte for
    byte, and no staging folder."""
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(lake.root, ws.root)
    artists = pq.read_table(ws.lake_artists)
    broken = artists.set_column(
        artists.schema.get_field_index("tags"),
        "tags",
        pa.array([",".join(t) for t in artists["tags"].to_pylist()]),
    )
    pq.write_table(broken, ws.lake_artists)
    before = _files(ws.feature_dir.path)
    with pytest.raises(Exception, match="cast from string to list"):
        build_features(ws, online="", spark=spark)
    after = _files(ws.feature_dir.path)
    assert after == before and any(name.startswith("examples.parquet/") for name in after)


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (the examples are a folder of day files) -> its bytes."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_spark_writes_the_local_files_byte_for_byte(
    built, lake: Workspace, local_ws: Workspace
) -> None:
    """Beyond equal rows: the same Parquet files (the driver streams the tasks' parts into
    the row groups the local engine writes), so a reader cannot tell which engine built."""
    spark_dir, local_dir = lake.feature_dir.path, local_ws.feature_dir.path
    names = sorted(
        p.relative_to(spark_dir).as_posix()
        for p in spark_dir.rglob("*.parquet")
        if p.is_file() and not p.name.startswith(".")
    )
    assert (
        sorted(
            p.relative_to(local_dir).as_posix()
            for p in local_dir.rglob("*.parquet")
            if p.is_file() and not p.name.startswith(".") and "state" not in p.parts
        )
        == names
    )
    assert sum(n.startswith("examples.parquet/") for n in names) > 5
    for name in names:
        assert (spark_dir / name).read_bytes() == (local_dir / name).read_bytes(), name
