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
