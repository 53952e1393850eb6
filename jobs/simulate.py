"""``tastemaker simulate``: an A/B test of recommendation policies on the synthetic listeners.

The workspace's world (``raw/world.json``) is rebuilt as a live population
(:mod:`world.population`, where the listeners' rules are stated). Listeners are split at random
between the arms; each simulated day every listener who has not churned may log in, gets a
slate of ``k`` artists from their arm's policy, and clicks, streams, follows and churns by their
true taste. Per arm: CTR (clicks per 100 impressions), stream-through (clicks that became
a stream of 30 s or more), follows per 100 impressions, and 7- and 14-day churn (listeners
who had left for good within 7 / 14 days), each with a 95 % interval; against the first arm,
the difference with its interval and the listeners per arm a test would need to detect it
(two-sided 5 %, power 80 %).

Policies (``--policy NAME``, two or more):

* ``model`` — the serving path itself: the current bundle (ONNX user tower + FAISS, and its
  ranker when it carries one) and the online feature store, through
  :func:`serving.recommender.recommend_from_row`;
* ``retrieval`` — the same bundle with its ranker switched off (two-tower order);
* ``model+ranker`` — the same bundle, which must carry a ranker (``tastemaker train-ranker``,
  then ``tastemaker export``): the ranking stage against ``retrieval`` on the same listeners;
* ``popular``, ``ease``, ``itemknn``, ``als`` — the baselines of :mod:`evaluation.registry`
  fitted on every positive of the lake (``features/examples.parquet``);
* ``random`` — uniform over the catalogue.

A policy's list is computed once per listener (the online store is not refreshed during the
simulation); each day's slate is its first ``k`` artists the listener has not clicked yet.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from core.constants import DAY_MS
from core.settings import Settings
from core.workspace import Workspace
from jobs.simulate_report import write_report
from world.config import WorldConfig

log = logging.getLogger("tastemaker.simulate")

LIST_LEN = 60  # artists ranked per listener; slates are taken from the top of this list
BASELINES = ("popular", "ease", "itemknn", "als")


def world_config(ws: Workspace) -> WorldConfig:
    path = ws.raw / "world.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `tastemaker world` (or `demo`) first")
    cfg = dict(json.loads(path.read_text())["config"])
    cfg["start"] = date.fromisoformat(cfg["start"])
    for key, value in cfg.items():
        if isinstance(value, list):
            cfg[key] = tuple(value)
    return WorldConfig(**cfg)


def _baseline_lists(
    ws: Workspace, name: str, user_keys: np.ndarray, artist_ids: np.ndarray
) -> np.ndarray:
    """``(U, LIST_LEN)`` world artist indices from a baseline fitted on the lake's positives."""
    import pandas as pd

    from evaluation.registry import make_recommender
    from models.base import Interactions

    ex = pq.read_table(
        ws.features / "examples.parquet", columns=["user_key", "artist_id", "weight"]
    )
    inter = Interactions.from_pairs(
        ex["user_key"].to_numpy(zero_copy_only=False),
        ex["artist_id"].to_numpy(zero_copy_only=False),
        ex["weight"].to_numpy(zero_copy_only=False),
    )
    model = make_recommender(name).fit(inter)
    popular = make_recommender("popular").fit(inter)
    rows = pd.Index(inter.user_ids).get_indexer(user_keys)
    known = rows >= 0
    cols = np.full((len(user_keys), LIST_LEN), -1, dtype=np.int64)
    if known.any():
        cols[known], _ = model.recommend(rows[known], LIST_LEN)
    if (~known).any():  # listeners the lake never saw get most-popular
        top, _ = popular.recommend(np.zeros(1, dtype=np.int64), LIST_LEN, exclude_seen=False)
        cols[~known] = top[0]
    to_world = pd.Index(artist_ids).get_indexer(inter.artist_ids)  # (A_lake,) -> world index
    return np.where(cols >= 0, to_world[np.maximum(cols, 0)], -1)


MODEL_POLICIES = ("model", "retrieval", "model+ranker")


def _model_lists(
    settings: Settings, user_ids: np.ndarray, artist_ids: np.ndarray, policy: str = "model"
) -> np.ndarray:
    """Lists from the served bundle (``settings.bundles_path``, features from its online
    store): as it is (``model``), without its ranker (``retrieval``), or with the ranker it must
    carry (``model+ranker``)."""
    import dataclasses

    import pandas as pd

    from data.features.online_store import open_online_store
    from data.pii import pseudonym_key, pseudonymise
    from serving.recommender import recommend_from_row, trending_list
    from serving.reload import ModelHolder

    model = ModelHolder(settings.bundles_path).current
    if policy == "model+ranker" and model.ranker is None:
        raise ValueError(
            f"policy model+ranker: bundle {model.version} carries no ranker; run "
            "`tastemaker train-ranker` and `tastemaker export` first"
        )
    if policy == "retrieval":
        model = dataclasses.replace(model, ranker=None)
    key = pseudonym_key(settings)
    store = open_online_store(settings.online_store_target)
    try:
        index = pd.Index(artist_ids)
        out = np.full((len(user_ids), LIST_LEN), -1, dtype=np.int64)
        for i, user_id in enumerate(user_ids):
            row = store.get(pseudonymise(str(user_id), key))
            recs = (
                recommend_from_row(model, row, LIST_LEN)
                if row is not None
                else trending_list(model, LIST_LEN, None)
            )
            found = index.get_indexer([r.artist_id for r in recs.items])
            found = found[found >= 0]
            out[i, : len(found)] = found
            if (i + 1) % 1000 == 0:
                log.info("%s policy: %d/%d listeners ranked", policy, i + 1, len(user_ids))
        return out
    finally:
        store.close()


