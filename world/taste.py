"""The synthetic world's taste: genres, the artist catalogue, and each user's roster.

Latent genres carry the structure a recommender can learn: every artist is a mixture of a
primary and a secondary genre (tags are drawn from those genres), popularity follows a Zipf
law by rank, and every user's genre preference depends on their age group and country. A
user's *roster* is the set of artists they keep coming back to: favourites known before the
window plus artists discovered during it, each with the time it becomes available. Later
windows therefore hold new artists that the user's genres (and similar users) predict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.constants import DAY_MS
from world.config import WorldConfig
from world.people import People

GENRES = (
    "rock",
    "pop",
    "hip-hop",
    "electronic",
    "indie",
    "metal",
    "jazz",
    "folk",
    "classical",
    "r&b",
    "punk",
    "reggae",
    "country",
    "latin",
    "ambient",
    "soul",
    "blues",
    "techno",
    "k-pop",
    "grunge",
    "house",
    "trap",
    "disco",
    "shoegaze",
)
_STYLE = ("alternative", "classic", "experimental", "modern", "underground")
_MOODS = (
    "chill",
    "energetic",
    "melancholic",
    "female vocalists",
    "male vocalists",
    "instrumental",
    "80s",
    "90s",
    "00s",
    "10s",
    "live",
    "acoustic",
)
_WORDS_A = (
    "Velvet",
    "Neon",
    "Silver",
    "Broken",
    "Golden",
    "Hollow",
    "Electric",
    "Crimson",
    "Quiet",
    "Wild",
    "Paper",
    "Midnight",
    "Glass",
    "Lunar",
    "Static",
    "Young",
)
_WORDS_B = (
    "Owls",
    "Rivers",
    "Machines",
    "Hearts",
    "Wolves",
    "Ghosts",
    "Tigers",
    "Lights",
    "Saints",
    "Echoes",
    "Waves",
    "Kings",
    "Birds",
    "Engines",
    "Dreams",
    "Streets",
)
_FIRST = ("Mira", "Jonas", "Ada", "Kofi", "Lena", "Ravi", "Ines", "Theo", "Yara", "Nils")
_LAST = ("Kade", "Oduya", "Lindqvist", "Moreno", "Sato", "Varga", "Quinn", "Abara")


@dataclass(frozen=True)
class Catalogue:
    artist_id: np.ndarray  # (A,) str
    name: np.ndarray  # (A,) str
    tags: list[list[str]]  # (A,) lists
    created_ms: np.ndarray  # (A,) int64
    primary: np.ndarray  # (A,) genre index
    secondary: np.ndarray  # (A,) genre index
    share2: np.ndarray  # (A,) weight of the secondary genre in the mixture
    popularity: np.ndarray  # (A,) sums to 1, Zipf by rank
    n_tracks: np.ndarray  # (A,) int
    duration_ms: np.ndarray  # (A, max_tracks) int64, -1 = unknown to the client

    def genre_weight(self, artist: np.ndarray, genre: np.ndarray) -> np.ndarray:
        """Mixture weight of ``genre`` in each ``artist`` (elementwise)."""
        w1 = np.where(self.primary[artist] == genre, 1.0 - self.share2[artist], 0.0)
        return w1 + np.where(self.secondary[artist] == genre, self.share2[artist], 0.0)

    def rows(self) -> list[dict]:
        from world.people import _iso

        return [
            {"artist_id": a, "name": n, "tags": t, "created_ts": _iso(int(c))}
            for a, n, t, c in zip(
                self.artist_id, self.name, self.tags, self.created_ms, strict=False
            )
        ]


def genre_names(n: int) -> list[str]:
    return [GENRES[g] if g < len(GENRES) else f"genre-{g}" for g in range(n)]


def make_catalogue(cfg: WorldConfig, rng: np.random.Generator) -> Catalogue:
    a_n, g_n = cfg.n_artists, cfg.n_genres
    share = 1.0 / np.arange(1, g_n + 1) ** 0.7
    primary = rng.choice(g_n, a_n, p=share / share.sum())
    secondary = (primary + 1 + rng.integers(0, g_n - 1, a_n)) % g_n
    share2 = rng.uniform(0.0, 0.4, a_n)
    rank = rng.permutation(a_n) + 1
    popularity = 1.0 / rank**cfg.popularity_exponent
    popularity /= popularity.sum()
    created = cfg.start_ms - rng.integers(DAY_MS, 5 * 365 * DAY_MS, a_n)
    new = rng.random(a_n) < cfg.new_artist_frac
    created[new] = rng.integers(cfg.start_ms, cfg.end_ms - 3 * DAY_MS, int(new.sum()))
    names = genre_names(g_n)
    tags = []
    for a in range(a_n):
        g1, g2 = names[primary[a]], names[secondary[a]]
        t = [g1, *(f"{s} {g1}" for s in rng.choice(_STYLE, rng.integers(1, 3), replace=False))]
        if share2[a] > 0.2:
            t.append(g2)
        t.extend(rng.choice(_MOODS, rng.integers(0, 3), replace=False))
        tags.append(list(dict.fromkeys(str(x) for x in t)))
    kind = rng.random(a_n)
    wa, wb = rng.integers(0, len(_WORDS_A), a_n), rng.integers(0, len(_WORDS_B), a_n)
    fa, la = rng.integers(0, len(_FIRST), a_n), rng.integers(0, len(_LAST), a_n)
    name = np.array(
        [
            f"The {_WORDS_A[wa[a]]} {_WORDS_B[wb[a]]}"
            if kind[a] < 0.4
            else f"{_FIRST[fa[a]]} {_LAST[la[a]]}"
            if kind[a] < 0.75
            else f"{_WORDS_A[wa[a]]} {_WORDS_B[wb[a]]} {a % 97}"
            for a in range(a_n)
        ],
        dtype=object,
    )
    duration = np.round(rng.lognormal(np.log(215_000), 0.3, (a_n, cfg.max_tracks))).astype(np.int64)
    duration[rng.random(duration.shape) < cfg.unknown_duration_frac] = -1
    return Catalogue(
        artist_id=np.array([f"ar{a:05d}" for a in range(a_n)], dtype=object),
        name=name,
        tags=tags,
        created_ms=created.astype(np.int64),
        primary=primary,
        secondary=secondary,
        share2=share2,
        popularity=popularity,
        n_tracks=np.clip(3 + rng.poisson(8, a_n), 3, cfg.max_tracks),
        duration_ms=duration,
    )


def user_genre_preferences(
    cfg: WorldConfig, people: People, rng: np.random.Generator
) -> np.ndarray:
    """``theta`` (U, G): each user's genre preference, driven by age group and country."""
    g_n, u_n = cfg.n_genres, cfg.n_users
    base = -0.7 * np.log(np.arange(1, g_n + 1))  # (G,) big genres are big for everyone
    by_age = rng.normal(0.0, 1.2, (7, g_n))  # (7, G) one row per AGE_GROUPS entry
    countries, c_idx = np.unique(people.country_iso.astype(str), return_inverse=True)
    by_country = rng.normal(0.0, 0.9, (len(countries), g_n))  # (C, G)
    logits = base + by_age[people.age_group] + by_country[c_idx] + rng.normal(0, 0.5, (u_n, g_n))
    prior = np.exp(logits - logits.max(axis=1, keepdims=True))
    prior /= prior.sum(axis=1, keepdims=True)  # (U, G)
    # concentrate: 1-3 favourite genres (Gumbel top-k on the prior) take 80% of the mass
    top = np.argsort(-(np.log(prior) + rng.gumbel(size=prior.shape)), axis=1)[:, :3]  # (U, 3)
    k = rng.choice([1, 2, 3], u_n, p=[0.35, 0.45, 0.2])
    w = rng.dirichlet(np.ones(3), u_n) * (np.arange(3) < k[:, None])  # (U, 3)
    w /= w.sum(axis=1, keepdims=True)
    theta = 0.2 * prior
    np.add.at(theta, (np.repeat(np.arange(u_n), 3), top.ravel()), 0.8 * w.ravel())
    return theta


