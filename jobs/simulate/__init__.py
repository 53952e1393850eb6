"""An A/B test of recommendation policies on the synthetic listeners.

The workspace's world (``raw/world.json``) is rebuilt as a live population
(:mod:`world.population`, where the listeners' rules are stated). Listeners are split at random
between the arms; each simulated day every listener who has not churned may log in, gets a
slate of ``k`` artists from their arm's policy, and clicks, streams, follows and churns by their
true taste. Per arm: CTR (clicks per 100 impressions), stream-through (clicks that became
a stream of 30 s or more), follows per 100 impressions, and 7- and 14-day churn (listeners
who had left for good within 7 / 14 days), each with a 95 % interval; against the first arm,
the difference with its interval and the listeners per arm a test would need to detect it
(two-sided 5 %, power 80 %).

With ``--sessions-per-day S`` a listener who logs in on a day has S sessions (S slates) that
day, and churn is drawn after the last with the day's stream-throughs. An arm
``model@streamed`` ranks every session from rows the streaming worker keeps live (a click
reaches the next session); ``model@day-old`` ranks once a day from the rows as of midnight (a
click reaches the next day), :mod:`jobs.simulate.fresh`; the same model, so the difference is
what real-time features buy.

The policies are in :mod:`jobs.simulate.policies`, the numbers in :mod:`jobs.simulate.report`.
"""

from jobs.simulate.arms import simulate, world_config

__all__ = ["simulate", "world_config"]
