"""The knobs of the synthetic world, in one frozen dataclass (see :mod:`world.generate`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 0
    n_users: int = 4_000
    n_artists: int = 2_000
    n_genres: int = 20
    days: int = 42
    start: date = date(2024, 3, 4)
    # people
    new_user_frac: float = 0.10  # sign up during the window (cold-start users)
    churn_frac: float = 0.15  # stop being active at a random time in the window
    deleted_frac: float = 0.01  # accounts deleted in the last week (GDPR erasure)
    use_real_demographics: bool = True  # sample from LFM-1b when ../shared/data has it
    # catalogue
    new_artist_frac: float = 0.05  # join the service during the window
    popularity_exponent: float = 1.0  # Zipf exponent of artist popularity by rank
    max_tracks: int = 24
    unknown_duration_frac: float = 0.01  # tracks whose duration the client does not know
    # activity and taste
    sessions_per_day: float = 0.35  # mean over users; lognormal across users (heavy tail)
    activity_sigma: float = 1.1
    streams_per_session: float = 3.0
    slate_prob: float = 0.4  # a session opens the recommendations shelf
    slate_size: int = 10
    favourites: float = 7.0  # mean favourite artists known before the window
    discoveries_per_week: float = 1.5  # new roster artists found during the window
    explore_prob: float = 0.12  # one-off streams of an artist outside the roster
    follow_prob: float = 0.05  # per roster stream; first success is the follow
    unfollow_frac: float = 0.08
    # dirt, as fractions of events (skew: of users)
    duplicate_rate: float = 0.005
    late_rate: float = 0.01
    skewed_client_frac: float = 0.01
    malformed_rate: float = 0.0005
    events_per_file: int = 100_000
    devices: tuple[str, ...] = ("android", "ios", "web", "desktop")
    device_shares: tuple[float, ...] = (0.45, 0.30, 0.15, 0.10)

    @classmethod
    def demo(cls, seed: int = 0) -> WorldConfig:
        """The `make demo` world: ~400k events, generated in seconds on two cores."""
        return cls(seed=seed)

    @classmethod
    def tiny(cls, seed: int = 0) -> WorldConfig:
        """Test world: ~150 users, ~120 artists, 3 weeks; generated in well under 2 s."""
        return cls(
            seed=seed,
            n_users=150,
            n_artists=120,
            n_genres=6,
            days=21,
            sessions_per_day=0.6,
            events_per_file=4_000,
            # rates high enough that every kind of dirt occurs in a world this small
            duplicate_rate=0.01,
            late_rate=0.02,
            skewed_client_frac=0.03,
            malformed_rate=0.002,
            deleted_frac=0.03,
        )

    @classmethod
    def preset(cls, name: str, seed: int = 0) -> WorldConfig:
        presets = {"demo": cls.demo, "tiny": cls.tiny}
        if name not in presets:
            raise ValueError(f"unknown world preset {name!r}; choose one of {sorted(presets)}")
        return presets[name](seed)

    @property
    def start_ms(self) -> int:
        start = datetime(self.start.year, self.start.month, self.start.day, tzinfo=timezone.utc)
        return int(start.timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        return self.start_ms + int(timedelta(days=self.days).total_seconds() * 1000)
