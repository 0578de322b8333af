"""Exact layouts of the source files (DESIGN.md §5).

These constants are the single source of truth for headers and file names: the sample-data
generator writes them, the download verifier checks them and the warehouse SQL reads them.
"""

from __future__ import annotations

IMDB_NULL = r"\N"

IMDB_BASICS_FILE = "title.basics.tsv.gz"
IMDB_RATINGS_FILE = "title.ratings.tsv.gz"

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

IMDB_HEADERS: dict[str, tuple[str, ...]] = {
    IMDB_BASICS_FILE: IMDB_BASICS_COLUMNS,
    IMDB_RATINGS_FILE: IMDB_RATINGS_COLUMNS,
}

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


def tconst_from_imdb_id(imdb_id: int) -> str:
    """`114709` -> `tt0114709`: at least seven digits, more when the id is longer."""
    return f"tt{int(imdb_id):07d}"
