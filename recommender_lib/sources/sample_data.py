"""Deterministic generator of a "sample mirror": IMDb and MovieLens files in the exact formats.

The files imitate the official dumps byte for byte in layout (DESIGN.md §5) and carry the quirks
a loader must survive (`\\N` nulls, titles beginning with `"`, quoted CSV titles, CRLF, empty
`tmdbId`, links to titles missing from IMDb, ...). The MovieLens ratings come from a hidden model
(biases, genre tastes, latent factors, popularity-driven exposure) so that a recommender trained
on them beats the baselines the way it does on real data. The latent parameters are never written.

Usage: ``python -m recommender_lib.sources.sample_data --out DIR
[--profile small|demo|full] [--seed N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import hashlib
import io
import sys
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from statistics import NormalDist
from typing import BinaryIO

import numpy as np

from recommender_lib.atomic import atomic_path
from recommender_lib.sources import formats

# ----------------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class SampleProfile:
    """Sizes of a generated mirror; `chunk_rows`/`chunk_users` bound the memory of one step."""

    name: str
    n_imdb_titles: int  # rows of title.basics
    n_users: int  # MovieLens users
    n_movies: int  # MovieLens movies
    mean_ratings_per_user: float  # before the per-user cap; every user has >= 20
    imdb_rated_share: float  # target share of basics rows that get a title.ratings row
    n_tags: int  # approximate rows of tags.csv
    eight_digit_share: float = 0.03  # share of tconsts with 8 digits (tt1xxxxxxx)
    missing_link_share: float = 0.04  # MovieLens links whose tconst is not in basics
    unrated_link_share: float = 0.025  # links in basics without a title.ratings row
    chunk_rows: int = 250_000
    chunk_users: int = 2_000


PROFILES: dict[str, SampleProfile] = {
    "small": SampleProfile("small", 4_000, 200, 800, 85.0, 0.4, 300),
    "demo": SampleProfile("demo", 150_000, 1_500, 8_000, 100.0, 0.25, 3_000),
    "full": SampleProfile(
        "full", 12_000_000, 162_000, 62_000, 154.0, 0.125, 1_000_000, eight_digit_share=0.3
    ),
}


@dataclass(frozen=True)
class SampleMirror:
    """Where `write_sample_mirror` put the files."""

    root: Path
    imdb_dir: Path
    basics: Path
    ratings: Path
    movielens_zip: Path
    movielens_md5: Path


# ---------------------------------------------------------------------------------- constants

_ML_DIR = Path(formats.MOVIELENS_DEFAULT_ZIP).stem  # folder inside the zip
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)
_GZIP_LEVEL = 6
_T0 = int(datetime(1996, 1, 1, tzinfo=UTC).timestamp())
_T1 = int(datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())
_MAX_YEAR = 2023  # newest MovieLens release year
_NULL = formats.IMDB_NULL

_TYPES = formats.IMDB_TITLE_TYPES
_T = {name: i for i, name in enumerate(_TYPES)}
_TYPE_SHARE = {  # filler rows, roughly the real dump
    "tvEpisode": 0.735, "short": 0.09, "movie": 0.062, "video": 0.026, "tvSeries": 0.026,
    "tvMovie": 0.014, "tvMiniSeries": 0.006, "tvSpecial": 0.0045, "videoGame": 0.0035,
    "tvShort": 0.001, "tvPilot": 0.00001,
}  # fmt: skip
_LINKED_TYPE_SHARE = {
    "movie": 0.86, "tvMovie": 0.04, "video": 0.03, "tvSeries": 0.04, "tvMiniSeries": 0.03,
}  # fmt: skip
_RATED_WEIGHT = {  # how much likelier a type has a title.ratings row
    "movie": 3.0, "tvSeries": 3.0, "tvMiniSeries": 3.0, "tvMovie": 2.5, "video": 1.5,
    "videoGame": 2.0, "tvSpecial": 1.5, "short": 1.0, "tvShort": 0.8, "tvEpisode": 0.5,
    "tvPilot": 1.0,
}  # fmt: skip
# runtime per type: median minutes, log-sd, min, max, share of \N
_RUNTIME = {
    "movie": (95, 0.22, 45, 400, 0.25), "short": (9, 0.7, 1, 45, 0.3),
    "tvSeries": (40, 0.35, 5, 120, 0.45), "tvEpisode": (30, 0.4, 1, 180, 0.65),
    "tvMovie": (88, 0.18, 45, 240, 0.3), "tvMiniSeries": (52, 0.3, 10, 600, 0.4),
    "tvSpecial": (60, 0.4, 5, 240, 0.4), "tvShort": (8, 0.6, 1, 40, 0.4),
    "video": (70, 0.5, 3, 300, 0.4), "videoGame": (20, 0.5, 1, 100, 0.97),
    "tvPilot": (45, 0.3, 15, 120, 0.5),
}  # fmt: skip

_IG = formats.IMDB_GENRES
_GENRE_WEIGHT = {
    "Drama": 30, "Comedy": 18, "Documentary": 8, "Romance": 7, "Action": 7, "Thriller": 7,
    "Crime": 6, "Horror": 6, "Adventure": 5, "Family": 4, "Mystery": 3.5, "Fantasy": 3,
    "Sci-Fi": 3, "Animation": 3, "Biography": 3, "History": 3, "Music": 3, "War": 2,
    "Musical": 1.5, "Sport": 1.5, "Western": 1.5, "Film-Noir": 0.4, "News": 0.5,
    "Reality-TV": 0.5, "Talk-Show": 0.5, "Game-Show": 0.3, "Adult": 0.0, "Short": 0.0,
}  # fmt: skip
_GENRE_BOOST = {  # per-type multipliers on _GENRE_WEIGHT
    "tvEpisode": {"Reality-TV": 12, "Talk-Show": 12, "News": 8, "Game-Show": 12, "Comedy": 1.5,
                  "Family": 1.5, "Animation": 2},
    "tvSeries": {"Reality-TV": 6, "Talk-Show": 6, "News": 4, "Game-Show": 6, "Animation": 2},
    "short": {"Short": 1, "Animation": 2, "Documentary": 1.5},
    "tvShort": {"Short": 1, "Animation": 3},
    "videoGame": {"Action": 5, "Adventure": 5, "Fantasy": 3, "Sci-Fi": 3, "Drama": 0.2},
}  # fmt: skip
_IMDB_TO_ML = {
    "Action": "Action", "Adventure": "Adventure", "Animation": "Animation",
    "Family": "Children", "Comedy": "Comedy", "Crime": "Crime", "Documentary": "Documentary",
    "Drama": "Drama", "Fantasy": "Fantasy", "Film-Noir": "Film-Noir", "Horror": "Horror",
    "Music": "Musical", "Musical": "Musical", "Mystery": "Mystery", "Romance": "Romance",
    "Sci-Fi": "Sci-Fi", "Thriller": "Thriller", "War": "War", "Western": "Western",
}  # fmt: skip
# Bit order = order in movies.csv: alphabetical with IMAX last, like the GroupLens files.
_MLG = (
    *sorted(g for g in formats.MOVIELENS_GENRES if g not in ("IMAX", formats.MOVIELENS_NO_GENRES)),
    "IMAX",
)
_IMAX = _MLG.index("IMAX")

_ADJ = (
    "Dark", "Silent", "Last", "Red", "Lost", "Golden", "Broken", "Secret", "Wild", "Little",
    "Hidden", "Endless", "Crimson", "Burning", "Frozen", "Midnight", "Electric", "Quiet",
    "Eternal", "Hollow", "Bitter", "Bright", "Cold", "Distant", "Empty", "Final", "First",
    "Forgotten", "Gentle", "Great", "Iron", "Lonely", "Long", "Lucky", "Mad", "Northern",
    "Pale", "Perfect", "Restless", "Savage", "Second", "Shining", "Silver", "Sweet",
    "Strange", "Sudden", "Velvet", "Wicked", "Young", "Blue", "Black", "White", "Dangerous",
    "Invisible", "American", "Brave", "Deadly", "Holy", "Open", "Stolen",
)  # fmt: skip
_NOUN = (
    "Night", "River", "City", "Road", "Heart", "Summer", "Garden", "Mirror", "Shadow", "Storm",
    "Horizon", "Promise", "Kingdom", "Station", "Letter", "Island", "Dream", "Winter",
    "Empire", "Machine", "Journey", "Fire", "Moon", "Stranger", "House", "Game", "Wedding",
    "Harbor", "Sky", "Frontier", "Affair", "Voyage", "Witness", "Hunter", "Sister", "Brother",
    "Father", "Mother", "Daughter", "Son", "Child", "Lover", "Soldier", "Detective", "Thief",
    "Angel", "Devil", "King", "Queen", "Prince", "Bride", "Ghost", "Killer", "Doctor", "Hotel",
    "Train", "Bridge", "Valley", "Ocean", "Desert", "Forest", "Mountain", "Planet", "Star",
    "Rain", "Wind", "Snow", "Blood", "Gold", "Dust", "Smoke", "Glass", "Stone", "Music",
    "Dance", "Song", "Secret", "Truth", "Lie", "War", "Peace", "Time", "Memory", "Silence",
    "Secretary", "Widow", "Orphan", "Empress", "Pirate", "Outlaw", "Spy", "Gambler", "Painter",
    "Professor", "Sheriff", "Diary", "Exile", "Rebellion", "Paradise",
)  # fmt: skip
_NAME = (
    "Anna", "Marcus", "Giliap", "Zoé", "Hélène", "Jürgen", "Saoirse", "O'Brien", "Björk",
    "Max", "Lena", "Tom", "Rosa", "Otto", "Ingrid", "Pablo", "Yuki", "Kenji", "Amélie",
    "François", "Grete", "Søren", "Nuño", "Agnès", "Mia", "Jack", "Lucy", "Harry", "Sam",
    "Eva", "Mr. Smith", "Dr. Kalman", "Captain Blake", "Ms. Ortiz", "Uncle Joe", "Mrs. Dalloway",
)  # fmt: skip
_PLACE = (
    "Paris", "Berlin", "Zürich", "Montréal", "São Paulo", "Kraków", "Düsseldorf", "Tokyo",
    "東京", "Istanbul", "Reykjavík", "Málaga", "New York", "Chicago", "Vienna", "Rome",
    "Texas", "Brooklyn", "Manhattan", "Tangier", "Köln", "Brasília", "Lódz", "Marseille",
)  # fmt: skip
_CJK = (
    "東京物語", "夜の河", "日本の夏", "七つの海", "静かな雨", "風の谷", "赤い橋", "花火",
    "月の光", "春の雪",
)  # fmt: skip
_FOREIGN = {  # (article, noun) pairs and suffixes per language; "" = no article
    "fr": ((("La", "Cité"), ("La", "Nuit"), ("Le", "Jardin"), ("Les", "Enfants"),
            ("L'", "Été"), ("Le", "Fleuve"), ("La", "Femme"), ("Le", "Samouraï")),
           ("des enfants perdus", "d'hiver", "des étoiles", "éternel", "à Paris", "du Nord")),
    "de": ((("Der", "Fluß"), ("Die", "Straße"), ("Das", "Märchen"), ("Die", "Brücke"),
            ("Der", "Himmel"), ("Das", "Boot")),
           ("im Süden", "der Nacht", "über Berlin", "für immer", "aus Köln")),
    "es": ((("El", "Camino"), ("La", "Noche"), ("Los", "Olvidados"), ("El", "Laberinto"),
            ("La", "Casa")),
           ("del sur", "sin fin", "de Málaga", "del fauno", "de papel")),
    "it": ((("Il", "Postino"), ("La", "Strada"), ("Il", "Sorpasso"), ("La", "Dolce"),
            ("Il", "Gattopardo")),
           ("di notte", "perduta", "d'oro", "vita", "di Roma")),
}  # fmt: skip
_FOREIGN_ARTICLES = ("La", "Le", "Les", "L'", "Der", "Die", "Das", "El", "Los", "Il")
# tconst numbers grow with the year a title was added (tt0114709: 1995, tt1xxxxxxx: 2020s).
_ID_YEARS = (1874, 1925, 1950, 1975, 1994, 1999, 2003, 2007, 2011, 2016, 2019, 2022, 2030)
_ID_KNOTS = (1, 20_000, 50_000, 80_000, 110_000, 200_000, 400_000, 1_000_000, 2_000_000,
             5_000_000, 10_000_000, 20_000_000, 36_000_000)  # fmt: skip
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")  # fmt: skip

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
_TAG_VOCAB = _TAGS_GENERAL + tuple(_TAGS_BY_GENRE[g] for g in _MLG)

# Hidden rating model (never written).
_MU = 3.14  # intercept; exposure bias lifts the observed mean to ~3.5
_ITEM_SD, _USER_SD, _NOISE_SD = 0.45, 0.45, 0.75
_TASTE_SD, _DIM = 0.6, 8
_FACTOR_SD = (0.3 / np.sqrt(_DIM)) ** 0.5  # u.v has sd ~0.3 stars
_EXPOSURE_GAMMA = 1.5  # how strongly a user avoids titles it would dislike
_OLD_ACCEPT = 0.08  # exposure to titles released long before the user's activity, vs new ones
_POPULAR_FIRST = 0.5  # users rate well-known titles early in their history (onboarding)
_ZIPF_A, _ZIPF_C = 1.5, 30.0  # exposure weight (rank + C) ** -A
_UNIFORM_SHARE = 0.01  # exposure draws uniform over the catalogue (reach the long tail)

_RATING_STR = np.array([f"{h / 2:.1f}" for h in range(11)], dtype=object)
_TENTHS_STR = np.array([f"{t / 10:.1f}" for t in range(101)], dtype=object)


# --------------------------------------------------------------------------------- utilities


def _rng(seed: int, *key: int) -> np.random.Generator:
    """An independent, reproducible stream for one (purpose, chunk) key."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def _year_start_ts(years: np.ndarray) -> np.ndarray:
    """Unix seconds at 1 January of each year."""
    y = np.asarray(years, dtype=np.int64) - 1970
    return y.astype("datetime64[Y]").astype("datetime64[s]").astype(np.int64)


