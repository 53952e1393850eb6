"""The A/B simulator on the session's tiny pipeline (world -> ... -> bundle)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from core.settings import Settings
from data.accounts import default_accounts_url, open_accounts

pytestmark = pytest.mark.slow


def test_the_rebuilt_population_is_the_world_that_was_written(pipeline) -> None:
    from jobs.simulate import world_config
    from world.population import rebuild

    ws, _ = pipeline
    population = rebuild(world_config(ws))
    with open_accounts(default_accounts_url(ws)) as accounts:
        ids = set(accounts.user_ids()) | set(accounts.deleted_user_ids())
        assert set(population.people.user_id.tolist()) == ids
    lake_artists = set(pq.read_table(ws.lake_artists).column("artist_id").to_pylist())
    assert set(population.catalogue.artist_id.tolist()) == lake_artists


def test_ab_test_runs_the_served_model_and_is_reproducible(pipeline, demo_mode) -> None:
    from jobs.simulate import simulate

    ws, _ = pipeline
    first = simulate(
        ws, ["random", "model", "popular"], days=7, seed=1, settings=Settings(workspace=ws.root)
    )
    again = simulate(
        ws, ["random", "model", "popular"], days=7, seed=1, settings=Settings(workspace=ws.root)
    )
    assert first["raw"] == again["raw"]
    arms = first["arms"]
    assert all(a["listeners"] > 0 and a["impressions"] > 0 for a in arms.values())
    assert "ctr_vs_random" in arms["model"] and "ctr_needed_per_arm" in arms["popular"]
    assert "churn7" in arms["model"] and "churn14" not in arms["model"]  # 7 days: no 14-day churn
    assert "| model |" in first["markdown"]


def test_listeners_click_what_they_like_and_stay_when_they_find_it(pipeline) -> None:
    """The simulator's rules on their own: slates drawn from each listener's latent roster
    (their true taste) against random slates, same listeners, same seed."""
    import numpy as np

    from jobs.simulate import world_config
    from jobs.simulate.arms import _run_arm
    from world.population import ChurnRule, end_ms, rebuild

    ws, _ = pipeline
    population = rebuild(world_config(ws))
    rng = np.random.default_rng(0)
    members = np.flatnonzero(population.people.deleted_ms < 0)
    roster, released = population.roster, population.released(end_ms(population.config))
    taste = np.full((len(members), 20), -1)
    for i, u in enumerate(members):
        own = roster.artist[roster.offsets[u] : roster.offsets[u + 1]][:20]
        taste[i, : len(own)] = own
    noise = np.stack([rng.choice(released, 20, replace=False) for _ in members])
    rule = ChurnRule()
    liked = _run_arm(population, members, taste, 14, 10, rule, np.random.default_rng(1))
    random = _run_arm(population, members, noise, 14, 10, rule, np.random.default_rng(1))
    assert liked["clicks"] / liked["impressions"] > 2 * random["clicks"] / random["impressions"]
    assert liked["churned14"] < random["churned14"]


def test_bad_arguments_are_refused(pipeline) -> None:
    from jobs.simulate import simulate

    ws, _ = pipeline
    with pytest.raises(ValueError, match="two --policy"):
        simulate(ws, ["model"], days=7, settings=Settings(workspace=ws.root))
    with pytest.raises(ValueError, match="unknown policy"):
        simulate(ws, ["model", "oracle"], days=1, settings=Settings(workspace=ws.root))


def test_ranker_arms_on_a_bundle_without_ranker(pipeline, demo_mode) -> None:
    """Without a ranker in the bundle, ``retrieval`` is the served model's own list and the
    ``model+ranker`` arm is refused rather than silently run as retrieval."""
    import numpy as np

    from jobs.simulate import world_config
    from jobs.simulate.policies import _model_lists
    from world.population import rebuild

    ws, _ = pipeline
    settings = Settings(workspace=ws.root)
    population = rebuild(world_config(ws))
    artist_ids = np.asarray(population.catalogue.artist_id, dtype=object)
    users = np.asarray(population.people.user_id)[:20]
    served = _model_lists(settings, users, artist_ids, "model")
    assert (served >= 0).any()
    np.testing.assert_array_equal(_model_lists(settings, users, artist_ids, "retrieval"), served)
    with pytest.raises(ValueError, match="carries no ranker"):
        _model_lists(settings, users, artist_ids, "model+ranker")


def test_arm_names_are_checked() -> None:
    from jobs.simulate.fresh import parse_arm

    assert parse_arm("model") == ("model", None)
    assert parse_arm("model@streamed") == ("model", "streamed")
    assert parse_arm("retrieval@day-old") == ("retrieval", "day-old")
    for bad in ("model@hourly", "popular@streamed"):
        with pytest.raises(ValueError, match="freshness"):
            parse_arm(bad)


@pytest.mark.redis
def test_a_streamed_arm_sees_a_click_at_the_next_session_a_day_old_arm_the_next_day(
    pipeline, demo_mode, redis_url
) -> None:
    """Through the real worker: a listener streams an artist in session 1; at session 2 the
    streamed arm's row has it first in the history and the list no longer holds it, the
    day-old arm's list is the morning's; on the next day both arms' rows have it."""
    import numpy as np

    from core.constants import DAY_MS
    from jobs.simulate import world_config
    from jobs.simulate.fresh import LiveArm
    from jobs.simulate.policies import start_ms
    from world.population import rebuild

    ws, _ = pipeline
    settings = Settings(workspace=ws.root)
    population = rebuild(world_config(ws))
    members = np.flatnonzero(population.people.deleted_ms < 0)[:30]
    arms = {
        f: LiveArm(ws, settings, redis_url, "model", f, population, members, 40)
        for f in ("streamed", "day-old")
    }
    try:
        day0 = start_ms(population)
        who = np.arange(len(members))
        before = {f: arm.lists(who, 0, day0 + 1000, day0) for f, arm in arms.items()}
        np.testing.assert_array_equal(before["streamed"][:, :10], before["day-old"][:, :10])
        picked = before["streamed"][:, :1]  # each listener streams the first artist shown
        shape = picked.shape
        out = {
            "clicked": np.ones(shape, bool),
            "streamed": np.ones(shape, bool),
            "followed": np.zeros(shape, bool),
            "ms_played": np.full(shape, 120_000),
            "track": np.zeros(shape, np.int64),
        }
        for arm in arms.values():
            arm.post(who, picked, out, day0 + 2000)
            cost = arm.cost()
            assert cost["outcomes"] == {"applied": 3 * len(members)}, (
                cost
            )  # impression, click, stream
            assert cost["live_rows"] == len(members) and cost["redis_bytes_per_listener"] > 0
        later = {f: arm.lists(who, 0, day0 + 3000, day0) for f, arm in arms.items()}
        np.testing.assert_array_equal(later["day-old"], before["day-old"])
        assert not (later["streamed"] == picked).any(axis=1).any()  # now seen: excluded
        assert (before["day-old"] == picked).any(axis=1).all()
        tomorrow = arms["day-old"].lists(who, 1, day0 + DAY_MS + 1000, day0 + DAY_MS)
        assert not (tomorrow == picked).any(axis=1).any()
    finally:
        for arm in arms.values():
            arm.close()


@pytest.mark.redis
def test_sessions_per_day_and_freshness_arms_run(pipeline, demo_mode, redis_url) -> None:
    from jobs.simulate import simulate

    ws, _ = pipeline
    settings = Settings(workspace=ws.root)
    result = simulate(
        ws,
        ["model@day-old", "model@streamed"],
        days=2,
        seed=2,
        settings=settings,
        sessions_per_day=3,
        redis_url=redis_url,
    )
    for arm in ("model@day-old", "model@streamed"):
        raw = result["raw"][arm]
        assert raw["impressions"] > 10 * raw["logins"] > 0  # k = 10: more than one slate a login
        assert raw["cost"]["stream_events"] >= raw["impressions"]
        assert 0 < raw["new_clicks"] <= raw["clicks"]
        assert set(raw["cost"]["outcomes"]) == {"applied"}
    with pytest.raises(ValueError, match="sessions-per-day"):
        simulate(ws, ["model", "popular"], days=1, settings=settings, sessions_per_day=0)
