"""The synthetic world's behaviour: sessions -> slates, clicks, streams, follows (columnar).

Everything is vectorised over events; the result is a set of parallel numpy arrays in true
event time, before any delivery dirt (see :mod:`world.emit`).

* A user opens ``Poisson(activity × active days)`` sessions, heavy-tailed across users.
* Some sessions show a slate of ``slate_size`` artists (the incumbent recommender: genre
  picks, roster picks, global hits, one random); clicks depend on genre affinity, on knowing
  the artist and on position; most clicks lead to a stream carrying the slate's request id.
* Organic streams pick from the user's roster available at that time (weighted), plus a
  little exploration; ``ms_played`` depends on affinity and on the user's listening depth.
* The first of a user's streams of an artist that passes ``follow_prob`` becomes a follow;
  a few follows are undone later.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.constants import DAY_MS
from world.config import WorldConfig
from world.people import People
from world.taste import ArtistSampler, Catalogue, Roster, draw_genres

IMPRESSION, CLICK, STREAM, FOLLOW, UNFOLLOW = range(5)
_KEY_SHIFT = 42  # roster lookup key: user << 42 | time offset (ms, ~139 years of range)


@dataclass(frozen=True)
class Events:
    kind: np.ndarray  # (N,) index into data.schemas.EVENT_TYPES
    user: np.ndarray  # (N,) user index
    artist: np.ndarray  # (N,) artist index
    track: np.ndarray  # (N,) track number within the artist, -1 = none
    request: np.ndarray  # (N,) slate number, -1 = none
    position: np.ndarray  # (N,) 0-based slot in the slate, -1 = none
    ms_played: np.ndarray  # (N,) -1 = none
    t_ms: np.ndarray  # (N,) true event time, epoch ms UTC


def _concat(parts: list[dict]) -> Events:
    return Events(**{f: np.concatenate([p[f] for p in parts]) for f in Events.__dataclass_fields__})


def _part(kind, user, artist, t, track=None, request=None, position=None, ms=None) -> dict:
    n = len(user)
    none = np.full(n, -1, np.int64)
    return {
        "kind": np.full(n, kind, np.int8),
        "user": user.astype(np.int64),
        "artist": artist.astype(np.int64),
        "track": none if track is None else track,
        "request": none if request is None else request,
        "position": none if position is None else position,
        "ms_played": none if ms is None else ms,
        "t_ms": t.astype(np.int64),
    }


STREAM_AFTER_CLICK = 0.85  # share of slate clicks that start a stream


def click_logit(
    affinity: np.ndarray, known: np.ndarray, future: np.ndarray, position: np.ndarray
) -> np.ndarray:
    """The world's click rule for a slate impression (the historic slates and the simulator):
    genre affinity in [0, 1], whether the user already knows the artist, whether the artist is
    in their roster but not yet discovered (true, latent taste), and the 0-based position."""
    return -4.6 + 3.0 * affinity + 1.5 * known + 2.0 * future - 0.1 * position


class _World:
    def __init__(self, cfg, people, cat, theta, roster, rng):
        self.cfg, self.people, self.cat, self.theta, self.roster, self.rng = (
            cfg,
            people,
            cat,
            theta,
            roster,
            rng,
        )
        self.base = cfg.start_ms - 10 * DAY_MS
        self.keys = (roster.user << _KEY_SHIFT) + np.clip(roster.available_ms - self.base, 0, None)
        self.cumw = np.concatenate([[0.0], np.cumsum(roster.weight)])
        a_n = len(cat.artist_id)
        pair = roster.user * a_n + roster.artist
        order = np.argsort(pair)
        self.pair, self.pair_t = pair[order], roster.available_ms[order]
        self.sampler = ArtistSampler(cat, 1.0)
        old = np.flatnonzero(cat.created_ms < cfg.start_ms)
        cdf = np.cumsum(cat.popularity[old])
        self.old, self.old_cdf = old, cdf / cdf[-1]

    def affinity(self, user, artist):
        """Genre affinity relative to the user's favourite genre, in [0, 1]."""
        th = self.theta
        a = th[user, self.cat.primary[artist]] * (1 - self.cat.share2[artist])
        a += th[user, self.cat.secondary[artist]] * self.cat.share2[artist]
        return a / th[user].max(axis=1)

    def known_at(self, user, artist, t):
        """(known by t, known later) for each (user, artist, t)."""
        pair = user * len(self.cat.artist_id) + artist
        pos = np.minimum(np.searchsorted(self.pair, pair), len(self.pair) - 1)
        hit = self.pair[pos] == pair
        avail = self.pair_t[pos]
        return hit & (avail <= t), hit & (avail > t)

    def roster_pick(self, user, t):
        """A weighted pick from each user's roster as available at t; -1 if none yet."""
        start = self.roster.offsets[user]
        q = (user << _KEY_SHIFT) + np.clip(t - self.base, 0, None)
        end = np.searchsorted(self.keys, q, side="right")
        lo, hi = self.cumw[start], self.cumw[end]
        idx = (
            np.searchsorted(self.cumw, lo + self.rng.random(len(user)) * (hi - lo), side="right")
            - 1
        )
        idx = np.clip(idx, start, np.maximum(end - 1, start))
        return np.where(
            end > start, self.roster.artist[np.minimum(idx, len(self.roster.artist) - 1)], -1
        )

    def popular_old(self, n):
        return self.old[
            np.minimum(np.searchsorted(self.old_cdf, self.rng.random(n)), len(self.old) - 1)
        ]

    def listen(self, user, artist, known):
        """(track, ms_played) for streams; deeper listeners and liked artists play longer."""
        rng, cat = self.rng, self.cat
        track = np.minimum(rng.zipf(1.8, len(user)) - 1, cat.n_tracks[artist] - 1)
        dur = cat.duration_ms[artist, track]
        dur = np.where(dur > 0, dur, 215_000)
        logit = (
            0.2
            + self.people.depth[user]
            + 2.0 * (self.affinity(user, artist) - 0.5)
            + 0.8 * known
            + rng.normal(0, 1.0, len(user))
        )
        completion = 1 / (1 + np.exp(-logit))
        completion = np.where(completion > 0.85, 1.0, completion)
        return track, np.round(dur * completion).astype(np.int64)


