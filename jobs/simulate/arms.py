"""The A/B simulation: the world rebuilt as a live population, listeners split between the
arms, and each arm's days of logins, slates, clicks, streams, follows and churn."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np

from core.constants import DAY_MS
from core.settings import Settings
from core.workspace import Workspace
from jobs.simulate.policies import policy_lists, start_ms
from jobs.simulate.report import write_report
from world.config import WorldConfig

log = logging.getLogger("tastemaker.simulate")


def world_config(ws: Workspace) -> WorldConfig:
    path = ws.world_manifest
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `tastemaker world` (or `demo`) first")
    cfg = dict(json.loads(path.read_text())["config"])
    cfg["start"] = date.fromisoformat(cfg["start"])
    for key, value in cfg.items():
        if isinstance(value, list):
            cfg[key] = tuple(value)
    return WorldConfig(**cfg)


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
        alive & (population.people.active_to_ms >= start_ms(population) - 7 * DAY_MS)
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
    start = start_ms(population)
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