class ArtistSampler:
    """Draw artists of a genre with probability ∝ genre weight × popularity^beta."""

    def __init__(self, cat: Catalogue, beta: float):
        self.by_genre = []
        a = np.arange(len(cat.artist_id))
        for g in range(int(max(cat.primary.max(), cat.secondary.max())) + 1):
            w = cat.genre_weight(a, np.full_like(a, g)) * cat.popularity**beta
            members = np.flatnonzero(w > 0)
            cdf = np.cumsum(w[members])
            self.by_genre.append((members, cdf / cdf[-1]))

    def draw(self, genre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = np.empty(len(genre), dtype=np.int64)
        for g, (members, cdf) in enumerate(self.by_genre):
            idx = np.flatnonzero(genre == g)
            if len(idx):
                pos = np.searchsorted(cdf, rng.random(len(idx)), side="right")
                out[idx] = members[np.minimum(pos, len(members) - 1)]
        return out


def draw_genres(theta: np.ndarray, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cum = np.cumsum(theta[users], axis=1)  # (N, G)
    return np.minimum(
        (cum < rng.random((len(users), 1)) * cum[:, -1:]).sum(axis=1), theta.shape[1] - 1
    )


@dataclass(frozen=True)
class Roster:
    """Artists each user returns to, sorted by (user, available_from); ``offsets`` (U+1,)."""

    user: np.ndarray  # (R,)
    artist: np.ndarray  # (R,)
    available_ms: np.ndarray  # (R,) int64, when the user first knows the artist
    weight: np.ndarray  # (R,) how much the user likes it
    offsets: np.ndarray  # (U+1,)


def make_roster(
    cfg: WorldConfig, people: People, theta: np.ndarray, cat: Catalogue, rng: np.random.Generator
) -> Roster:
    u_n = cfg.n_users
    n_fav = 3 + rng.poisson(max(cfg.favourites - 3, 0.0), u_n)
    weeks = (people.active_to_ms - people.active_from_ms) / (7 * DAY_MS)
    n_disc = rng.poisson(cfg.discoveries_per_week * weeks)
    fav_u, disc_u = np.repeat(np.arange(u_n), n_fav), np.repeat(np.arange(u_n), n_disc)
    fav_a = ArtistSampler(cat, 0.8).draw(draw_genres(theta, fav_u, rng), rng)
    disc_a = ArtistSampler(cat, 0.6).draw(draw_genres(theta, disc_u, rng), rng)  # longer tail
    span = people.active_to_ms[disc_u] - people.active_from_ms[disc_u]
    disc_t = people.active_from_ms[disc_u] + (rng.random(len(disc_u)) * span).astype(np.int64)
    user = np.concatenate([fav_u, disc_u])
    artist = np.concatenate([fav_a, disc_a])
    t = np.concatenate([np.full(len(fav_u), -1, np.int64), disc_t])
    # an artist can only be known once it is on the service: release bursts for new artists
    released = cat.created_ms[artist] + rng.integers(0, 2 * DAY_MS, len(artist))
    t = np.where(released > t, np.maximum(released, cfg.start_ms), t)
    weight = np.concatenate(
        [rng.lognormal(0.0, 1.0, len(fav_u)), rng.lognormal(0.3, 0.8, len(disc_u))]
    )
    order = np.lexsort((t, artist, user))
    user, artist, t, weight = user[order], artist[order], t[order], weight[order]
    first = np.ones(len(user), bool)
    first[1:] = (user[1:] != user[:-1]) | (artist[1:] != artist[:-1])  # keep earliest per pair
    user, artist, t, weight = user[first], artist[first], t[first], weight[first]
    order = np.lexsort((t, user))
    user, artist, t, weight = user[order], artist[order], t[order], weight[order]
    offsets = np.searchsorted(user, np.arange(u_n + 1))
    return Roster(user, artist, t, weight, offsets)
