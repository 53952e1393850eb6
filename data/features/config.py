"""Settings of the feature job, in one frozen dataclass shared by every feature module."""

from __future__ import annotations

from dataclasses import dataclass

from core.constants import DAY_MS
from data.schemas import HISTORY_LEN


@dataclass(frozen=True)
class FeatureConfig:
    """What counts as a positive, where the time splits fall, and the feature scales.

    Cutoffs are midnight UTC: ``end`` is the midnight after the last event, ``test`` starts
    ``test_days`` before ``end`` and ``valid`` ``valid_days`` before that.
    """

    click_weight: float = 1.0
    stream_weight: float = 1.0
    follow_weight: float = 2.0
    stream_min_ms: int = 30_000  # a stream is a positive from this many ms played on
    test_days: int = 7
    valid_days: int = 7
    history_len: int = HISTORY_LEN
    # artists an example's `followed` holds, the newest follows first (a model reads at most
    # its follows_len of them). Unbounded, a listener's examples would hold its follows times
    # its examples: quadratic in its activity (24 GB for the heaviest of 1 M synthetic listeners)
    followed_len: int = HISTORY_LEN
    recent_days: int = 7  # window of "recent" CTR (ctr_relative) and artists' streams_7d
    long_days: int = 28  # artists' streams_28d / listeners_28d window
    new_user_days: int = 30  # tenure_bucket "new" below this many days since signup
    activity_thresholds: tuple[float, float] = (5.0, 20.0)  # events per active day: low|mid|high
    trending_k: int = 100  # artists per trending list
    trending_smoothing: float = 5.0  # streams added to both sides of the growth ratio
    top_tracks_k: int = 10

    def __post_init__(self) -> None:
        for name in ("click_weight", "stream_weight", "follow_weight"):
            if getattr(self, name) <= 0:
                raise ValueError(f"FeatureConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in (
            "test_days",
            "valid_days",
            "history_len",
            "followed_len",
            "recent_days",
            "long_days",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"FeatureConfig.{name} must be >= 1, got {getattr(self, name)}")
        low, high = self.activity_thresholds
        if not 0 < low < high:
            raise ValueError(
                f"FeatureConfig.activity_thresholds must be 0 < low < high, got {low}, {high}"
            )

    def positive_weights(self) -> dict[str, float]:
        return {
            "click": self.click_weight,
            "stream": self.stream_weight,
            "follow": self.follow_weight,
        }


def split_cutoffs(last_ms: int, config: FeatureConfig) -> dict[str, int]:
    """Epoch-ms cutoffs from the last event's time: ``end`` (the midnight after it), ``test``
    and ``valid`` (every engine derives them here)."""
    end = (int(last_ms) // DAY_MS + 1) * DAY_MS
    test = end - config.test_days * DAY_MS
    return {"valid": test - config.valid_days * DAY_MS, "test": test, "end": end}