def _pick(rng: np.random.Generator, shares: dict[str, float], n: int) -> np.ndarray:
    """Type codes drawn with the given shares."""
    names = list(shares)
    p = np.array([shares[k] for k in names], dtype=float)
    codes = np.array([_T[k] for k in names], dtype=np.int8)
    return codes[rng.choice(len(names), size=n, p=p / p.sum())]


def _interp_years(
    rng: np.random.Generator, n: int, knots: Sequence[tuple[float, int]]
) -> np.ndarray:
    """Years from a piecewise-linear quantile function."""
    q, y = zip(*knots, strict=True)
    return np.floor(np.interp(rng.random(n), q, y)).astype(np.int16)


def _mask_strings(masks: np.ndarray, names: Sequence[str], sep: str, empty: str) -> np.ndarray:
    """Bit masks -> joined names (bit order = `names` order), `empty` for 0."""
    uniq, inv = np.unique(masks, return_inverse=True)
    out = []
    for m in uniq.tolist():
        parts = [names[b] for b in range(len(names)) if m >> b & 1]
        out.append(sep.join(parts) if parts else empty)
    return np.array(out, dtype=object)[inv.reshape(-1)]


def _genre_masks(
    rng: np.random.Generator, logw: np.ndarray, k_probs: Sequence[float], null_share: float
) -> np.ndarray:
    """1-3 distinct IMDb genres per row (Gumbel top-k on per-row log weights) as bit masks."""
    n = logw.shape[0]
    keys = logw - np.log(-np.log(rng.random(logw.shape)))
    top = np.argsort(-keys, axis=1)[:, :3]
    k = rng.choice(3, size=n, p=k_probs) + 1
    bits = np.where(np.arange(3) < k[:, None], np.left_shift(1, top), 0)
    masks = np.bitwise_or.reduce(bits, axis=1).astype(np.int64)
    masks[rng.random(n) < null_share] = 0
    return masks