def simulate(
    cfg: WorldConfig,
    people: People,
    cat: Catalogue,
    theta: np.ndarray,
    roster: Roster,
    rng: np.random.Generator,
    users: tuple[int, int] | None = None,
    request_base: int = 0,
    world: _World | None = None,
) -> Events:
    """The history of users ``lo <= u < hi`` (``users``; default all of them), sorted by time.

    Slate numbers (``request``) count from ``request_base``. Over all users (the default) the
    draws are the ones every world before the chunked generator used; a chunk of users draws
    its own sessions from ``rng`` (see :func:`world.generate.generate_world`); ``world``, the
    lookups of these people and rosters, may be built once and passed in."""
    if world is None:
        w = _World(cfg, people, cat, theta, roster, rng)
    else:  # built once for many chunks; it draws from this chunk's stream
        w, w.rng = world, rng
    lo, hi = users if users is not None else (0, cfg.n_users)
    span = people.active_to_ms[lo:hi] - people.active_from_ms[lo:hi]
    n_sess = rng.poisson(people.activity[lo:hi] * np.maximum(span, 0) / DAY_MS)
    s_user = np.repeat(np.arange(lo, hi), n_sess)
    s_span = span[s_user - lo]
    s_t = people.active_from_ms[s_user] + (rng.random(len(s_user)) * s_span).astype(np.int64)
    parts = []

    # slates and clicks
    slate = np.flatnonzero(rng.random(len(s_user)) < cfg.slate_prob)
    sl_user, sl_t, k = s_user[slate], s_t[slate], cfg.slate_size
    n_genre, n_roster, n_pop = int(0.4 * k), int(0.2 * k), int(0.3 * k)
    rep = np.repeat(sl_user, n_genre)
    cols = [
        w.sampler.draw(draw_genres(theta, rep, rng), rng).reshape(-1, n_genre),
        _roster_any(roster, np.repeat(sl_user, n_roster), rng).reshape(-1, n_roster),
        w.popular_old(len(sl_user) * n_pop).reshape(-1, n_pop),
        rng.integers(0, cfg.n_artists, (len(sl_user), k - n_genre - n_roster - n_pop)),
    ]
    grid = np.concatenate(cols, axis=1)  # (S, k)
    grid = np.take_along_axis(grid, np.argsort(rng.random(grid.shape), axis=1), axis=1)
    for _ in range(4):  # unreleased artists and repeats in a slate -> popular catalogue artists
        bad = (cat.created_ms[grid] > sl_t[:, None]) | _dup_mask(grid)
        if not bad.any():
            break
        grid[bad] = w.popular_old(int(bad.sum()))
    pos = np.tile(np.arange(k), len(sl_user))
    im_user, im_artist = np.repeat(sl_user, k), grid.ravel()
    im_req = np.repeat(slate + request_base, k)
    im_t = np.repeat(sl_t, k) + pos * 5  # slot rendering order, ms apart
    parts.append(_part(IMPRESSION, im_user, im_artist, im_t, request=im_req, position=pos))
    known, future = w.known_at(im_user, im_artist, im_t)
    logit = click_logit(w.affinity(im_user, im_artist), known, future, pos)
    clicked = np.flatnonzero(rng.random(len(im_user)) < 1 / (1 + np.exp(-logit)))
    c_user, c_artist = im_user[clicked], im_artist[clicked]
    c_t = im_t[clicked] + rng.integers(2_000, 30_000, len(clicked))
    parts.append(
        _part(CLICK, c_user, c_artist, c_t, request=im_req[clicked], position=pos[clicked])
    )
    go = rng.random(len(clicked)) < STREAM_AFTER_CLICK
    track, ms = w.listen(c_user[go], c_artist[go], known[clicked][go])
    cs_t = c_t[go] + rng.integers(1_000, 5_000, int(go.sum()))
    parts.append(
        _part(
            STREAM,
            c_user[go],
            c_artist[go],
            cs_t,
            track=track,
            request=im_req[clicked][go],
            position=pos[clicked][go],
            ms=ms,
        )
    )

    # organic streams: roster picks plus exploration, back to back within a session
    n_str = 1 + rng.poisson(max(cfg.streams_per_session - 1, 0.0), len(s_user))
    st_sess = np.repeat(np.arange(len(s_user)), n_str)
    st_user, st_t0 = s_user[st_sess], s_t[st_sess] + 60_000
    artist = w.roster_pick(st_user, st_t0)
    explore = (rng.random(len(st_user)) < cfg.explore_prob) | (artist < 0)
    artist[explore] = w.sampler.draw(draw_genres(theta, st_user[explore], rng), rng)
    keep = cat.created_ms[artist] <= st_t0
    st_sess, st_user, st_t0, artist, explore = (
        x[keep] for x in (st_sess, st_user, st_t0, artist, explore)
    )
    track, ms = w.listen(st_user, artist, ~explore)
    gap = ms + rng.integers(1_000, 20_000, len(ms))
    csum = np.cumsum(gap)
    first = np.searchsorted(st_sess, st_sess)  # index of each session's first stream
    offset = csum - gap - (csum[first] - gap[first])  # exclusive cumsum within the session
    st_t = st_t0 + offset
    parts.append(_part(STREAM, st_user, artist, st_t, track=track, ms=ms))

    # follows: first roster stream that passes follow_prob; some undone later
    cand = np.flatnonzero(~explore & (rng.random(len(st_user)) < cfg.follow_prob))
    f_user, f_artist, f_t = st_user[cand], artist[cand], st_t[cand] + ms[cand] + 3_000
    order = np.lexsort((f_t, f_artist, f_user))
    f_user, f_artist, f_t = f_user[order], f_artist[order], f_t[order]
    first = np.ones(len(f_user), bool)
    first[1:] = (f_user[1:] != f_user[:-1]) | (f_artist[1:] != f_artist[:-1])
    f_user, f_artist, f_t = f_user[first], f_artist[first], f_t[first]
    parts.append(_part(FOLLOW, f_user, f_artist, f_t))
    room = people.active_to_ms[f_user] - f_t
    undo = (rng.random(len(f_user)) < cfg.unfollow_frac) & (room > 3_600_000)
    u_t = f_t[undo] + (rng.uniform(0.1, 1.0, int(undo.sum())) * room[undo]).astype(np.int64)
    parts.append(_part(UNFOLLOW, f_user[undo], f_artist[undo], u_t))
    events = _concat(parts)
    order = np.argsort(events.t_ms, kind="stable")
    return Events(**{f: getattr(events, f)[order] for f in Events.__dataclass_fields__})


def _dup_mask(grid: np.ndarray) -> np.ndarray:
    """True for every slot that repeats an artist already shown earlier in its row."""
    order = np.argsort(grid, axis=1, kind="stable")
    srt = np.take_along_axis(grid, order, axis=1)
    dup_sorted = np.zeros_like(grid, dtype=bool)
    dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
    mask = np.zeros_like(dup_sorted)
    np.put_along_axis(mask, order, dup_sorted, axis=1)
    return mask


def _roster_any(roster: Roster, user: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A uniform pick from each user's whole roster (the incumbent recommender knows taste)."""
    start, end = roster.offsets[user], roster.offsets[user + 1]
    idx = start + (rng.random(len(user)) * np.maximum(end - start, 1)).astype(np.int64)
    return roster.artist[np.minimum(idx, len(roster.artist) - 1)]