def policy_lists(
    ws: Workspace,
    settings: Settings,
    policy: str,
    population: Any,
    users: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """``(len(users), LIST_LEN)`` ranked world artist indices for ``users`` under ``policy``."""
    from data.pii import pseudonym_key, pseudonymise

    artist_ids = np.asarray(population.catalogue.artist_id, dtype=object)
    user_ids = np.asarray(population.people.user_id)[users]
    if policy == "random":
        released = population.released(_start_ms(population))
        return np.stack([rng.choice(released, LIST_LEN, replace=False) for _ in users])
    if policy in MODEL_POLICIES:
        return _model_lists(settings, user_ids, artist_ids, policy)
    if policy in BASELINES:
        key = pseudonym_key(settings)
        keys = np.array([pseudonymise(str(u), key) for u in user_ids], dtype=object)
        return _baseline_lists(ws, policy, keys, artist_ids)
    raise ValueError(
        f"unknown policy {policy!r}; choose from {', '.join(MODEL_POLICIES)}, random, "
        f"{', '.join(BASELINES)}"
    )


def _start_ms(population: Any) -> int:
    from world.population import end_ms

    return end_ms(population.config)


def simulate(
    ws: Workspace,
    policies: Sequence[str],
    days: int = 14,
    users: int | None = None,
    k: int = 10,
    seed: int = 0,
    *,
    settings: Settings,
) -> dict[str, Any]:
    """Run the A/B simulation; returns (and writes to ``simulations/``) the per-arm results.

    ``settings``: where the served bundle and the online store are, and the pseudonym key."""
    from world.population import ChurnRule, rebuild

    if len(policies) < 2:
        raise ValueError("an A/B test needs at least two --policy")
    if days < 1:
        raise ValueError(f"--days must be >= 1; got {days}")
    population = rebuild(world_config(ws))
    rng = np.random.default_rng(seed)
    alive = population.people.deleted_ms < 0
    pool = np.flatnonzero(
        alive & (population.people.active_to_ms >= _start_ms(population) - 7 * DAY_MS)
    )
    if users is not None:
        if users > len(pool):
            raise ValueError(f"--users {users} exceeds the {len(pool)} listeners of this world")
        pool = np.sort(rng.choice(pool, users, replace=False))
    arm_of = rng.integers(0, len(policies), len(pool))
    rule = ChurnRule()
    results = {}
    for a, policy in enumerate(policies):
        members = pool[arm_of == a]
        log.info("arm %s: ranking %d listeners", policy, len(members))
        lists = policy_lists(ws, settings, policy, population, members, rng)  # (n, L)
        tallies = _run_arm(
            population, members, lists, days, k, rule, np.random.default_rng(seed + 1 + a)
        )
        results[policy] = tallies
    return write_report(ws, results, policies, days, k, seed)


def _run_arm(
    population: Any,
    members: np.ndarray,
    lists: np.ndarray,
    days: int,
    k: int,
    rule: Any,
    rng: np.random.Generator,
) -> dict[str, Any]:
    n = len(members)
    churned_day = np.full(n, np.inf)
    clicked_before = np.zeros(lists.shape, dtype=bool)
    t = {"listeners": n, "logins": 0, "impressions": 0, "clicks": 0, "streams": 0, "follows": 0}
    start = _start_ms(population)
    for day in range(days):
        here = np.flatnonzero(np.isinf(churned_day))
        logs_in = here[rng.random(len(here)) < population.login_probability(members[here])]
        if not len(logs_in):
            continue
        # each slate: the first k of the list not clicked before
        avail = (~clicked_before[logs_in]) & (lists[logs_in] >= 0)  # (m, L)
        order = np.argsort(~avail, axis=1, kind="stable")[:, :k]  # available first, in rank
        slates = np.take_along_axis(lists[logs_in], order, axis=1)
        slates = np.where(np.take_along_axis(avail, order, axis=1), slates, -1)
        out = population.react(members[logs_in], slates, start + day * DAY_MS + DAY_MS // 2, rng)
        rows = clicked_before[logs_in]
        np.put_along_axis(
            rows, order, np.take_along_axis(rows, order, axis=1) | out["clicked"], axis=1
        )
        clicked_before[logs_in] = rows
        t["logins"] += len(logs_in)
        t["impressions"] += int((slates >= 0).sum())
        t["clicks"] += int(out["clicked"].sum())
        t["streams"] += int(out["streamed"].sum())
        t["follows"] += int(out["followed"].sum())
        satisfied = out["streamed"].sum(axis=1)
        hazard = rule.base_hazard * np.exp(-rule.satisfaction_weight * satisfied)
        leave = rng.random(len(logs_in)) < hazard
        churned_day[logs_in[leave]] = day
        log.info(
            "day %d: %d logins, %d clicks, %d churned so far",
            day + 1,
            len(logs_in),
            int(out["clicked"].sum()),
            int(np.isfinite(churned_day).sum()),
        )
    return {
        **t,
        "churned7": int((churned_day < 7).sum()) if days >= 7 else None,
        "churned14": int((churned_day < 14).sum()) if days >= 14 else None,
    }