def _genre_logw(type_codes: np.ndarray) -> np.ndarray:
    """Per-row log weights over IMDb genres for the given title types."""
    table = np.empty((len(_TYPES), len(_IG)))
    for t, name in enumerate(_TYPES):
        boost = _GENRE_BOOST.get(name, {})
        w = np.array([_GENRE_WEIGHT[g] * boost.get(g, 1.0) for g in _IG])
        w[_IG.index("Short")] = 1e3 * boost.get("Short", 0.0)  # shorts are nearly always Short
        with np.errstate(divide="ignore"):
            table[t] = np.log(w)
    return table[type_codes]


# ------------------------------------------------------------------------------------ titles


def _move_article(title: str, articles: Sequence[str]) -> str:
    """`The Kingdom` -> `Kingdom, The`; `L'Été` -> `Été, L'` (MovieLens style)."""
    for a in articles:
        if a.endswith("'") and title.startswith(a) and len(title) > len(a):
            return f"{title[len(a) :]}, {a}"
        if title.startswith(a + " "):
            return f"{title[len(a) + 1 :]}, {a}"
    return title


def _english_titles(rng: np.random.Generator, n: int) -> list[str]:
    """English-looking titles, some with commas, apostrophes, quotes and non-ASCII."""
    a = rng.integers(len(_ADJ), size=n).tolist()
    b = rng.integers(len(_NOUN), size=n).tolist()
    c = rng.integers(len(_NOUN), size=n).tolist()
    d = rng.integers(len(_NAME), size=n).tolist()
    e = rng.integers(len(_PLACE), size=n).tolist()
    f = rng.integers(2, 5, size=n).tolist()
    pats = [
        (0.22, lambda i: f"{_ADJ[a[i]]} {_NOUN[b[i]]}"),
        (0.14, lambda i: f"The {_ADJ[a[i]]} {_NOUN[b[i]]}"),
        (0.08, lambda i: f"The {_NOUN[b[i]]}"),
        (0.07, lambda i: f"{_NOUN[b[i]]} of the {_ADJ[a[i]]} {_NOUN[c[i]]}"),
        (0.06, lambda i: f"{_NAME[d[i]]}'s {_NOUN[b[i]]}"),
        (0.03, lambda i: f"{_NOUN[b[i]]}, {_NOUN[c[i]]} and {_NOUN[(b[i] + 7) % len(_NOUN)]}"),
        (0.05, lambda i: f"{_ADJ[a[i]]} {_NOUN[b[i]]}: The {_NOUN[c[i]]}"),
        (0.07, lambda i: f"A {_NOUN[b[i]]} in {_PLACE[e[i]]}"),
        (0.06, lambda i: f"{_NAME[d[i]]} and {_NAME[(d[i] + 5) % len(_NAME)]}"),
        (0.03, lambda i: f"{_ADJ[a[i]]} {_NOUN[b[i]]} {f[i]}"),
        (0.04, lambda i: _PLACE[e[i]]),
        (0.05, lambda i: _NAME[d[i]]),
        (0.03, lambda i: f"An Ode to {_NAME[d[i]]}"),
        (0.01, lambda i: _CJK[d[i] % len(_CJK)]),
        (0.005, lambda i: f"Untitled {_NAME[d[i]]} Project"),
    ]
    pats += [  # rare shapes that trip naive parsers
        (0.004, lambda i: f'"{_NAME[d[i]]}"'),
        (0.004, lambda i: f'The Man Who Said "{_NOUN[b[i]]}"'),
        (0.0005, lambda i: ("NA", "Null")[int(f[i]) % 2]),
    ]
    p = np.array([w for w, _ in pats])
    which = rng.choice(len(pats), size=n, p=p / p.sum())
    return [pats[w][1](i) for i, w in enumerate(which.tolist())]


