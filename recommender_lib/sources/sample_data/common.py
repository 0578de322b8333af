"""What every part of the sample generator shares: vocabularies, the hidden model's constants,
random streams and bit-mask helpers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recommender_lib.sources import formats

TYPES = formats.IMDB_TITLE_TYPES
TYPE_CODE = {name: i for i, name in enumerate(TYPES)}

IG = formats.IMDB_GENRES
_GENRE_WEIGHT: dict[str, float] = {
    "Drama": 30, "Comedy": 18, "Documentary": 8, "Romance": 7, "Action": 7, "Thriller": 7,
    "Crime": 6, "Horror": 6, "Adventure": 5, "Family": 4, "Mystery": 3.5, "Fantasy": 3,
    "Sci-Fi": 3, "Animation": 3, "Biography": 3, "History": 3, "Music": 3, "War": 2,
    "Musical": 1.5, "Sport": 1.5, "Western": 1.5, "Film-Noir": 0.4, "News": 0.5,
    "Reality-TV": 0.5, "Talk-Show": 0.5, "Game-Show": 0.3, "Adult": 0.0, "Short": 0.0,
}  # fmt: skip
_GENRE_BOOST: dict[str, dict[str, float]] = {  # per-type multipliers on _GENRE_WEIGHT
    "tvEpisode": {"Reality-TV": 12, "Talk-Show": 12, "News": 8, "Game-Show": 12, "Comedy": 1.5,
                  "Family": 1.5, "Animation": 2},
    "tvSeries": {"Reality-TV": 6, "Talk-Show": 6, "News": 4, "Game-Show": 6, "Animation": 2},
    "short": {"Short": 1, "Animation": 2, "Documentary": 1.5},
    "tvShort": {"Short": 1, "Animation": 3},
    "videoGame": {"Action": 5, "Adventure": 5, "Fantasy": 3, "Sci-Fi": 3, "Drama": 0.2},
}  # fmt: skip
# Bit order = order in movies.csv: alphabetical with IMAX last, like the GroupLens files.
MLG = (
    *sorted(g for g in formats.MOVIELENS_GENRES if g not in ("IMAX", formats.MOVIELENS_NO_GENRES)),
    "IMAX",
)
# tconst numbers grow with the year a title was added (tt0114709: 1995, tt1xxxxxxx: 2020s).
ID_YEARS = (1874, 1925, 1950, 1975, 1994, 1999, 2003, 2007, 2011, 2016, 2019, 2022, 2030)
ID_KNOTS = (1, 20_000, 50_000, 80_000, 110_000, 200_000, 400_000, 1_000_000, 2_000_000,
            5_000_000, 10_000_000, 20_000_000, 36_000_000)  # fmt: skip

# Hidden rating model (never written).
MU = 3.14  # intercept; exposure bias lifts the observed mean to ~3.5
ITEM_SD, USER_SD, NOISE_SD = 0.45, 0.45, 0.75
TASTE_SD, DIM = 0.6, 8
FACTOR_SD = (0.3 / np.sqrt(DIM)) ** 0.5  # u.v has sd ~0.3 stars
EXPOSURE_GAMMA = 1.5  # how strongly a user avoids titles it would dislike
OLD_ACCEPT = 0.08  # exposure to titles released long before the user's activity, vs new ones
POPULAR_FIRST = 0.5  # users rate well-known titles early in their history (onboarding)
ZIPF_A, ZIPF_C = 1.5, 30.0  # exposure weight (rank + C) ** -A
UNIFORM_SHARE = 0.01  # exposure draws uniform over the catalogue (reach the long tail)


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """An independent, reproducible stream for one (purpose, chunk) key."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def year_start_ts(years: np.ndarray) -> np.ndarray:
    """Unix seconds at 1 January of each year."""
    y = np.asarray(years, dtype=np.int64) - 1970
    return y.astype("datetime64[Y]").astype("datetime64[s]").astype(np.int64)


def pick_types(rng: np.random.Generator, shares: dict[str, float], n: int) -> np.ndarray:
    """Type codes drawn with the given shares."""
    names = list(shares)
    p = np.array([shares[k] for k in names], dtype=float)
    codes = np.array([TYPE_CODE[k] for k in names], dtype=np.int8)
    return codes[rng.choice(len(names), size=n, p=p / p.sum())]


def interp_years(
    rng: np.random.Generator, n: int, knots: Sequence[tuple[float, int]]
) -> np.ndarray:
    """Years from a piecewise-linear quantile function."""
    q, y = zip(*knots, strict=True)
    return np.floor(np.interp(rng.random(n), q, y)).astype(np.int16)


def mask_strings(masks: np.ndarray, names: Sequence[str], sep: str, empty: str) -> np.ndarray:
    """Bit masks -> joined names (bit order = `names` order), `empty` for 0."""
    uniq, inv = np.unique(masks, return_inverse=True)
    out = []
    for m in uniq.tolist():
        parts = [names[b] for b in range(len(names)) if m >> b & 1]
        out.append(sep.join(parts) if parts else empty)
    return np.array(out, dtype=object)[inv.reshape(-1)]


def genre_masks(
    rng: np.random.Generator, logw: np.ndarray, k_probs: Sequence[float], null_share: float
) -> np.ndarray:
    """1-3 distinct IMDb genres per row (Gumbel top-k on per-row log weights) as bit masks."""
    n = logw.shape[0]
    keys = logw - np.log(-np.log(rng.random(logw.shape)))
    top = np.argsort(-keys, axis=1)[:, :3]
    k = np.asarray(rng.choice(3, size=n, p=k_probs)) + 1
    bits = np.where(np.arange(3) < k[:, None], np.left_shift(1, top), 0)
    masks = np.bitwise_or.reduce(bits, axis=1).astype(np.int64)
    masks[rng.random(n) < null_share] = 0
    return masks


def genre_logw(type_codes: np.ndarray) -> np.ndarray:
    """Per-row log weights over IMDb genres for the given title types."""
    table = np.empty((len(TYPES), len(IG)))
    for t, name in enumerate(TYPES):
        boost = _GENRE_BOOST.get(name, {})
        w = np.array([_GENRE_WEIGHT[g] * boost.get(g, 1.0) for g in IG])
        w[IG.index("Short")] = 1e3 * boost.get("Short", 0.0)  # shorts are nearly always Short
        with np.errstate(divide="ignore"):
            table[t] = np.log(w)
    return table[type_codes]
