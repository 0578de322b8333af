"""The MovieLens catalogue: movies with their IMDb side (tconst, type, year, genres, titles) and
the hidden item parameters of the rating model (quality, popularity, latent factors)."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from recommender_lib.sources import formats
from recommender_lib.sources.sample_data.common import (
    DIM,
    FACTOR_SD,
    ID_KNOTS,
    ID_YEARS,
    IG,
    ITEM_SD,
    MLG,
    TYPE_CODE,
    ZIPF_A,
    ZIPF_C,
    genre_logw,
    genre_masks,
    interp_years,
    pick_types,
    rng_for,
    year_start_ts,
)
from recommender_lib.sources.sample_data.profiles import SampleProfile
from recommender_lib.sources.sample_data.titles import (
    english_titles,
    foreign_titles,
    movielens_title,
)

_MAX_YEAR = 2023  # newest MovieLens release year
_LINKED_TYPE_SHARE = {
    "movie": 0.86, "tvMovie": 0.04, "video": 0.03, "tvSeries": 0.04, "tvMiniSeries": 0.03,
}  # fmt: skip
_IMAX = MLG.index("IMAX")


@dataclass
class Catalog:
    """MovieLens movies with their IMDb side and hidden parameters (index = movie index)."""

    movie_id: np.ndarray
    tconst: np.ndarray
    basics_pos: np.ndarray  # row in basics, -1 when the link points outside basics
    imdb_rated: np.ndarray
    type_code: np.ndarray
    year: np.ndarray
    runtime: np.ndarray  # -1 = \N
    imdb_mask: np.ndarray
    ml_mask: np.ndarray  # bits over MLG; 0 = (no genres listed)
    primary: list[str]
    original: list[str]
    ml_title: list[str]
    tmdb: np.ndarray  # -1 = empty
    quality: np.ndarray
    cdf: np.ndarray  # popularity CDF for exposure draws
    genre_cdf: np.ndarray  # concatenated per-genre CDFs, genre g in (g, g+1]
    genre_items: np.ndarray
    genre_has_items: np.ndarray
    gnorm: np.ndarray  # genre vector / genre count (float32, n x len(MLG))
    factors: np.ndarray  # latent item factors (float32, n x DIM)
    imdb_tenths: np.ndarray  # averageRating * 10
    imdb_votes: np.ndarray
    year_ts: np.ndarray
    pop_pct: np.ndarray  # popularity percentile, 0 = most exposed

    def __len__(self) -> int:
        return len(self.movie_id)


def _linked_ids(rng: np.random.Generator, year: np.ndarray) -> np.ndarray:
    """Distinct tconst numbers matching the years (a tenth were added to IMDb years later)."""
    n = len(year)
    late = np.where(rng.random(n) < 0.1, rng.exponential(10, n), 0)
    added = year + rng.uniform(-0.5, 1.5, n) + late
    target = np.interp(added, ID_YEARS, ID_KNOTS) * np.exp(rng.normal(0, 0.05, n))
    target = np.clip(target.astype(np.int64), 1, ID_KNOTS[-1] - n)
    order = np.argsort(target, kind="stable")
    steps = np.arange(n)
    out = np.empty(n, dtype=np.int64)
    out[order] = np.maximum.accumulate(target[order] - steps) + steps
    return out


def _tconst_ids(rng: np.random.Generator, p: SampleProfile, taken: np.ndarray) -> np.ndarray:
    """Sorted basics tconst numbers: `taken` plus random ones, `eight_digit_share` 8 digits."""
    n8_taken = int((taken >= 10_000_000).sum())
    n8 = max(1, round(p.n_imdb_titles * p.eight_digit_share) - n8_taken)
    n7 = p.n_imdb_titles - len(taken) - n8
    if n7 + len(taken) - n8_taken > 9_000_000:
        raise ValueError("too many 7-digit tconsts; raise eight_digit_share")
    parts = [taken]
    for lo, hi, k in ((1, 10_000_000, n7), (10_000_000, ID_KNOTS[-1], n8)):
        cand = rng.choice(hi - lo, size=min(k + len(taken), hi - lo), replace=False) + lo
        parts.append(cand[~np.isin(cand, taken)][:k])
    return np.sort(np.concatenate(parts).astype(np.int64))


def _absent_ids(rng: np.random.Generator, ids: np.ndarray, n: int) -> np.ndarray:
    """`n` distinct 7-digit tconst numbers that are not in the sorted `ids`."""
    out = np.empty(0, dtype=np.int64)
    while len(out) < n:
        cand = rng.integers(1, 10_000_000, size=4 * n + 16)
        pos = np.minimum(np.searchsorted(ids, cand), len(ids) - 1)
        cand = cand[ids[pos] != cand]
        out = np.concatenate([out, cand])
        _, first = np.unique(out, return_index=True)
        out = out[np.sort(first)]
    return out[:n]


def _ml_masks(rng: np.random.Generator, imdb_mask: np.ndarray, year: np.ndarray) -> np.ndarray:
    """MovieLens genres from IMDb genres (Family->Children, Music->Musical), extras and IMAX."""
    n = len(imdb_mask)
    ml = np.zeros(n, dtype=np.int64)
    for ig, mg in formats.IMDB_MOVIELENS_SHARED_GENRES.items():
        has = (imdb_mask >> IG.index(ig)) & 1
        ml |= has << MLG.index(mg)
    extra = rng.random(n) < 0.1
    g = rng.integers(len(MLG) - 1, size=int(extra.sum()))
    ml[extra] |= np.left_shift(1, g + (g >= _IMAX))
    ml[imdb_mask == 0] = 0  # IMDb has no genres -> "(no genres listed)"
    spectacle = sum(1 << MLG.index(g) for g in ("Action", "Adventure", "Sci-Fi", "Animation"))
    imax_ok = (year >= 1994) & ((ml & spectacle) != 0)
    imax = imax_ok & (rng.random(n) < 0.08)
    if not imax.any():
        imax[np.argmax(imax_ok) if imax_ok.any() else 0] = True
    ml[imax] |= 1 << _IMAX
    return ml


def _popularity_cdf(rng: np.random.Generator, quality: np.ndarray, year: np.ndarray) -> np.ndarray:
    """Zipf-like exposure probabilities, higher for good and for post-1985 titles."""
    n = len(quality)
    z = 0.4 * quality / ITEM_SD + 0.92 * rng.standard_normal(n)
    z -= 0.02 * np.maximum(0, 1985 - year)
    rank = np.empty(n)
    rank[np.argsort(-z)] = np.arange(n)
    pop = (rank + ZIPF_C) ** -ZIPF_A
    cdf = np.cumsum(pop)
    return cdf / cdf[-1]


def _normal_scores(pct: np.ndarray) -> np.ndarray:
    """Popularity percentile (0 = top) -> standard normal score (top ~ +4 for 60k titles)."""
    n = len(pct)
    inv = NormalDist().inv_cdf
    return np.array([-inv((x * n + 0.5) / n) for x in pct.tolist()])


def _genre_index(cdf: np.ndarray, ml_mask: np.ndarray) -> tuple[np.ndarray, ...]:
    """Concatenated per-genre exposure CDFs (genre g occupies values in (g, g+1])."""
    pop = np.diff(cdf, prepend=0.0)
    vals, items, has = [], [], np.zeros(len(MLG), dtype=bool)
    for g in range(len(MLG)):
        idx = np.flatnonzero((ml_mask >> g) & 1)
        if idx.size:
            has[g] = True
            c = np.cumsum(pop[idx])
            vals.append(g + c / c[-1])
            items.append(idx)
    return np.concatenate(vals), np.concatenate(items), has


def _movie_ids(rng: np.random.Generator, year: np.ndarray) -> np.ndarray:
    """movieIds increasing with the (noisy) year a title joined MovieLens, gaps for later ones."""
    n = len(year)
    order = np.argsort(np.maximum(year, 1995) + rng.normal(0, 2.0, n), kind="stable")
    gaps = 1 + np.floor(rng.exponential(2.0, n)).astype(np.int64)
    gaps[: int(0.4 * n)] = 1 + (rng.random(int(0.4 * n)) < 0.1)
    ids = np.empty(n, dtype=np.int64)
    ids[order] = np.cumsum(gaps)
    return ids


def make_catalog(seed: int, p: SampleProfile) -> tuple[Catalog, np.ndarray]:
    """The MovieLens catalogue with every hidden item parameter, and the basics tconsts."""
    rng = rng_for(seed, 2)
    n = p.n_movies
    n_missing = max(1, round(n * p.missing_link_share))
    if n - n_missing > p.n_imdb_titles // 2:
        raise ValueError("n_movies too large for n_imdb_titles")
    knots = ((0, 1902), (0.05, 1954), (0.1, 1967), (0.25, 1988), (0.5, 1999), (0.75, 2008),
             (0.9, 2014), (1.0, _MAX_YEAR + 1))  # fmt: skip
    year = np.minimum(interp_years(rng, n, knots), _MAX_YEAR).astype(np.int16)
    type_code = pick_types(rng, _LINKED_TYPE_SHARE, n)
    imdb_mask = genre_masks(rng, genre_logw(type_code), (0.2, 0.35, 0.45), 0.01)
    imdb_mask[rng.integers(n)] = 0
    runtime = np.clip(rng.normal(105, 20, n), 50, 240).astype(np.int16)
    runtime[np.isin(type_code, [TYPE_CODE["tvSeries"], TYPE_CODE["tvMiniSeries"]])] = 45
    runtime[rng.random(n) < 0.02] = -1

    primary = english_titles(rng, n)
    foreign = rng.random(n) < 0.12
    original = list(primary)
    for i, t in zip(
        np.flatnonzero(foreign).tolist(), foreign_titles(rng, int(foreign.sum())), strict=True
    ):
        original[i] = t
    series = np.isin(type_code, [TYPE_CODE["tvSeries"], TYPE_CODE["tvMiniSeries"]])
    no_year = rng.random(n) < np.where(series, 0.3, 0.005)
    no_year[rng.integers(n)] = True
    flip = rng.random(n) < 0.5
    ml_title = [
        movielens_title(primary[i], original[i], int(year[i]), not no_year[i], bool(flip[i]))
        for i in range(n)
    ]

    # Links: most point into basics, a few to tconsts that basics lacks.
    tconst = _linked_ids(rng, year)
    outside = np.zeros(n, dtype=bool)
    outside[rng.choice(n, n_missing, replace=False)] = True
    ids = _tconst_ids(rng, p, tconst[~outside])
    clash = outside & np.isin(tconst, ids)
    tconst[clash] = _absent_ids(rng, np.union1d(ids, tconst), int(clash.sum()))
    basics_pos = np.where(outside, -1, np.searchsorted(ids, tconst))
    imdb_rated = ~outside & (rng.random(n) >= p.unrated_link_share)
    imdb_rated[rng.choice(np.flatnonzero(~outside))] = False

    tmdb = rng.choice(700_000, size=n, replace=False).astype(np.int64) + 2
    tmdb[rng.random(n) < 0.01] = -1
    tmdb[rng.integers(n)] = -1

    quality = rng.normal(0, ITEM_SD, n)
    cdf = _popularity_cdf(rng, quality, year)
    ml_mask = _ml_masks(rng, imdb_mask, year)
    g_cdf, g_items, g_has = _genre_index(cdf, ml_mask)
    gbits = ((ml_mask[:, None] >> np.arange(len(MLG))) & 1).astype(np.float32)
    gnorm = gbits / np.maximum(gbits.sum(1, keepdims=True), 1)
    factors = rng.normal(0, FACTOR_SD, (n, DIM)).astype(np.float32)

    logpop = np.log(np.diff(cdf, prepend=0.0))
    pop_pct = np.empty(n)
    pop_pct[np.argsort(-logpop, kind="stable")] = np.arange(n) / n
    zpop = _normal_scores(pop_pct)
    tenths = np.clip(np.round(10 * (6.3 + 1.6 * quality + rng.normal(0, 0.5, n))), 10, 100)
    votes = 5 + np.floor(np.exp(7.0 + 1.3 * zpop + rng.normal(0, 0.8, n)))
    return Catalog(
        movie_id=_movie_ids(rng, year), tconst=tconst.astype(np.int64), basics_pos=basics_pos,
        imdb_rated=imdb_rated, type_code=type_code, year=year, runtime=runtime,
        imdb_mask=imdb_mask, ml_mask=ml_mask, primary=primary, original=original,
        ml_title=ml_title, tmdb=tmdb, quality=quality, cdf=cdf, genre_cdf=g_cdf,
        genre_items=g_items, genre_has_items=g_has, gnorm=gnorm, factors=factors,
        imdb_tenths=tenths.astype(np.int64), imdb_votes=votes.astype(np.int64),
        year_ts=year_start_ts(year), pop_pct=pop_pct,
    ), ids  # fmt: skip
