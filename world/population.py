"""The synthetic world's listeners as a live population: the A/B simulator's ground truth.

:func:`rebuild` recreates, from the same :class:`~world.config.WorldConfig` and seed, exactly
the people, catalogue, tastes and rosters that :func:`world.generate.generate_world` used to
write the demo history, so a model trained on that history meets the same listeners.

The rules of a simulated day (stated here once; none of them looks at which policy served):

* **login** — a listener who has not churned opens the app with probability
  ``1 - exp(-activity)`` (their sessions per day in the history);
* **slate** — they see the ``k`` artists their arm's policy returns, in order;
* **click** — each impression is clicked with the world's own rule
  (:func:`world.events.click_logit`: genre affinity, knowing the artist, the artist being in
  their latent roster, position);
* **stream** — a click starts a stream with probability ``STREAM_AFTER_CLICK``; how much is
  played follows the world's listening rule; ``>= 30 s`` is a *stream-through*;
* **follow** — a stream-through of an artist in the listener's roster becomes a follow with
  the world's ``follow_prob``;
* **churn** — after each login, a listener leaves for good with probability
  ``base_hazard * exp(-satisfaction_weight * n)``, ``n`` = that login's stream-throughs: a
  slate that gives them nothing they want to hear is what makes them leave.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.constants import DAY_MS
from world.config import WorldConfig
from world.events import STREAM_AFTER_CLICK, _World, click_logit
from world.people import People, make_people
from world.taste import Catalogue, Roster, make_catalogue, make_roster, user_genre_preferences

STREAM_THROUGH_MS = 30_000


@dataclass(frozen=True)
class ChurnRule:
    base_hazard: float = 0.06  # chance of leaving after a login that brought nothing
    satisfaction_weight: float = 0.7  # each stream-through multiplies it by exp(-weight)


@dataclass
class Population:
    config: WorldConfig
    people: People
    catalogue: Catalogue
    theta: np.ndarray  # (U, G) genre preferences
    roster: Roster
    world: _World

    @property
    def n_users(self) -> int:
        return len(self.people.user_id)

    def released(self, t_ms: int) -> np.ndarray:
        """Artist indices already on the service at ``t_ms``."""
        return np.flatnonzero(self.catalogue.created_ms <= t_ms)

    def react(
        self, users: np.ndarray, slates: np.ndarray, t_ms: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """One login each for ``users`` ``(U,)`` shown ``slates`` ``(U, k)`` (-1 = empty slot).

        Returns ``(U, k)`` boolean ``clicked``, ``streamed`` (stream-through), ``followed`` and
        ``(U, k)`` ``ms_played`` (0 where no stream) and ``track`` (the artist's track number
        played, -1 where no stream)."""
        n, k = slates.shape
        valid = slates >= 0
        u = np.repeat(users, k)  # (U k,)
        a = np.where(valid, slates, 0).ravel()
        pos = np.tile(np.arange(k), n)
        t = np.full(len(u), t_ms, dtype=np.int64)
        known, future = self.world.known_at(u, a, t)
        logit = click_logit(self.world.affinity(u, a), known, future, pos)
        clicked = (rng.random(len(u)) < 1 / (1 + np.exp(-logit))) & valid.ravel()
        streams = clicked & (rng.random(len(u)) < STREAM_AFTER_CLICK)
        ms = np.zeros(len(u), dtype=np.int64)
        track = np.full(len(u), -1, dtype=np.int64)
        idx = np.flatnonzero(streams)
        if len(idx):
            saved = self.world.rng
            self.world.rng = rng  # the listening rule draws from the simulation's stream
            track[idx], ms[idx] = self.world.listen(u[idx], a[idx], known[idx])
            self.world.rng = saved
        through = ms >= STREAM_THROUGH_MS
        in_roster = known | future
        followed = through & in_roster & (rng.random(len(u)) < self.config.follow_prob)
        shape = (n, k)
        return {
            "clicked": clicked.reshape(shape),
            "streamed": through.reshape(shape),
            "followed": followed.reshape(shape),
            "ms_played": ms.reshape(shape),
            "track": track.reshape(shape),
        }

    def login_probability(self, users: np.ndarray) -> np.ndarray:
        return 1.0 - np.exp(-self.people.activity[users])


def draw(config: WorldConfig) -> tuple[Population, np.random.Generator, np.random.Generator]:
    """``config``'s listeners, catalogue, tastes and rosters, and the random streams of its
    history's events and of their delivery (what :func:`world.generate.generate_world` uses)."""
    seeds = np.random.SeedSequence(config.seed).spawn(5)
    rng_people, rng_cat, rng_taste, rng_events, rng_emit = (np.random.default_rng(s) for s in seeds)
    people = make_people(config, rng_people)
    cat = make_catalogue(config, rng_cat)
    theta = user_genre_preferences(config, people, rng_taste)
    roster = make_roster(config, people, theta, cat, rng_taste)
    world = _World(config, people, cat, theta, roster, rng_events)
    return Population(config, people, cat, theta, roster, world), rng_events, rng_emit


def rebuild(config: WorldConfig) -> Population:
    """The population of ``config``'s world, exactly as ``generate_world`` drew it."""
    return draw(config)[0]


def end_ms(config: WorldConfig) -> int:
    """The first instant after the world's history (the simulation starts here)."""
    return config.start_ms + config.days * DAY_MS
