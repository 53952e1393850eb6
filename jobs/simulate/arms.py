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
    sessions_per_day: int = 1,
    redis_url: str | None = None,
) -> dict[str, Any]:
    """Run the A/B simulation; returns (and writes to ``simulations/``) the per-arm results.

    ``settings``: where the served bundle and the online store are, and the pseudonym key.
    An arm ``policy@streamed`` / ``policy@day-old`` keeps its listeners' rows live through the
    streaming worker on ``redis_url`` (default: the settings' event bus;
    :mod:`jobs.simulate.fresh`); ``sessions_per_day`` logins a day give a session's clicks a
    next session on the same day."""
    from jobs.simulate.fresh import parse_arm
    from world.population import ChurnRule, rebuild

    if len(policies) < 2:
        raise ValueError("an A/B test needs at least two --policy")
    if days < 1:
        raise ValueError(f"--days must be >= 1; got {days}")
    if sessions_per_day < 1:
        raise ValueError(f"--sessions-per-day must be >= 1; got {sessions_per_day}")
    if len(set(policies)) != len(policies):
        raise ValueError(f"arms must differ; got {list(policies)}")
    arms = [parse_arm(p) for p in policies]
    redis_url = redis_url or settings.stream_state_target or settings.event_bus_url or ""
    if any(fresh for _, fresh in arms) and not redis_url:
        raise ValueError(
            "a policy@streamed / policy@day-old arm streams its events through Redis: pass "
            "--redis-url or set TASTEMAKER_EVENT_BUS_URL"
        )
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
    for a, (label, (policy, fresh)) in enumerate(zip(policies, arms, strict=True)):
        members = pool[arm_of == a]
        log.info("arm %s: ranking %d listeners", label, len(members))
        arm_rng = np.random.default_rng(seed + 1 + a)
        if fresh is None:
            lists = policy_lists(ws, settings, policy, population, members, rng)  # (n, L)
            results[label] = _run_arm(
                population, members, lists, days, k, rule, arm_rng, sessions=sessions_per_day
            )
            continue
        from jobs.simulate.fresh import LiveArm
        from jobs.simulate.policies import LIST_LEN

        live = LiveArm(ws, settings, redis_url, policy, fresh, population, members, LIST_LEN)
        try:
            tallies = _run_arm(
                population,
                members,
                None,
                days,
                k,
                rule,
                arm_rng,
                sessions=sessions_per_day,
                live=live,
            )
            results[label] = {**tallies, "cost": live.cost()}
        finally:
            live.close()
    summary = write_report(ws, results, policies, days, k, seed)
    summary["sessions_per_day"] = sessions_per_day
    return summary


def _run_arm(
    population: Any,
    members: np.ndarray,
    lists: np.ndarray | None,
    days: int,
    k: int,
    rule: Any,
    rng: np.random.Generator,
    *,
    sessions: int = 1,
    live: Any = None,
) -> dict[str, Any]:
    """One arm's days. ``lists`` ``(n, L)`` is the arm's fixed ranking, or None with ``live``
    (a :class:`jobs.simulate.fresh.LiveArm`, which ranks every session and takes its events).

    A listener who has not churned logs in on a day by the world's daily rule and then has
    ``sessions`` sessions that day, each with its slate; the churn rule is drawn once after
    the day's last session, with the day's stream-throughs (one session: the world's rules
    exactly). A slate is the first ``k`` of the list not clicked before, as far as the arm can
    know: clicks count from the next session for a streamed arm, from the next day for every
    other arm."""
    n = len(members)
    churned_day = np.full(n, np.inf)
    clicked = np.zeros((n, len(population.catalogue.artist_id)), dtype=bool)
    known = clicked.copy()  # the clicks the arm's policy sees
    streamed = live is not None and live.freshness == "streamed"
    t = {"listeners": n, "logins": 0, "impressions": 0, "clicks": 0, "streams": 0, "follows": 0}
    t["new_clicks"] = 0  # clicks on an artist the listener had not clicked before
    start = start_ms(population)
    for day in range(days):
        here = np.flatnonzero(np.isinf(churned_day))
        logs_in = here[rng.random(len(here)) < population.login_probability(members[here])]
        if not len(logs_in):
            continue
        np.copyto(known, clicked)
        satisfied = np.zeros(len(logs_in), dtype=np.int64)
        for session in range(sessions):
            if streamed:
                np.copyto(known, clicked)
            t_ms = start + day * DAY_MS + (2 * session + 1) * DAY_MS // (2 * sessions)
            if live is not None:
                ranked = live.lists(logs_in, day, t_ms, start + day * DAY_MS)  # (m, L)
            elif lists is None:
                raise ValueError("an arm needs its lists, or a live arm to rank")
            else:
                ranked = lists[logs_in]
            avail = (ranked >= 0) & ~np.take_along_axis(
                known[logs_in], np.maximum(ranked, 0), axis=1
            )
            order = np.argsort(~avail, axis=1, kind="stable")[:, :k]  # available first, in rank
            slates = np.take_along_axis(ranked, order, axis=1)
            slates = np.where(np.take_along_axis(avail, order, axis=1), slates, -1)
            out = population.react(members[logs_in], slates, t_ms, rng)
            hit = out["clicked"] & (slates >= 0)
            who = np.repeat(logs_in, slates.shape[1])[hit.ravel()]
            t["new_clicks"] += int((~clicked[who, slates[hit]]).sum())  # first click on it
            clicked[who, slates[hit]] = True
            if live is not None:
                live.post(logs_in, slates, out, t_ms)
            t["impressions"] += int((slates >= 0).sum())
            t["clicks"] += int(out["clicked"].sum())
            t["streams"] += int(out["streamed"].sum())
            t["follows"] += int(out["followed"].sum())
            satisfied += out["streamed"].sum(axis=1)
        t["logins"] += len(logs_in)
        hazard = rule.base_hazard * np.exp(-rule.satisfaction_weight * satisfied)
        leave = rng.random(len(logs_in)) < hazard
        churned_day[logs_in[leave]] = day
        log.info(
            "day %d: %d logins, %d clicks so far, %d churned so far",
            day + 1,
            len(logs_in),
            t["clicks"],
            int(np.isfinite(churned_day).sum()),
        )
    return {
        **t,
        "churned7": int((churned_day < 7).sum()) if days >= 7 else None,
        "churned14": int((churned_day < 14).sum()) if days >= 14 else None,
    }
