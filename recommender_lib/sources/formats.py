"""Exact layouts of the source files (docs/architecture.md §5).

These constants are the single source of truth for headers, file names, the tconst spelling and
the IMDb -> MovieLens genre rule: the sample-data generator writes them, the download verifier
checks them and the warehouse SQL reads them.
"""

from __future__ import annotations

IMDB_NULL = r"\N"

IMDB_BASICS_FILE = "title.basics.tsv.gz"
IMDB_RATINGS_FILE = "title.ratings.tsv.gz"
IMDB_AKAS_FILE = "title.akas.tsv.gz"
# Items of the array columns of title.akas (`types`, `attributes`) are separated by \x02.
IMDB_ARRAY_SEPARATOR = "\x02"

IMDB_BASICS_COLUMNS: tuple[str, ...] = (
    "tconst",
    "titleType",
    "primaryTitle",
    "originalTitle",
    "isAdult",
    "startYear",
    "endYear",
    "runtimeMinutes",
    "genres",
)
IMDB_RATINGS_COLUMNS: tuple[str, ...] = ("tconst", "averageRating", "numVotes")
IMDB_AKAS_COLUMNS: tuple[str, ...] = (
    "titleId",
    "ordering",
    "title",
    "region",
    "language",
    "types",
    "attributes",
    "isOriginalTitle",
)

IMDB_HEADERS: dict[str, tuple[str, ...]] = {
    IMDB_BASICS_FILE: IMDB_BASICS_COLUMNS,
    IMDB_RATINGS_FILE: IMDB_RATINGS_COLUMNS,
    IMDB_AKAS_FILE: IMDB_AKAS_COLUMNS,
}
# Values of title.akas `types` IMDb documents (an array: a row may carry several).
IMDB_AKAS_TYPES: tuple[str, ...] = (
    "alternative", "dvd", "festival", "tv", "video", "working", "original", "imdbDisplay",
)  # fmt: skip

IMDB_GENRES: tuple[str, ...] = (
    "Action", "Adult", "Adventure", "Animation", "Biography", "Comedy", "Crime", "Documentary",
    "Drama", "Family", "Fantasy", "Film-Noir", "Game-Show", "History", "Horror", "Music",
    "Musical", "Mystery", "News", "Reality-TV", "Romance", "Sci-Fi", "Short", "Sport",
    "Talk-Show", "Thriller", "War", "Western",
)  # fmt: skip

IMDB_TITLE_TYPES: tuple[str, ...] = (
    "movie", "short", "tvSeries", "tvEpisode", "tvMovie", "tvMiniSeries", "tvSpecial",
    "tvShort", "video", "videoGame", "tvPilot",
)  # fmt: skip

MOVIELENS_DEFAULT_ZIP = "ml-latest-small.zip"
MOVIELENS_FILES: dict[str, tuple[str, ...]] = {
    "ratings.csv": ("userId", "movieId", "rating", "timestamp"),
    "movies.csv": ("movieId", "title", "genres"),
    "links.csv": ("movieId", "imdbId", "tmdbId"),
    "tags.csv": ("userId", "movieId", "tag", "timestamp"),
}
MOVIELENS_NO_GENRES = "(no genres listed)"
MOVIELENS_GENRES: tuple[str, ...] = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western", MOVIELENS_NO_GENRES,
)  # fmt: skip

# The same genre under its MovieLens name, for the genres both vocabularies have. GroupLens lists
# these for a title that IMDb files under them, so the sample generator derives them alike.
IMDB_MOVIELENS_SHARED_GENRES: dict[str, str] = {
    "Action": "Action", "Adventure": "Adventure", "Animation": "Animation",
    "Family": "Children", "Comedy": "Comedy", "Crime": "Crime", "Documentary": "Documentary",
    "Drama": "Drama", "Fantasy": "Fantasy", "Film-Noir": "Film-Noir", "Horror": "Horror",
    "Music": "Musical", "Musical": "Musical", "Mystery": "Mystery", "Romance": "Romance",
    "Sci-Fi": "Sci-Fi", "Thriller": "Thriller", "War": "War", "Western": "Western",
}  # fmt: skip
# IMDb genre -> MovieLens genre for titles that have no MovieLens genres (IMDb-only titles): the
# shared genres plus the nearest MovieLens genre for IMDb genres MovieLens has no name for.
IMDB_TO_MOVIELENS_GENRE: dict[str, str] = {
    **IMDB_MOVIELENS_SHARED_GENRES,
    "Biography": "Drama", "History": "Drama", "Sport": "Drama",
}  # fmt: skip

# tconst = "tt" + the IMDb id zero-padded to at least TCONST_DIGITS digits (more when longer);
# MovieLens links.csv writes the padded digits without the prefix.
TCONST_PREFIX = "tt"
TCONST_DIGITS = 7
TCONST_PATTERN = rf"^{TCONST_PREFIX}\d{{{TCONST_DIGITS},}}$"  # what a valid tconst looks like


def imdb_id_digits(imdb_id: int) -> str:
    """`114709` -> `0114709`: the id as links.csv and the tconst write it."""
    return f"{int(imdb_id):0{TCONST_DIGITS}d}"


def tconst_from_imdb_id(imdb_id: int) -> str:
    """`114709` -> `tt0114709`: at least seven digits, more when the id is longer."""
    return TCONST_PREFIX + imdb_id_digits(imdb_id)


def imdb_id_from_tconst(tconst: str) -> int:
    """`tt0114709` -> `114709`."""
    return int(str(tconst).removeprefix(TCONST_PREFIX))


def tconst_sql(imdb_id: str) -> str:
    """The SQL expression of `tconst_from_imdb_id` over the integer SQL expression `imdb_id`."""
    return f"printf('{TCONST_PREFIX}%0{TCONST_DIGITS}d', {imdb_id})"