_FORCED_TITLES = ('"Giliap"', 'The Man Who Said "Stop"', "Anna, Max and Otto", "O'Brien's Son",
                  "Straße der Zürich Ängste", "東京物語", "NA", "Null")  # fmt: skip


def _foreign_titles(rng: np.random.Generator, n: int) -> list[str]:
    """Original-language titles: French, German, Spanish, Italian (with articles) or Japanese."""
    langs = list(_FOREIGN)
    which = rng.integers(len(langs) + 1, size=n)
    i1 = rng.integers(100, size=n)
    i2 = rng.integers(100, size=n)
    out = []
    for w, x, y in zip(which.tolist(), i1.tolist(), i2.tolist(), strict=True):
        if w == len(langs):
            out.append(_CJK[x % len(_CJK)])
            continue
        pairs, suffixes = _FOREIGN[langs[w]]
        art, noun = pairs[x % len(pairs)]
        head = f"{art}{noun}" if art.endswith("'") else f"{art} {noun}"
        out.append(f"{head} {suffixes[y % len(suffixes)]}")
    return out


def _episode_titles(rng: np.random.Generator, n: int) -> list[str]:
    """Episode titles: mostly "Episode #s.e", some dated, the rest like other titles."""
    kind = rng.choice(3, size=n, p=[0.55, 0.05, 0.40])
    s = rng.integers(1, 12, size=n)
    e = rng.integers(1, 40, size=n)
    day = rng.integers(1, 29, size=n)
    mon = rng.integers(12, size=n)
    yr = rng.integers(1950, 2024, size=n)
    other = iter(_english_titles(rng, int((kind == 2).sum())))
    out = []
    for i, k in enumerate(kind.tolist()):
        if k == 0:
            out.append(f"Episode #{s[i]}.{e[i]}")
        elif k == 1:
            out.append(f"Episode dated {day[i]} {_MONTHS[mon[i]]} {yr[i]}")
        else:
            out.append(next(other))
    return out


def _ml_title(primary: str, original: str, year: int, with_year: bool, flip: bool) -> str:
    """MovieLens title: articles moved to the end, original title in parentheses, "(yyyy)"."""
    title = _move_article(primary, ("The", "A", "An"))
    if original != primary:
        alt = _move_article(original, _FOREIGN_ARTICLES)
        title = f"{title} ({alt})" if flip else f"{alt} ({title})"
    return f"{title} ({year})" if with_year else title


# ----------------------------------------------------------------------------- the catalogue


@dataclass
class _Catalog:
    """MovieLens movies with their IMDb side and hidden parameters (index = movie index)."""

    movie_id: np.ndarray
    tconst: np.ndarray
    basics_pos: np.ndarray  # row in basics, -1 when the link points outside basics
    imdb_rated: np.ndarray
    type_code: np.ndarray
    year: np.ndarray
    runtime: np.ndarray  # -1 = \N
    imdb_mask: np.ndarray
    ml_mask: np.ndarray  # bits over _MLG; 0 = (no genres listed)
    primary: list[str]
    original: list[str]
    ml_title: list[str]
    tmdb: np.ndarray  # -1 = empty
    quality: np.ndarray
    cdf: np.ndarray  # popularity CDF for exposure draws
    genre_cdf: np.ndarray  # concatenated per-genre CDFs, genre g in (g, g+1]
    genre_items: np.ndarray
    genre_has_items: np.ndarray
    gnorm: np.ndarray  # genre vector / genre count (float32, n x len(_MLG))
    factors: np.ndarray  # latent item factors (float32, n x _DIM)
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
    target = np.interp(added, _ID_YEARS, _ID_KNOTS) * np.exp(rng.normal(0, 0.05, n))
    target = np.clip(target.astype(np.int64), 1, _ID_KNOTS[-1] - n)
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
    for lo, hi, k in ((1, 10_000_000, n7), (10_000_000, _ID_KNOTS[-1], n8)):
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
    for ig, mg in _IMDB_TO_ML.items():
        has = (imdb_mask >> _IG.index(ig)) & 1
        ml |= has << _MLG.index(mg)
    extra = rng.random(n) < 0.1
    g = rng.integers(len(_MLG) - 1, size=int(extra.sum()))
    ml[extra] |= np.left_shift(1, g + (g >= _IMAX))
    ml[imdb_mask == 0] = 0  # IMDb has no genres -> "(no genres listed)"
    spectacle = sum(1 << _MLG.index(g) for g in ("Action", "Adventure", "Sci-Fi", "Animation"))
    imax_ok = (year >= 1994) & ((ml & spectacle) != 0)
    imax = imax_ok & (rng.random(n) < 0.08)
    if not imax.any():
        imax[np.argmax(imax_ok) if imax_ok.any() else 0] = True
    ml[imax] |= 1 << _IMAX
    return ml


def _popularity_cdf(rng: np.random.Generator, quality: np.ndarray, year: np.ndarray) -> np.ndarray:
    """Zipf-like exposure probabilities, higher for good and for post-1985 titles."""
    n = len(quality)
    z = 0.4 * quality / _ITEM_SD + 0.92 * rng.standard_normal(n)
    z -= 0.02 * np.maximum(0, 1985 - year)
    rank = np.empty(n)
    rank[np.argsort(-z)] = np.arange(n)
    pop = (rank + _ZIPF_C) ** -_ZIPF_A
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
    vals, items, has = [], [], np.zeros(len(_MLG), dtype=bool)
    for g in range(len(_MLG)):
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


