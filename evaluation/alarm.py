"""The regression alarm on engagement, per metric and per segment.

The rule, for a day ``D``, a metric ``m`` (CTR, stream-through, follow rate) and a segment:

* the **baseline** is the mean ``mu`` and standard deviation ``sd`` of the segment's daily
  values over the ``window`` days before ``D`` (at least ``min_days`` of them with enough data);
* the day's own sampling noise is the binomial standard error ``se`` of a value at ``mu``
  (trials = impressions, or clicks for stream-through), so a small segment's quiet week cannot make one
  noisy day look like a collapse;
* the alarm fires when the day has at least ``min_trials`` trials and its value is below
  ``mu - k * max(sd, se)``.

Churn is not alarmed on: a day's 7-day churn is only known a week later (it is reported).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

# metric -> (trials column, scale of the value: CTR and follow rate are per 100)
METRICS: dict[str, tuple[str, float]] = {
    "ctr": ("impressions", 100.0),
    "stream_through": ("clicks", 1.0),
    "follow_rate": ("impressions", 100.0),
}


@dataclass(frozen=True)
class AlarmConfig:
    k: float = 3.0
    window: int = 7
    min_days: int = 4
    min_trials: int = 200


@dataclass(frozen=True)
class Alarm:
    date: str
    segment: str
    metric: str
    value: float
    baseline: float
    threshold: float
    trials: int

    def line(self) -> str:
        return (
            f"ALARM {self.date} {self.segment}: {self.metric} {self.value:.3f} is below "
            f"{self.threshold:.3f} (trailing mean {self.baseline:.3f}, {self.trials} trials); "
            "check what this segment was served that day"
        )

    def as_dict(self) -> dict:
        return asdict(self)


def check(eng: pd.DataFrame, date: str, config: AlarmConfig | None = None) -> list[Alarm]:
    """Alarms for ``date`` (YYYY-MM-DD) over every segment of ``eng`` (engagement_table rows
    of all versions, ``version == "*"``)."""
    config = config or AlarmConfig()
    rows = eng[eng["version"] == "*"]
    days = sorted(rows["date"].unique())
    if date not in days:
        return []
    history = [d for d in days if d < date][-config.window :]
    alarms = []
    for segment, seg_rows in rows.groupby("segment"):
        by_date = seg_rows.set_index("date")
        if date not in by_date.index:
            continue
        today = by_date.loc[date]
        for metric, (trials_col, scale) in METRICS.items():
            trials = int(today[trials_col])
            value = float(today[metric])
            if trials < config.min_trials or np.isnan(value):
                continue
            past = by_date.reindex(history)
            past = past[past[trials_col] >= config.min_trials][metric].dropna()
            if len(past) < config.min_days:
                continue
            mu, sd = float(past.mean()), float(past.std(ddof=1))
            p = min(max(mu / scale, 0.0), 1.0)  # the day's noise if nothing had changed
            se = scale * float(np.sqrt(p * (1 - p) / trials))
            threshold = mu - config.k * max(sd, se)
            if value < threshold:
                alarms.append(Alarm(date, str(segment), metric, value, mu, threshold, trials))
    return alarms
