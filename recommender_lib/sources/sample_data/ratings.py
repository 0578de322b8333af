"""MovieLens users of the hidden model: who rates what, how many stars, when, and their tags."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from recommender_lib.sources.sample_data.common import (
    DIM,
    EXPOSURE_GAMMA,
    FACTOR_SD,
    MLG,
    MU,
    NOISE_SD,
    OLD_ACCEPT,
    POPULAR_FIRST,
    TASTE_SD,
    UNIFORM_SHARE,
    USER_SD,
    rng_for,
    year_start_ts,
)
from recommender_lib.sources.sample_data.movies import Catalog
from recommender_lib.sources.sample_data.profiles import SampleProfile

_T0 = int(datetime(1996, 1, 1, tzinfo=UTC).timestamp())
_T1 = int(datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())

_TAGS_GENERAL = (
    "In Netflix queue", "atmospheric", "thought-provoking", "surreal", "quirky", "suspense",
    "visually appealing", "politics", "time travel", "mental illness", "dark comedy",
    "twist ending", "based on a book", "classic", "cinematography", "great soundtrack",
    "dark, gritty", "slow, but worth it", "funny, witty", '"artsy"', "Oscar (Best Picture)",
    "Amélie-esque", "BD-R", "predictable", "overrated", "stylized", "Highly quotable",
    "beautiful", "religion", "psychology", "true story", "imdb top 250", "nudity (topless)",
)  # fmt: skip
_TAGS_BY_GENRE = {
    "Action": "action-packed", "Adventure": "adventure", "Animation": "Pixar animation",
    "Children": "Disney", "Comedy": "funny", "Crime": "crime", "Documentary": "documentary",
    "Drama": "emotional", "Fantasy": "magic", "Film-Noir": "noir", "Horror": "scary",
    "IMAX": "IMAX 3D", "Musical": "music", "Mystery": "mystery", "Romance": "romantic",
    "Sci-Fi": "sci-fi", "Thriller": "suspenseful", "War": "World War II", "Western": "western",
}  # fmt: skip
TAG_VOCAB = _TAGS_GENERAL + tuple(_TAGS_BY_GENRE[g] for g in MLG)


@dataclass
class _Users:
    """Hidden parameters of one chunk of users."""

    first_id: int
    k: np.ndarray  # ratings to draw
    bias: np.ndarray
    taste: np.ndarray  # float32 (m x len(MLG))
    seek_cdf: np.ndarray  # per-user CDF over liked genres (rows of zeros: none)
    seek: np.ndarray  # probability that a draw follows a liked genre
    factors: np.ndarray
    whole: np.ndarray  # rates in whole stars only
    start: np.ndarray
    end: np.ndarray
    end_year: np.ndarray
    tagger: np.ndarray

    def __len__(self) -> int:
        return len(self.k)


def _make_users(
    rng: np.random.Generator, p: SampleProfile, cat: Catalog, first: int, m: int
) -> _Users:
    """Draw biases, tastes, factors, activity periods and rating counts for `m` users."""
    g = len(MLG)
    freq = np.array([(cat.ml_mask >> j & 1).mean() for j in range(g)]) + 1e-3
    keys = 0.5 * np.log(freq) - np.log(-np.log(rng.random((m, g))))  # Gumbel top-k
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    sparse = rank < rng.integers(2, 6, size=m)[:, None]
    taste = np.where(sparse, rng.normal(0, TASTE_SD, (m, g)), rng.normal(0, 0.05, (m, g)))
    liked = np.where(cat.genre_has_items, np.maximum(taste - 0.1, 0), 0)
    tot = liked.sum(1, keepdims=True)
    seek_cdf = np.cumsum(liked / np.where(tot > 0, tot, 1), axis=1)
    seek_cdf[:, -1] = np.where(tot[:, 0] > 0, 1.0, 0.0)

    kind = rng.choice(3, size=m, p=(0.55, 0.25, 0.2))  # one session, a few weeks, years
    span = np.choose(
        kind,
        (
            rng.uniform(600, 6 * 3600, m),
            rng.exponential(10 * 86400, m),
            rng.exponential(700 * 86400, m),
        ),
    )
    sigma = 1.4
    mu = np.log(max(p.mean_ratings_per_user - 20, 1)) - sigma**2 / 2
    k = 20 + np.floor(np.exp(rng.normal(mu, sigma, m))).astype(np.int64)
    span = np.minimum(span, _T1 - _T0 - 86400).astype(np.int64)
    start = rng.integers(_T0, np.asarray(_T1 - span, dtype=np.int64))
    end = np.minimum(start + span, _T1)
    end_year = end.astype("datetime64[s]").astype("datetime64[Y]").astype(np.int64) + 1970
    eligible = np.searchsorted(np.sort(cat.year), end_year, side="right")
    k = np.minimum(k, np.maximum(20, np.minimum(0.5 * eligible, 0.5 * len(cat)).astype(np.int64)))
    early = start < year_start_ts(np.array([2003]))[0]
    return _Users(
        first_id=first, k=k, bias=rng.normal(0, USER_SD, m), taste=taste.astype(np.float32),
        seek_cdf=seek_cdf, seek=rng.beta(2, 2, m) * 0.8,
        factors=rng.normal(0, FACTOR_SD, (m, DIM)).astype(np.float32),
        whole=rng.random(m) < np.where(early, 0.6, 0.08), start=start, end=end,
        end_year=end_year, tagger=rng.random(m) < 0.1,
    )  # fmt: skip


def _affinity(users: _Users, cat: Catalog, u: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Hidden taste . genres + user factors . item factors for (user, item) pairs."""
    taste = np.einsum("ij,ij->i", users.taste[u], cat.gnorm[i])
    return taste + np.einsum("ij,ij->i", users.factors[u], cat.factors[i])


