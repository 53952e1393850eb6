"""The incremental daily build equals the full rebuild.

The tiny world's lake is replayed into a fresh events table day by day: all but the last two
days, then the second-to-last day, then the last day together with late events (days back,
one at the very millisecond of another event of its user, in a file that sorts *before* that
event's file, so the read order decides the tie; a stream on a track with later streams, so
the listen ratios of carried streams change) and a deleted user (the account row removed).
Day 1 is a full build, days 2 and 3 incremental; day 3's tables must equal a full rebuild of
the same lake version: every table sorted by its key, types equal, floats to 1e-9, and in
fact row for row in the same order.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.constants import DAY_MS
from core.workspace import Workspace
from data.features import build as build_mod
from data.features.build import FeatureConfig, build_features
from data.features.incremental import State, load_state
from data.lake import (
    LAKE_EVENTS,
    append_events,
    events_dataset,
    open_events,
    publish_users,
    read_users,
)
from tests.data.features.features_lake import ev, events_table, users_table
from tests.fixtures.tables import assert_same_column

KEYS = {
    "examples": ["user_key", "event_ts", "artist_id", "event_type"],
    "sequences": ["user_key"],
    "eval_users": ["split", "user_key"],
    "user_features": ["user_key"],
    "artist_features": ["artist_id"],
    "trending": ["segment", "rank"],
}


def _ms(t: int) -> datetime:
    return datetime.fromtimestamp(t / 1000, tz=timezone.utc)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, pa.Table]:
    """The tiny world ingested once: (its workspace, all its lake events)."""
    from data.ingest.job import run_ingest
    from world.generate import WorldConfig, generate_world

    ws = Workspace(tmp_path_factory.mktemp("incr-world") / "ws").ensure()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TASTEMAKER_DEMO", "1")
        mp.delenv("TASTEMAKER_PSEUDONYM_KEY", raising=False)
        generate_world(ws, WorldConfig.tiny(seed=0))
        run_ingest(ws)
    return ws, events_dataset(ws.lake_events).to_table().select(LAKE_EVENTS.names)


def _fresh(world: tuple[Workspace, pa.Table], root: Path) -> tuple[Workspace, list[pa.Table]]:
    """A workspace with the world's views and no events; the events cut into 3 days."""
    src, events = world
    ws = Workspace(root).ensure()
    ws.lake_users.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src.lake_users, ws.lake_users)  # the user view is a Delta table
    shutil.copy(src.lake_artists, ws.lake_artists)
    ts = events["event_ts"].cast(pa.int64()).to_numpy()
    end = (int(ts.max()) // DAY_MS + 1) * DAY_MS
    days = np.digitize(ts, [end - 2 * DAY_MS, end - DAY_MS])
    return ws, [events.filter(pa.array(days == d)) for d in range(3)]


def _tables(ws: Workspace) -> dict[str, pa.Table]:
    return {name: pq.read_table(getattr(ws.feature_dir, name)) for name in KEYS}


def _assert_same_tables(got: dict[str, pa.Table], want: dict[str, pa.Table]) -> None:
    for name, keys in KEYS.items():
        a, b = got[name], want[name]
        assert a.schema == b.schema, name
        assert a.num_rows == b.num_rows > 0, name
        assert a.equals(b), f"{name}: not row for row the full rebuild's"  # same order too
        order = [(k, "ascending") for k in keys]
        a, b = a.sort_by(order), b.sort_by(order)
        for column in a.column_names:
            assert_same_column(a[column], b[column], f"{name}.{column}")


def _late_rows(ws: Workspace, day1: pa.Table) -> tuple[pa.Table, str]:
    """Late events for day 3: a stream tied at the millisecond of a day-1 event of its user,
    on a track that has later streams; a follow days back. Returns (rows, the tied user)."""
    streams = day1.filter(
        pc.and_(pc.equal(day1["event_type"], "stream"), pc.is_valid(day1["track_id"]))
    )
    counts = pc.value_counts(streams["track_id"]).to_pylist()
    track = max(counts, key=lambda c: c["counts"])["values"]  # streamed again later on
    first = streams.filter(pc.equal(streams["track_id"], track)).sort_by("event_ts").slice(0, 1)
    user = first["user_key"][0].as_py()
    when = first["event_ts"][0].as_py()
    artist = first["artist_id"][0].as_py()
    rows = [
        ev("stream", user, artist, when, track, 400_000, 240_000),  # long: shifts the ratios
        ev("follow", user, artist, when),
    ]
    return events_table(rows), user


def _meta(ws: Workspace) -> dict:
    return json.loads(ws.feature_dir.meta.read_text())


@pytest.fixture(scope="module")
def three_days(world, tmp_path_factory: pytest.TempPathFactory):
    ws, (day1, day2, day3) = _fresh(world, tmp_path_factory.mktemp("incr") / "ws")
    append_events(ws.lake_events, day1, "part-b-day1", {})
    first = build_features(ws, online="", incremental=True)
    append_events(ws.lake_events, day2, "part-c-day2", {})
    second = build_features(ws, online="", incremental=True)
    late, tied_user = _late_rows(ws, day1)
    append_events(ws.lake_events, late, "part-a-late", {})  # sorts before part-b-day1
    append_events(ws.lake_events, day3, "part-d-day3", {})
    users = read_users(ws.lake_users)
    active = set(day1["user_key"].to_pylist()) & set(day3["user_key"].to_pylist())
    deleted = sorted(active - {tied_user})[0]
    publish_users(ws.lake_users, users.filter(pc.not_equal(users["user_key"], deleted)), "test")
    third = build_features(ws, online="", incremental=True)
    full_ws = Workspace(tmp_path_factory.mktemp("incr-full") / "ws")
    shutil.copytree(ws.root, full_ws.root)
    shutil.rmtree(full_ws.features)
    full = build_features(full_ws, online="")
    return ws, full_ws, (first, second, third, full), deleted


def test_day_three_incremental_equals_the_full_rebuild(three_days) -> None:
    ws, full_ws, (first, second, third, full), deleted = three_days
    assert first["build"]["mode"] == "full" and "no carried state" in first["build"]["reason"]
    assert second["build"]["mode"] == third["build"]["mode"] == "incremental"
    assert second["build"]["files_read"] >= 1
    assert third["build"]["files_read"] == 2  # the day's file and the late one
    assert third["build"]["late_events"] == 2
    assert third["build"]["carried_listen_ratios_changed"] > 0
    assert third["lake_version"] == full["lake_version"]
    assert third["counts"] == full["counts"] and third["cutoffs"] == full["cutoffs"]
    _assert_same_tables(_tables(ws), _tables(full_ws))
    users = _tables(ws)["user_features"]
    gone = users.filter(pc.equal(users["user_key"], deleted))
    assert gone.num_rows == 1 and gone["age_group"][0].as_py() == "unknown"


def _bytes(ws: Workspace) -> dict[str, bytes]:
    """Every table's Parquet bytes; the examples' per day file."""
    out = {}
    for name in KEYS:
        path = getattr(ws.feature_dir, name)
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        out.update({f"{name}/{f.name}": f.read_bytes() for f in files})
    return out


def test_day_three_files_are_the_full_rebuilds_byte_for_byte(three_days) -> None:
    ws, full_ws, *_ = three_days
    got, want = _bytes(ws), _bytes(full_ws)
    assert sorted(got) == sorted(want)
    assert [name for name in want if got[name] != want[name]] == []


def test_a_plain_day_rewrites_three_days_and_equals_the_full_rebuild(world, tmp_path) -> None:
    """A day without late events: the new day and the two days whose split the cutoffs move
    are rewritten, every other day file is left; every file equals the full rebuild's, byte
    for byte."""
    ws, (day1, day2, _) = _fresh(world, tmp_path / "ws")
    append_events(ws.lake_events, day1, "part-0", {})
    build_features(ws, online="")
    append_events(ws.lake_events, day2, "part-1", {})
    before = {p.name: p.stat().st_mtime_ns for p in ws.feature_dir.examples.iterdir()}
    done = build_features(ws, online="", incremental=True)
    assert done["build"]["mode"] == "incremental"
    assert done["build"]["example_days_written"] == 3
    after = {p.name: p.stat().st_mtime_ns for p in ws.feature_dir.examples.iterdir()}
    assert len([n for n in before if after.get(n) == before[n]]) == len(after) - 3
    full_ws = Workspace(tmp_path / "full")
    shutil.copytree(ws.root, full_ws.root)
    shutil.rmtree(full_ws.features)
    build_features(full_ws, online="")
    got, want = _bytes(ws), _bytes(full_ws)
    assert sorted(got) == sorted(want)
    assert [name for name in want if got[name] != want[name]] == []


def test_nothing_new_rebuilds_the_same_tables(three_days) -> None:
    ws, full_ws, *_ = three_days
    again = build_features(ws, online="", incremental=True)
    assert again["build"]["mode"] == "incremental" and again["build"]["files_read"] == 0
    _assert_same_tables(_tables(ws), _tables(full_ws))


def _early_users(examples: pa.Table, before: int) -> list[str]:
    """Users whose examples all lie before ``before``, on at least two days (most days first)."""
    ts = examples["event_ts"].cast(pa.int64())
    days = pa.table({"u": examples["user_key"], "d": pc.divide(ts, DAY_MS), "t": ts})
    per = days.group_by("u").aggregate([("d", "count_distinct"), ("t", "max")])
    per = per.filter(pc.and_(pc.less(per["t_max"], before), pc.greater(per["d_count_distinct"], 1)))
    return per.sort_by([("d_count_distinct", "descending"), ("u", "ascending")])["u"].to_pylist()


def test_a_day_rewrites_only_the_example_days_that_change(world, tmp_path) -> None:
    """Regression guard for the day files of examples: day 3 brings a late follow (at a busy
    user's first example) and an edited account (another busy user's country), each touching
    examples on days nothing else rewrites. Those days must be rewritten, the others left as
    they are, and the result must equal the full rebuild."""
    ws, (day1, day2, day3) = _fresh(world, tmp_path / "ws")
    append_events(ws.lake_events, pa.concat_tables([day1, day2]), "part-0", {})
    build_features(ws, online="", incremental=True)
    examples = pq.read_table(ws.feature_dir.examples)
    valid_cut = int(pc.min(examples["event_ts"].cast(pa.int64())).as_py()) + 10 * DAY_MS
    late_user, edited = _early_users(examples, valid_cut)[:2]
    mine = examples.filter(pc.equal(examples["user_key"], late_user)).sort_by("event_ts")
    late = events_table([ev("follow", late_user, "a-late", _ms(mine["event_ts"][0].value - 1))])
    append_events(ws.lake_events, late, "part-1-late", {})
    append_events(ws.lake_events, day3, "part-2", {})
    users = read_users(ws.lake_users)
    country = pc.if_else(pc.equal(users["user_key"], edited), pa.scalar("XX"), users["country"])
    users = users.set_column(users.schema.get_field_index("country"), "country", country)
    publish_users(ws.lake_users, users, "test")
    before = {p.name: p.stat().st_mtime_ns for p in ws.feature_dir.examples.iterdir()}
    done = build_features(ws, online="", incremental=True)
    assert done["build"]["mode"] == "incremental" and done["build"]["accounts_changed"] == 1
    after = {p.name: p.stat().st_mtime_ns for p in ws.feature_dir.examples.iterdir()}
    kept = [name for name in before if after.get(name) == before[name]]
    assert 0 < done["build"]["example_days_written"] < len(after) and kept
    full_ws = Workspace(tmp_path / "full")
    shutil.copytree(ws.root, full_ws.root)
    shutil.rmtree(full_ws.features)
    build_features(full_ws, online="")
    _assert_same_tables(_tables(ws), _tables(full_ws))


def _full_rebuild_bytes(ws: Workspace, root: Path) -> dict[str, bytes]:
    full_ws = Workspace(root)
    shutil.copytree(ws.root, full_ws.root)
    shutil.rmtree(full_ws.features)
    build_features(full_ws, online="")
    return _bytes(full_ws)


def test_daily_parts_carry_new_strings_late_events_and_accounts(world, tmp_path) -> None:
    """Two daily builds that each write only their own part of the state's log (no
    compaction): the first brings a new user, artist and track whose ids sort before every
    carried one (so the carried codes are no longer the sorted ranks), the second late
    events that change no listen ratio (a follow and a click days back), an edited and a
    deleted account. Every file equals the full rebuild's, byte for byte, after each day;
    and a state of the previous format means one full rebuild, with the reason."""
    ws, (day1, day2, day3) = _fresh(world, tmp_path / "ws")
    append_events(ws.lake_events, day1, "part-0", {})
    build_features(ws, online="")
    first = load_state(ws, FeatureConfig())
    assert isinstance(first, State) and first.meta["log_parts"] == ["log-base.arrow"]
    when = _ms(int(day2["event_ts"].cast(pa.int64()).to_numpy().max()))
    newcomer = "000-new-user"
    fresh = [
        ev("stream", newcomer, "000-new-artist", when, "000-new-track", 200_000, 240_000),
        ev("stream", newcomer, "000-new-artist", when, "000-new-track", 100_000, 240_000),
        ev("follow", newcomer, "000-new-artist", when),
    ]
    append_events(ws.lake_events, pa.concat_tables([day2, events_table(fresh)]), "part-1", {})
    users = read_users(ws.lake_users)
    signup = users["signup_ts"][0].as_py()
    row = users_table([(newcomer, "25-34", "f", "SE", "north", signup)])
    publish_users(ws.lake_users, pa.concat_tables([users, row.cast(users.schema)]), "test")
    second = build_features(ws, online="", incremental=True)
    assert second["build"]["state"] == "daily part 1", second["build"]
    assert _bytes(ws) == _full_rebuild_bytes(ws, tmp_path / "full-2")

    active = sorted(set(day1["user_key"].to_pylist()) & set(day3["user_key"].to_pylist()))
    late_user, edited, deleted = active[:3]
    early = _ms(int(day1["event_ts"].cast(pa.int64()).to_numpy().min()) + DAY_MS)
    late = [ev("follow", late_user, "000-new-artist", early), ev("click", late_user, "a0", early)]
    append_events(ws.lake_events, pa.concat_tables([events_table(late), day3]), "part-2", {})
    users = read_users(ws.lake_users)
    users = users.filter(pc.not_equal(users["user_key"], deleted))
    country = pc.if_else(pc.equal(users["user_key"], edited), pa.scalar("XX"), users["country"])
    users = users.set_column(users.schema.get_field_index("country"), "country", country)
    publish_users(ws.lake_users, users, "test")
    third = build_features(ws, online="", incremental=True)
    built = third["build"]
    assert built["state"] == "daily part 2" and built["late_events"] == 2, built
    assert built["carried_listen_ratios_changed"] == 0 and built["accounts_changed"] == 2
    state = load_state(ws, FeatureConfig())
    assert isinstance(state, State) and len(state.meta["log_parts"]) == 3
    assert state.rows.num_rows == first.rows.num_rows  # the base part was not rewritten
    assert state.n_rows == third["counts"]["events"]
    vocab = state.vocab["u"].to_pylist()  # grown at its end: codes are not sorted ranks
    assert vocab[-1] == newcomer and newcomer < vocab[0]
    assert _bytes(ws) == _full_rebuild_bytes(ws, tmp_path / "full-3")

    current = ws.feature_dir.state / "current.json"
    meta = json.loads(current.read_text())
    current.write_text(json.dumps({**meta, "format": 2}))
    older = build_features(ws, online="", incremental=True)
    assert older["build"]["mode"] == "full"
    assert "another format (2, expected 3)" in older["build"]["reason"]


def test_compacting_every_day_gives_the_same_files(world, tmp_path, monkeypatch) -> None:
    """A daily build whose parts pass the share of the base rewrites the whole log as a new
    base; the next day then starts a part again. Both equal the full rebuild."""
    from data.features import incremental

    ws, (day1, day2, day3) = _fresh(world, tmp_path / "ws")
    append_events(ws.lake_events, day1, "part-0", {})
    build_features(ws, online="")
    append_events(ws.lake_events, day2, "part-1", {})
    monkeypatch.setattr(incremental, "_COMPACT_SHARE", 0.0)
    done = build_features(ws, online="", incremental=True)
    assert done["build"]["state"] == "compacted"
    state = load_state(ws, FeatureConfig())
    assert isinstance(state, State) and state.meta["log_parts"] == ["log-base.arrow"]
    assert state.rows.num_rows == done["counts"]["events"]
    monkeypatch.setattr(incremental, "_COMPACT_SHARE", 1.0)
    append_events(ws.lake_events, day3, "part-2", {})
    done = build_features(ws, online="", incremental=True)
    assert done["build"]["state"] == "daily part 1"
    assert _bytes(ws) == _full_rebuild_bytes(ws, tmp_path / "full")


def test_a_killed_build_leaves_the_previous_state(world, tmp_path, monkeypatch) -> None:
    ws, (day1, day2, day3) = _fresh(world, tmp_path / "ws")
    append_events(ws.lake_events, pa.concat_tables([day1, day2]), "part-0", {})
    build_features(ws, online="", incremental=True)
    current = (ws.feature_dir.state / "current.json").read_bytes()
    append_events(ws.lake_events, day3, "part-1", {})

    def dies(*args, **kwargs):
        raise RuntimeError("killed while building trending")

    monkeypatch.setattr(build_mod, "trending", dies)
    with pytest.raises(RuntimeError, match="killed"):
        build_features(ws, online="", incremental=True)
    assert (ws.feature_dir.state / "current.json").read_bytes() == current
    monkeypatch.undo()
    done = build_features(ws, online="", incremental=True)
    assert done["build"]["mode"] == "incremental" and done["build"]["files_read"] == 1
    full_ws = Workspace(tmp_path / "full")
    shutil.copytree(ws.root, full_ws.root)
    build_features(full_ws, online="")
    _assert_same_tables(_tables(ws), _tables(full_ws))
    assert [p.name for p in ws.feature_dir.state.iterdir() if p.is_dir()] == [
        json.loads((ws.feature_dir.state / "current.json").read_text())["folder"]
    ]


def test_another_config_or_removed_files_mean_a_full_rebuild(world, tmp_path, caplog) -> None:
    ws, (day1, day2, _) = _fresh(world, tmp_path / "ws")
    append_events(ws.lake_events, day1, "part-0", {})
    build_features(ws, online="", incremental=True)
    append_events(ws.lake_events, day2, "part-1", {})
    other = build_features(ws, FeatureConfig(test_days=6), online="", incremental=True)
    assert other["build"]["mode"] == "full"
    assert "another feature config (['test_days'])" in other["build"]["reason"]
    assert any("full rebuild" in r.getMessage() for r in caplog.records)
    older = build_features(
        ws, FeatureConfig(test_days=6), online="", incremental=True, as_of_version=1
    )
    assert older["build"]["mode"] == "full" and "newer than 1" in older["build"]["reason"]
    latest = build_features(ws, FeatureConfig(test_days=6), online="", incremental=True)
    assert latest["build"]["mode"] == "incremental" and latest["build"]["since_version"] == 1
    # an erasure rewrites the files holding the user's events: carried rows can't be matched
    someone = day1["user_key"][0].as_py()
    open_events(ws.lake_events).delete(f"user_key = '{someone}'")
    compacted = build_features(ws, FeatureConfig(test_days=6), online="", incremental=True)
    assert compacted["build"]["mode"] == "full"
    assert "left the table" in compacted["build"]["reason"]
    assert _meta(ws)["build"]["mode"] == "full"


ROOT = Path(__file__).resolve().parents[3]
BUILD = f"""
import sys
sys.path[:0] = [{str(ROOT)!r}]
from pathlib import Path
from core.workspace import Workspace
from data.features.build import build_features
build_features(Workspace(Path(sys.argv[1])), online="", incremental=True)
"""


def _build_in_child(ws: Workspace) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", BUILD, str(ws.root)], cwd=ROOT)


def test_sigkill_at_any_moment_leaves_a_usable_state(world, tmp_path) -> None:
    """SIGKILL the incremental build at several moments: the current state is always one
    that loads (the previous one or the new one, never a mix), and the next run's tables
    equal an uninterrupted run's."""
    ws, (day1, day2, day3) = _fresh(world, tmp_path / "ws")
    append_events(ws.lake_events, pa.concat_tables([day1, day2]), "part-0", {})
    build_features(ws, online="", incremental=True)
    before = load_state(ws, FeatureConfig())
    assert isinstance(before, State)
    append_events(ws.lake_events, day3, "part-1", {})
    clean = Workspace(tmp_path / "clean")
    shutil.copytree(ws.root, clean.root)
    started = time.perf_counter()
    assert _build_in_child(clean).wait() == 0
    took = time.perf_counter() - started
    for fraction in (0.3, 0.5, 0.7, 0.8, 0.9, 0.95):
        child = _build_in_child(ws)
        time.sleep(took * fraction)
        child.send_signal(signal.SIGKILL)
        child.wait()
        state = load_state(ws, FeatureConfig())
        assert isinstance(state, State), state
        assert state.version in (before.version, before.version + 1)
        assert state.n_rows in (before.n_rows, state.meta["events"])
    done = build_features(ws, online="", incremental=True)
    assert done["build"]["mode"] == "incremental"
    _assert_same_tables(_tables(ws), _tables(clean))


def test_examples_read_back_in_the_event_logs_order(three_days, tmp_path) -> None:
    """The day files, read with ``read_examples``, are the rows a single-file build wrote:
    every positive of the log in log order (user, time, lake read order), which training's
    seeded shuffle depends on; the folder read as it lies is in another (day) order."""
    from data.features.build import cutoffs, load_event_log
    from data.features.example_parts import read_examples
    from data.features.examples import build_examples

    _, full_ws, *_ = three_days
    config = FeatureConfig()
    ev = load_event_log(full_ws, config)
    cut = cutoffs(ev, config)
    whole = build_examples(ev, config, cut["valid"], cut["test"])  # log order, no rows given
    folder = full_ws.feature_dir.examples
    assert folder.is_dir()
    as_stored = pq.read_table(folder)
    assert not as_stored["user_key"].equals(whole["user_key"])  # the test has work to do
    got = read_examples(folder)
    assert got.column_names == whole.column_names and got.num_rows == whole.num_rows
    for name in whole.column_names:
        assert got[name].combine_chunks().equals(whole[name].combine_chunks()), name
    narrow = read_examples(folder, ["artist_id", "weight"])
    assert narrow.column_names == ["artist_id", "weight"]
    assert narrow["artist_id"].equals(got["artist_id"])
    one_file = tmp_path / "examples.parquet"  # the folder's rows as one file, in day order
    pq.write_table(as_stored, one_file)
    assert read_examples(one_file)["user_key"].equals(whole["user_key"])
    assert read_examples(one_file)["event_ts"].equals(whole["event_ts"])


def test_examples_built_in_small_batches_are_the_same_files(world, tmp_path, monkeypatch) -> None:
    """The full build makes the examples a few days at a time (bounded memory), the user
    state of several batches found by one pass of prefix sums: the day files are byte for
    byte those of a build in one batch, whether a pass serves one batch or several."""
    from data.features import example_parts

    src, _ = world
    files = {}
    runs = (("one", 1 << 30, 1 << 30), ("small", 40, 1 << 30), ("small-pass", 40, 100))
    for name, batch_rows, state_rows in runs:
        ws = Workspace(tmp_path / name)
        shutil.copytree(src.root, ws.root)
        shutil.rmtree(ws.features, ignore_errors=True)
        monkeypatch.setattr(example_parts, "_BATCH_ROWS", batch_rows)
        monkeypatch.setattr(example_parts, "_STATE_ROWS", state_rows)
        build_features(ws, online="")
        files[name] = {p.name: p.read_bytes() for p in ws.feature_dir.examples.glob("*.parquet")}
    assert len(files["one"]) > 3
    assert files["small"] == files["one"]
    assert files["small-pass"] == files["one"]