def _make_catalog(seed: int, p: SampleProfile) -> tuple[_Catalog, np.ndarray]:
    """The MovieLens catalogue with every hidden item parameter, and the basics tconsts."""
    rng = _rng(seed, 2)
    n = p.n_movies
    n_missing = max(1, round(n * p.missing_link_share))
    if n - n_missing > p.n_imdb_titles // 2:
        raise ValueError("n_movies too large for n_imdb_titles")
    knots = ((0, 1902), (0.05, 1954), (0.1, 1967), (0.25, 1988), (0.5, 1999), (0.75, 2008),
             (0.9, 2014), (1.0, _MAX_YEAR + 1))  # fmt: skip
    year = np.minimum(_interp_years(rng, n, knots), _MAX_YEAR).astype(np.int16)
    type_code = _pick(rng, _LINKED_TYPE_SHARE, n)
    imdb_mask = _genre_masks(rng, _genre_logw(type_code), (0.2, 0.35, 0.45), 0.01)
    imdb_mask[rng.integers(n)] = 0
    runtime = np.clip(rng.normal(105, 20, n), 50, 240).astype(np.int16)
    runtime[np.isin(type_code, [_T["tvSeries"], _T["tvMiniSeries"]])] = 45
    runtime[rng.random(n) < 0.02] = -1

    primary = _english_titles(rng, n)
    foreign = rng.random(n) < 0.12
    original = list(primary)
    for i, t in zip(
        np.flatnonzero(foreign).tolist(), _foreign_titles(rng, int(foreign.sum())), strict=True
    ):
        original[i] = t
    series = np.isin(type_code, [_T["tvSeries"], _T["tvMiniSeries"]])
    no_year = rng.random(n) < np.where(series, 0.3, 0.005)
    no_year[rng.integers(n)] = True
    flip = rng.random(n) < 0.5
    ml_title = [
        _ml_title(primary[i], original[i], int(year[i]), not no_year[i], bool(flip[i]))
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

    quality = rng.normal(0, _ITEM_SD, n)
    cdf = _popularity_cdf(rng, quality, year)
    ml_mask = _ml_masks(rng, imdb_mask, year)
    g_cdf, g_items, g_has = _genre_index(cdf, ml_mask)
    gbits = ((ml_mask[:, None] >> np.arange(len(_MLG))) & 1).astype(np.float32)
    gnorm = gbits / np.maximum(gbits.sum(1, keepdims=True), 1)
    factors = rng.normal(0, _FACTOR_SD, (n, _DIM)).astype(np.float32)

    logpop = np.log(np.diff(cdf, prepend=0.0))
    pop_pct = np.empty(n)
    pop_pct[np.argsort(-logpop, kind="stable")] = np.arange(n) / n
    zpop = _normal_scores(pop_pct)
    tenths = np.clip(np.round(10 * (6.3 + 1.6 * quality + rng.normal(0, 0.5, n))), 10, 100)
    votes = 5 + np.floor(np.exp(7.0 + 1.3 * zpop + rng.normal(0, 0.8, n)))
    return _Catalog(
        movie_id=_movie_ids(rng, year), tconst=tconst.astype(np.int64), basics_pos=basics_pos,
        imdb_rated=imdb_rated, type_code=type_code, year=year, runtime=runtime,
        imdb_mask=imdb_mask, ml_mask=ml_mask, primary=primary, original=original,
        ml_title=ml_title, tmdb=tmdb, quality=quality, cdf=cdf, genre_cdf=g_cdf,
        genre_items=g_items, genre_has_items=g_has, gnorm=gnorm, factors=factors,
        imdb_tenths=tenths.astype(np.int64), imdb_votes=votes.astype(np.int64),
        year_ts=_year_start_ts(year), pop_pct=pop_pct,
    ), ids  # fmt: skip


# ------------------------------------------------------------------------------------- IMDb


@dataclass
class _Rows:
    """Column arrays of one basics chunk (0 = \\N for years, -1 for runtime)."""

    type_code: np.ndarray
    adult: np.ndarray
    year: np.ndarray
    end_year: np.ndarray
    runtime: np.ndarray
    gmask: np.ndarray
    primary: np.ndarray
    original: np.ndarray


def _filler_rows(rng: np.random.Generator, ids: np.ndarray) -> _Rows:
    """Random basics rows with realistic type mix, years, runtimes, genres and titles."""
    m = len(ids)
    tc = _pick(rng, _TYPE_SHARE, m)
    adult = (rng.random(m) < np.where(tc == _T["tvEpisode"], 0.004, 0.025)).astype(np.int8)
    added = np.interp(ids, _ID_KNOTS, _ID_YEARS) + rng.random(m)
    backfill = np.where(rng.random(m) < 0.4, rng.exponential(15, m), 0)
    year = np.clip(added - backfill, 1874, 2029).astype(np.int16)
    tv = np.isin(tc, [_T[t] for t in _TYPES if t.startswith("tv")])
    year[tv] = np.maximum(year[tv], 1947)
    year[tc == _T["videoGame"]] = np.maximum(year[tc == _T["videoGame"]], 1975)
    year[rng.random(m) < np.where(tc == _T["tvEpisode"], 0.15, 0.05)] = 0
    end = np.zeros(m, dtype=np.int16)
    runs = np.isin(tc, [_T["tvSeries"], _T["tvMiniSeries"]]) & (year > 0) & (rng.random(m) < 0.6)
    span = np.where(tc == _T["tvMiniSeries"], rng.integers(0, 2, m), rng.geometric(0.3, m) - 1)
    end[runs] = np.minimum(year[runs] + span[runs], np.maximum(year[runs], 2025))
    rt = np.array([_RUNTIME[t] for t in _TYPES])[tc]
    runtime = np.clip(
        np.round(rt[:, 0] * np.exp(rt[:, 1] * rng.standard_normal(m))), rt[:, 2], rt[:, 3]
    )
    runtime = np.where(rng.random(m) < rt[:, 4], -1, runtime).astype(np.int32)
    gmask = _genre_masks(rng, _genre_logw(tc), (0.45, 0.3, 0.25), 0.08)
    adult_rows = gmask[adult == 1]
    three = np.array([bin(x).count("1") == 3 for x in adult_rows.tolist()], dtype=bool)
    adult_rows[three] &= adult_rows[three] - 1  # keep at most two genres besides Adult
    gmask[adult == 1] = adult_rows | 1 << _IG.index("Adult")
    episode = tc == _T["tvEpisode"]
    primary = np.empty(m, dtype=object)
    primary[episode] = _episode_titles(rng, int(episode.sum()))
    primary[~episode] = _english_titles(rng, int((~episode).sum()))
    original = primary.copy()
    foreign = ~episode & (rng.random(m) < 0.08)
    original[foreign] = _foreign_titles(rng, int(foreign.sum()))
    return _Rows(tc, adult, year, end, runtime, gmask, primary, original)


def _force_quirks(rng: np.random.Generator, rows: _Rows, free: np.ndarray) -> None:
    """Guarantee every title type and the rare title shapes appear (first chunk only)."""
    slots = rng.permutation(free)
    for t, i in enumerate(slots[: len(_TYPES)].tolist()):
        rows.type_code[i] = t
        rows.end_year[i] = 0
        if _TYPES[t] in ("tvSeries", "tvMiniSeries") and rows.year[i] > 0:
            rows.end_year[i] = int(rows.year[i]) + 3
    rest = slots[len(_TYPES) :]
    for title, i in zip(_FORCED_TITLES, rest.tolist(), strict=False):
        rows.primary[i] = rows.original[i] = title


def _overlay_linked(rows: _Rows, local: np.ndarray, cat: _Catalog, items: np.ndarray) -> None:
    """Write the MovieLens-linked titles over their rows."""
    rows.type_code[local] = cat.type_code[items]
    rows.adult[local] = 0
    rows.year[local] = cat.year[items]
    rows.end_year[local] = 0
    rows.runtime[local] = cat.runtime[items]
    rows.gmask[local] = cat.imdb_mask[items]
    rows.primary[local] = [cat.primary[i] for i in items.tolist()]
    rows.original[local] = [cat.original[i] for i in items.tolist()]


def _int_strings(values: np.ndarray, null: int) -> list[str]:
    """Integers as text, `\\N` where `values == null`."""
    return [_NULL if v == null else str(v) for v in values.tolist()]


def _basics_text(ids: np.ndarray, rows: _Rows) -> str:
    """Tab-separated basics lines (no quoting) for one chunk."""
    cols = [
        [f"tt{x:07d}" for x in ids.tolist()],
        np.array(_TYPES, dtype=object)[rows.type_code].tolist(),
        rows.primary.tolist(),
        rows.original.tolist(),
        np.array(["0", "1"], dtype=object)[rows.adult].tolist(),
        _int_strings(rows.year, 0),
        _int_strings(rows.end_year, 0),
        _int_strings(rows.runtime, -1),
        _mask_strings(rows.gmask, _IG, ",", _NULL).tolist(),
    ]
    return "".join("\t".join(r) + "\n" for r in zip(*cols, strict=True))


def _ratings_text(ids: np.ndarray, tenths: np.ndarray, votes: np.ndarray) -> str:
    """Tab-separated title.ratings lines for one chunk."""
    avg = _TENTHS_STR[tenths].tolist()
    return "".join(
        f"tt{t:07d}\t{a}\t{v}\n" for t, a, v in zip(ids.tolist(), avg, votes.tolist(), strict=True)
    )


def _filler_rated_share(p: SampleProfile, n_linked_rated: int) -> float:
    """Share of non-linked rows to rate so that the total matches `imdb_rated_share`."""
    n_filler = p.n_imdb_titles - (p.n_movies - max(1, round(p.n_movies * p.missing_link_share)))
    target = p.imdb_rated_share * p.n_imdb_titles - n_linked_rated
    return float(np.clip(target / max(n_filler, 1), 0.0, 1.0))


def _imdb_chunks(
    seed: int, p: SampleProfile, ids: np.ndarray, cat: _Catalog
) -> Iterator[tuple[str, str]]:
    """(basics text, ratings text) per chunk of `chunk_rows` basics rows, in tconst order."""
    inside = np.flatnonzero(cat.basics_pos >= 0)
    inside = inside[np.argsort(cat.basics_pos[inside])]
    linked_pos = cat.basics_pos[inside]
    share = _filler_rated_share(p, int(cat.imdb_rated.sum()))
    w = np.array([_RATED_WEIGHT[t] for t in _TYPES])
    w_mean = sum(_TYPE_SHARE[t] * _RATED_WEIGHT[t] for t in _TYPES) / sum(_TYPE_SHARE.values())
    for c, a in enumerate(range(0, len(ids), p.chunk_rows)):
        b = min(a + p.chunk_rows, len(ids))
        rng = _rng(seed, 3, c)
        rows = _filler_rows(rng, ids[a:b])
        lo, hi = np.searchsorted(linked_pos, [a, b])
        local, items = linked_pos[lo:hi] - a, inside[lo:hi]
        if c == 0:
            _force_quirks(rng, rows, np.setdiff1d(np.arange(b - a), local))
        _overlay_linked(rows, local, cat, items)
        rated = rng.random(b - a) < np.minimum(1.0, share * w[rows.type_code] / w_mean)
        episode = rows.type_code == _T["tvEpisode"]
        tenths = np.clip(np.round(rng.normal(66 + 7 * episode, 12)), 10, 100).astype(np.int64)
        mu = 2.7 + 1.0 * (rows.type_code == _T["movie"])
        votes = 5 + np.floor(np.exp(rng.normal(mu, 1.5))).astype(np.int64)
        rated[local] = cat.imdb_rated[items]
        tenths[local] = cat.imdb_tenths[items]
        votes[local] = cat.imdb_votes[items]
        r = np.flatnonzero(rated)
        yield _basics_text(ids[a:b], rows), _ratings_text(ids[a:b][r], tenths[r], votes[r])


@contextlib.contextmanager
def _gzip_writer(target: Path) -> Iterator[gzip.GzipFile]:
    """Atomically written gzip file with a reproducible header (no name, mtime 0)."""
    with (
        atomic_path(target) as tmp,
        open(tmp, "wb") as raw,
        gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, compresslevel=_GZIP_LEVEL, mtime=0
        ) as gz,
    ):
        yield gz