def _draw_items(rng: np.random.Generator, users: _Users, cat: Catalog, u: np.ndarray) -> np.ndarray:
    """One exposure draw per entry of `u`: uniform, a liked genre, or global popularity."""
    n = len(u)
    r = rng.random(n)
    items = np.minimum(np.searchsorted(cat.cdf, r, side="right"), len(cat) - 1)
    comp = rng.random(n)
    uniform = comp < UNIFORM_SHARE
    items[uniform] = rng.integers(len(cat), size=int(uniform.sum()))
    seek = ~uniform & (comp < UNIFORM_SHARE + users.seek[u]) & (users.seek_cdf[u, -1] > 0)
    if seek.any():
        su = u[seek]
        genre = (users.seek_cdf[su] < 1.0 - rng.random(len(su))[:, None]).sum(1)
        pos = np.searchsorted(cat.genre_cdf, genre + rng.random(len(su)), side="right")
        items[seek] = cat.genre_items[np.minimum(pos, len(cat.genre_items) - 1)]
    return items


def _accept_prob(
    users: _Users, cat: Catalog, u: np.ndarray, i: np.ndarray, recency: bool
) -> np.ndarray:
    """Users skip titles they would dislike and favour titles new during their active years."""
    prob = np.exp(EXPOSURE_GAMMA * np.minimum(_affinity(users, cat, u, i), 0))
    if recency:
        age = np.maximum(users.end_year[u] - cat.year[i], 0)
        prob *= OLD_ACCEPT + (1 - OLD_ACCEPT) * np.exp(-age / 3.0)
    return prob


def _first_k(keys: np.ndarray, k: np.ndarray, n_items: int) -> np.ndarray:
    """Distinct keys (user * n_items + item) in first-draw order, at most `k[user]` per user."""
    _, first = np.unique(keys, return_index=True)
    ordered = keys[np.sort(first)]
    user = ordered // n_items
    order = np.argsort(user, kind="stable")
    starts = np.searchsorted(user[order], user[order])
    rank = np.empty(len(ordered), dtype=np.int64)
    rank[order] = np.arange(len(ordered)) - starts
    return ordered[rank < k[user]]


