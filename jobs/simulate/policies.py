"""How each arm of the A/B simulation ranks its listeners.

Policies (``--policy NAME``, two or more):

* ``model`` — the serving path itself: the current bundle (ONNX user tower + FAISS, and its
  ranker when it carries one) and the online feature store, through
  :func:`serving.recommender.recommend_from_row`;
* ``retrieval`` — the same bundle with its ranker switched off (two-tower order);
* ``model+ranker`` — the same bundle, which must carry a ranker (``tastemaker train ranker``,
  then ``tastemaker export``): the ranking stage against ``retrieval`` on the same listeners;
* ``two-stage`` — the same bundle, which must carry the two-stage system (``tastemaker train
  two-stage``, then ``tastemaker export``): multi-source candidates and the discovery ranker;
* ``popular``, ``ease``, ``itemknn``, ``als`` — the baselines of :mod:`evaluation.registry`
  fitted on every positive of the lake (``features/examples.parquet``), with the params
  ``tastemaker tune --dataset demo`` saved in the workspace when there are some (ItemKNN
  tuned is the best peer of the demo world);
* ``random`` — uniform over the catalogue.

A policy's list is computed once per listener (the online store is not refreshed during the
simulation); each day's slate is its first ``k`` artists the listener has not clicked yet.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from core.settings import Settings
from core.workspace import Workspace

log = logging.getLogger("tastemaker.simulate")

LIST_LEN = 60  # artists ranked per listener; slates are taken from the top of this list
BASELINES = ("popular", "ease", "itemknn", "als")


def _baseline_lists(
    ws: Workspace, name: str, user_keys: np.ndarray, artist_ids: np.ndarray
) -> np.ndarray:
    """``(U, LIST_LEN)`` world artist indices from a baseline fitted on the lake's positives."""
    import pandas as pd

    from data.features.example_parts import read_examples
    from evaluation.registry import make_recommender
    from models.base import Interactions

    ex = read_examples(ws.feature_dir.examples, ["user_key", "artist_id", "weight"])
    inter = Interactions.from_pairs(
        ex["user_key"].to_numpy(zero_copy_only=False),
        ex["artist_id"].to_numpy(zero_copy_only=False),
        ex["weight"].to_numpy(zero_copy_only=False),
    )
    from jobs.tune import tuned_params

    model = make_recommender(name, tuned_params(ws, "demo", name)).fit(inter)
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


MODEL_POLICIES = ("model", "retrieval", "model+ranker", "two-stage")


def _model_lists(
    settings: Settings, user_ids: np.ndarray, artist_ids: np.ndarray, policy: str = "model"
) -> np.ndarray:
    """Lists from the served bundle (``settings.bundles_path``, features from its online
    store): as it is (``model``), its two-tower alone, without a ranker, two-stage system or
    peer slates (``retrieval``), with the ranker it must carry (``model+ranker``) or the
    two-stage system it must carry (``two-stage``)."""
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
            "`tastemaker train ranker` and `tastemaker export` first"
        )
    if policy == "two-stage" and model.two_stage is None:
        raise ValueError(
            f"policy two-stage: bundle {model.version} carries no two-stage system; run "
            "`tastemaker train two-stage` and `tastemaker export` first"
        )
    if policy == "retrieval":
        model = dataclasses.replace(model, ranker=None, two_stage=None, peer=None)
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
        released = population.released(start_ms(population))
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


def start_ms(population: Any) -> int:
    from world.population import end_ms

    return end_ms(population.config)