def _write_imdb(
    imdb_dir: Path, seed: int, p: SampleProfile, ids: np.ndarray, cat: _Catalog
) -> None:
    """Write title.basics.tsv.gz and title.ratings.tsv.gz chunk by chunk."""
    basics_path = imdb_dir / formats.IMDB_BASICS_FILE
    ratings_path = imdb_dir / formats.IMDB_RATINGS_FILE
    with _gzip_writer(basics_path) as gb, _gzip_writer(ratings_path) as gr:
        gb.write(("\t".join(formats.IMDB_BASICS_COLUMNS) + "\n").encode())
        gr.write(("\t".join(formats.IMDB_RATINGS_COLUMNS) + "\n").encode())
        for basics, ratings in _imdb_chunks(seed, p, ids, cat):
            gb.write(basics.encode("utf-8"))
            gr.write(ratings.encode("utf-8"))


# ------------------------------------------------------------------------------- MovieLens


@dataclass
class _Users:
    """Hidden parameters of one chunk of users."""

    first_id: int
    k: np.ndarray  # ratings to draw
    bias: np.ndarray
    taste: np.ndarray  # float32 (m x len(_MLG))
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
    rng: np.random.Generator, p: SampleProfile, cat: _Catalog, first: int, m: int
) -> _Users:
    """Draw biases, tastes, factors, activity periods and rating counts for `m` users."""
    g = len(_MLG)
    freq = np.array([(cat.ml_mask >> j & 1).mean() for j in range(g)]) + 1e-3
    keys = 0.5 * np.log(freq) - np.log(-np.log(rng.random((m, g))))  # Gumbel top-k
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    sparse = rank < rng.integers(2, 6, size=m)[:, None]
    taste = np.where(sparse, rng.normal(0, _TASTE_SD, (m, g)), rng.normal(0, 0.05, (m, g)))
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
    start = rng.integers(_T0, _T1 - span)
    end = np.minimum(start + span, _T1)
    end_year = end.astype("datetime64[s]").astype("datetime64[Y]").astype(np.int64) + 1970
    eligible = np.searchsorted(np.sort(cat.year), end_year, side="right")
    k = np.minimum(k, np.maximum(20, np.minimum(0.5 * eligible, 0.5 * len(cat)).astype(np.int64)))
    early = start < _year_start_ts(np.array([2003]))[0]
    return _Users(
        first_id=first, k=k, bias=rng.normal(0, _USER_SD, m), taste=taste.astype(np.float32),
        seek_cdf=seek_cdf, seek=rng.beta(2, 2, m) * 0.8,
        factors=rng.normal(0, _FACTOR_SD, (m, _DIM)).astype(np.float32),
        whole=rng.random(m) < np.where(early, 0.6, 0.08), start=start, end=end,
        end_year=end_year, tagger=rng.random(m) < 0.1,
    )  # fmt: skip