def _sample_pairs(
    rng: np.random.Generator, users: _Users, cat: Catalog
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (local user, item) pairs: exposure draws thinned by taste and release year."""
    n_items, m = len(cat), len(users)
    chosen = np.empty(0, dtype=np.int64)
    need = users.k.copy()
    for rnd in range(12):
        short = np.flatnonzero(need > 0)
        if not short.size:
            break
        u = np.repeat(short, need[short] * (2 + rnd) + 8)
        items = _draw_items(rng, users, cat, u)
        keep = rng.random(len(u)) < _accept_prob(users, cat, u, items, recency=rnd < 4)
        if rnd < 8:  # then, rarely, a title released after the user's active years
            keep &= cat.year[items] <= users.end_year[u]
        chosen = _first_k(
            np.concatenate([chosen, u[keep] * n_items + items[keep]]), users.k, n_items
        )
        need = users.k - np.bincount(chosen // n_items, minlength=m)
    for j in np.flatnonzero(need > 0).tolist():  # rare: fill from the titles not yet drawn
        have = chosen[chosen // n_items == j] % n_items
        extra = rng.permutation(np.setdiff1d(np.arange(n_items), have))[: need[j]]
        chosen = np.concatenate([chosen, j * n_items + extra])
    return chosen // n_items, chosen % n_items


def _ratings_for(
    rng: np.random.Generator, users: _Users, cat: Catalog, u: np.ndarray, i: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Half-star ratings (as integer halves) and timestamps for the given pairs."""
    n = len(u)
    x = (
        MU
        + users.bias[u]
        + cat.quality[i]
        + _affinity(users, cat, u, i)
        + rng.normal(0, NOISE_SD, n)
    )
    halves = np.where(
        users.whole[u], 2 * np.clip(np.round(x), 1, 5), np.clip(np.round(2 * x), 1, 10)
    )
    lo = np.maximum(users.start[u], cat.year_ts[i])
    hi = users.end[u]
    late = lo >= hi  # released after the user's period: rate soon after release
    hi = np.where(late, np.minimum(lo + 30 * 86400, _T1), hi)
    lo = np.minimum(lo, hi)
    frac = np.clip(POPULAR_FIRST * cat.pop_pct[i] + (1 - POPULAR_FIRST) * rng.random(n), 0, 1)
    ts = lo + np.floor(frac * (hi - lo)).astype(np.int64)
    return halves.astype(np.int64), ts


def _tags_for(
    rng: np.random.Generator,
    users: _Users,
    cat: Catalog,
    u: np.ndarray,
    i: np.ndarray,
    ts: np.ndarray,
    n_tags: int,
) -> tuple[np.ndarray, ...]:
    """Tag rows (user id, movie id, tag index, timestamp) for taggers' rated titles."""
    rows = np.flatnonzero(users.tagger[u])
    if not rows.size or n_tags <= 0:
        return tuple(np.empty(0, dtype=np.int64) for _ in range(4))
    pick = rows[rng.integers(rows.size, size=n_tags)]
    iu, ii = u[pick], i[pick]
    w = 1 / (np.arange(len(_TAGS_GENERAL)) + 2)
    tag = rng.choice(len(_TAGS_GENERAL), size=n_tags, p=w / w.sum())
    mask = cat.ml_mask[ii]
    by_genre = (mask > 0) & (rng.random(n_tags) < 0.45)
    lowest = np.log2(mask[by_genre] & -mask[by_genre]).astype(np.int64)
    tag[by_genre] = len(_TAGS_GENERAL) + lowest
    key = (iu * len(cat) + ii) * len(TAG_VOCAB) + tag
    _, first = np.unique(key, return_index=True)
    first = np.sort(first)
    tts = np.minimum(ts[pick[first]] + rng.integers(1, 7200, size=len(first)), _T1)
    return iu[first] + users.first_id, cat.movie_id[ii[first]], tag[first], tts


def user_chunks(
    seed: int, p: SampleProfile, cat: Catalog
) -> Iterator[tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]]:
    """Per user chunk: (userId, movieId, halves, timestamp) sorted like ratings.csv, and tags."""
    for c, first in enumerate(range(0, p.n_users, p.chunk_users)):
        m = min(p.chunk_users, p.n_users - first)
        rng = rng_for(seed, 4, c)
        users = _make_users(rng, p, cat, first + 1, m)
        u, i = _sample_pairs(rng, users, cat)
        halves, ts = _ratings_for(rng, users, cat, u, i)
        order = np.lexsort((cat.movie_id[i], u))
        n_tags = round(p.n_tags * (first + m) / p.n_users) - round(p.n_tags * first / p.n_users)
        tags = _tags_for(rng, users, cat, u, i, ts, n_tags)
        yield (u[order] + first + 1, cat.movie_id[i[order]], halves[order], ts[order]), tags