def _affinity(users: _Users, cat: _Catalog, u: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Hidden taste . genres + user factors . item factors for (user, item) pairs."""
    taste = np.einsum("ij,ij->i", users.taste[u], cat.gnorm[i])
    return taste + np.einsum("ij,ij->i", users.factors[u], cat.factors[i])


def _draw_items(
    rng: np.random.Generator, users: _Users, cat: _Catalog, u: np.ndarray
) -> np.ndarray:
    """One exposure draw per entry of `u`: uniform, a liked genre, or global popularity."""
    n = len(u)
    r = rng.random(n)
    items = np.minimum(np.searchsorted(cat.cdf, r, side="right"), len(cat) - 1)
    comp = rng.random(n)
    uniform = comp < _UNIFORM_SHARE
    items[uniform] = rng.integers(len(cat), size=int(uniform.sum()))
    seek = ~uniform & (comp < _UNIFORM_SHARE + users.seek[u]) & (users.seek_cdf[u, -1] > 0)
    if seek.any():
        su = u[seek]
        genre = (users.seek_cdf[su] < 1.0 - rng.random(len(su))[:, None]).sum(1)
        pos = np.searchsorted(cat.genre_cdf, genre + rng.random(len(su)), side="right")
        items[seek] = cat.genre_items[np.minimum(pos, len(cat.genre_items) - 1)]
    return items


def _accept_prob(
    users: _Users, cat: _Catalog, u: np.ndarray, i: np.ndarray, recency: bool
) -> np.ndarray:
    """Users skip titles they would dislike and favour titles new during their active years."""
    prob = np.exp(_EXPOSURE_GAMMA * np.minimum(_affinity(users, cat, u, i), 0))
    if recency:
        age = np.maximum(users.end_year[u] - cat.year[i], 0)
        prob *= _OLD_ACCEPT + (1 - _OLD_ACCEPT) * np.exp(-age / 3.0)
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
    rng: np.random.Generator, users: _Users, cat: _Catalog
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
    rng: np.random.Generator, users: _Users, cat: _Catalog, u: np.ndarray, i: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Half-star ratings (as integer halves) and timestamps for the given pairs."""
    n = len(u)
    x = (
        _MU
        + users.bias[u]
        + cat.quality[i]
        + _affinity(users, cat, u, i)
        + rng.normal(0, _NOISE_SD, n)
    )
    halves = np.where(
        users.whole[u], 2 * np.clip(np.round(x), 1, 5), np.clip(np.round(2 * x), 1, 10)
    )
    lo = np.maximum(users.start[u], cat.year_ts[i])
    hi = users.end[u]
    late = lo >= hi  # released after the user's period: rate soon after release
    hi = np.where(late, np.minimum(lo + 30 * 86400, _T1), hi)
    lo = np.minimum(lo, hi)
    frac = np.clip(_POPULAR_FIRST * cat.pop_pct[i] + (1 - _POPULAR_FIRST) * rng.random(n), 0, 1)
    ts = lo + np.floor(frac * (hi - lo)).astype(np.int64)
    return halves.astype(np.int64), ts


def _tags_for(
    rng: np.random.Generator,
    users: _Users,
    cat: _Catalog,
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
    key = (iu * len(cat) + ii) * len(_TAG_VOCAB) + tag
    _, first = np.unique(key, return_index=True)
    first = np.sort(first)
    tts = np.minimum(ts[pick[first]] + rng.integers(1, 7200, size=len(first)), _T1)
    return iu[first] + users.first_id, cat.movie_id[ii[first]], tag[first], tts


def _user_chunks(seed: int, p: SampleProfile, cat: _Catalog) -> Iterator[tuple[np.ndarray, ...]]:
    """Per user chunk: (userId, movieId, halves, timestamp) sorted like ratings.csv, and tags."""
    for c, first in enumerate(range(0, p.n_users, p.chunk_users)):
        m = min(p.chunk_users, p.n_users - first)
        rng = _rng(seed, 4, c)
        users = _make_users(rng, p, cat, first + 1, m)
        u, i = _sample_pairs(rng, users, cat)
        halves, ts = _ratings_for(rng, users, cat, u, i)
        order = np.lexsort((cat.movie_id[i], u))
        n_tags = round(p.n_tags * (first + m) / p.n_users) - round(p.n_tags * first / p.n_users)
        tags = _tags_for(rng, users, cat, u, i, ts, n_tags)
        yield (u[order] + first + 1, cat.movie_id[i[order]], halves[order], ts[order]), tags


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[object]], eol: str) -> str:
    """CSV with minimal quoting (like the GroupLens files)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator=eol)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _movies_csv(cat: _Catalog, eol: str) -> str:
    order = np.argsort(cat.movie_id)
    genres = _mask_strings(cat.ml_mask, _MLG, "|", formats.MOVIELENS_NO_GENRES)
    mid = cat.movie_id.tolist()
    rows = [(mid[j], cat.ml_title[j], genres[j]) for j in order.tolist()]
    return _csv_text(formats.MOVIELENS_FILES["movies.csv"], rows, eol)


def _links_csv(cat: _Catalog, eol: str) -> str:
    order = np.argsort(cat.movie_id)
    mid, tconst, tmdb = cat.movie_id.tolist(), cat.tconst.tolist(), cat.tmdb.tolist()
    rows = [(mid[j], f"{tconst[j]:07d}", "" if tmdb[j] < 0 else tmdb[j]) for j in order.tolist()]
    return _csv_text(formats.MOVIELENS_FILES["links.csv"], rows, eol)


def _tags_csv(parts: list[tuple[np.ndarray, ...]], eol: str) -> str:
    uid, mid, tag, ts = (np.concatenate(col) for col in zip(*parts, strict=True))
    order = np.lexsort((ts, mid, uid))
    rows = zip(
        uid[order].tolist(),
        mid[order].tolist(),
        [_TAG_VOCAB[t] for t in tag[order].tolist()],
        ts[order].tolist(),
        strict=True,
    )
    return _csv_text(formats.MOVIELENS_FILES["tags.csv"], list(rows), eol)


def _ratings_lines(cols: tuple[np.ndarray, ...], eol: str) -> str:
    uid, mid, halves, ts = cols
    rs = _RATING_STR[halves].tolist()
    return "".join(
        f"{a},{b},{c},{d}{eol}"
        for a, b, c, d in zip(uid.tolist(), mid.tolist(), rs, ts.tolist(), strict=True)
    )


def _readme(p: SampleProfile, seed: int) -> str:
    return (
        "Summary\n=======\n\n"
        "SYNTHETIC GENERATED DATA - this is NOT GroupLens / MovieLens data.\n\n"
        f"Generated by recommender_lib.sources.sample_data (profile '{p.name}', seed {seed})\n"
        "for the "
        "Ciné-Reco platform's tests and demos. The files imitate the layout of the GroupLens\n"
        "ml-latest-small release (ratings.csv, movies.csv, links.csv, tags.csv) but every user,\n"
        "rating, title and tag in them was produced by a random generator. No real person's\n"
        "ratings are included and no endorsement by GroupLens or the University of Minnesota\n"
        f"is implied. Nominal sizes: {p.n_users} users, {p.n_movies} movies.\n"
    )


def _zip_info(name: str) -> zipfile.ZipInfo:
    """A member header with fixed timestamp and permissions (reproducible bytes)."""
    zi = zipfile.ZipInfo(f"{_ML_DIR}/{name}", date_time=_ZIP_DATE)
    zi.create_system = 3
    if name:
        zi.compress_type = zipfile.ZIP_DEFLATED
        zi.external_attr = 0o644 << 16
    else:
        zi.external_attr = (0o40755 << 16) | 0x10
    return zi


def _write_zip(raw: BinaryIO, seed: int, p: SampleProfile, cat: _Catalog, eol: str) -> None:
    """Write the MovieLens zip: README, links, movies, then streamed ratings, then tags."""
    with zipfile.ZipFile(raw, "w") as zf:
        zf.writestr(_zip_info(""), b"")
        zf.writestr(_zip_info("README.txt"), _readme(p, seed).replace("\n", eol))
        zf.writestr(_zip_info("links.csv"), _links_csv(cat, eol))
        zf.writestr(_zip_info("movies.csv"), _movies_csv(cat, eol))
        tags: list[tuple[np.ndarray, ...]] = []
        big = p.n_users * p.mean_ratings_per_user * 40 > 1.5e9
        with zf.open(_zip_info("ratings.csv"), "w", force_zip64=big) as out:
            out.write((",".join(formats.MOVIELENS_FILES["ratings.csv"]) + eol).encode())
            for cols, tag_cols in _user_chunks(seed, p, cat):
                out.write(_ratings_lines(cols, eol).encode())
                tags.append(tag_cols)
        zf.writestr(_zip_info("tags.csv"), _tags_csv(tags, eol))


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_movielens(
    ml_dir: Path, seed: int, p: SampleProfile, cat: _Catalog, eol: str
) -> tuple[Path, Path]:
    """Write the zip and its GroupLens-style `.md5` beside it, both atomically."""
    zip_path = ml_dir / formats.MOVIELENS_DEFAULT_ZIP
    md5_path = ml_dir / f"{formats.MOVIELENS_DEFAULT_ZIP}.md5"
    with atomic_path(zip_path) as tmp:
        with open(tmp, "wb") as raw:
            _write_zip(raw, seed, p, cat, eol)
        digest = _md5(tmp)
    with atomic_path(md5_path) as tmp:
        tmp.write_bytes(f"MD5 ({zip_path.name}) = {digest}\n".encode())
    return zip_path, md5_path


# -------------------------------------------------------------------------------------- API


def write_sample_mirror(
    out_dir: Path, profile: str | SampleProfile = "small", seed: int = 0, *, crlf: bool = True
) -> SampleMirror:
    """Generate the IMDb and MovieLens sample files under `out_dir` (same seed, same bytes)."""
    if isinstance(profile, str) and profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    p = PROFILES[profile] if isinstance(profile, str) else profile
    root = Path(out_dir)
    cat, ids = _make_catalog(seed, p)
    imdb_dir = root / "imdb"
    _write_imdb(imdb_dir, seed, p, ids, cat)
    zip_path, md5_path = _write_movielens(
        root / "movielens", seed, p, cat, "\r\n" if crlf else "\n"
    )
    return SampleMirror(
        root=root,
        imdb_dir=imdb_dir,
        basics=imdb_dir / formats.IMDB_BASICS_FILE,
        ratings=imdb_dir / formats.IMDB_RATINGS_FILE,
        movielens_zip=zip_path,
        movielens_md5=md5_path,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write a sample mirror and print what was written."""
    ap = argparse.ArgumentParser(
        prog="python -m recommender_lib.sources.sample_data", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--profile", choices=sorted(PROFILES), default="small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lf", action="store_true", help="LF line endings in the MovieLens CSVs")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    mirror = write_sample_mirror(args.out, args.profile, args.seed, crlf=not args.lf)
    for path in (mirror.basics, mirror.ratings, mirror.movielens_zip, mirror.movielens_md5):
        print(f"{path}\t{path.stat().st_size:,} bytes")
    print(f"profile {args.profile}, seed {args.seed}: {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
