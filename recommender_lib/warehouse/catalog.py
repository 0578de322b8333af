"""The recommendable catalogue (docs/architecture.md §3 `catalog`): one row per title, in DuckDB
SQL.

Every MovieLens movie is in the catalogue (rated or not), with its IMDb metadata where a link
exists; IMDb titles that no MovieLens movie links to join it when they pass `CatalogFilters`
(title type, votes, adult). Item ids: MovieLens titles keep their positive `movie_id`; IMDb-only
titles get `-int(tconst[2:])`, so the two never collide (`imdb_only_item_id`).

`genres` is the catalogue's one genre vocabulary, used by the content vectors, the model and the
serving filters alike: the MovieLens genres, or for titles without any, the IMDb genres mapped
onto MovieLens names (`IMDB_TO_MOVIELENS_GENRE`; unmapped IMDb genres such as `Reality-TV` are
kept as they are).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pandas as pd

from recommender_lib.sources.formats import (
    IMDB_TITLE_TYPES,
    IMDB_TO_MOVIELENS_GENRE,
    imdb_id_from_tconst,
)
from recommender_lib.warehouse.tables import (
    IMDB_TITLES,
    MOVIE_LINKS,
    MOVIELENS_MOVIES,
    LoadResult,
    replace_table,
    table_exists,
)

CATALOG = "catalog"
DEFAULT_SCOPE = "default"  # popular titles: the default `CatalogFilters`
WHOLE_IMDB = "whole_imdb"  # every rated IMDb title: `CatalogFilters.whole_imdb()`
CATALOG_SCOPES = (DEFAULT_SCOPE, WHOLE_IMDB)

_YEAR_SUFFIX = r"\s*\(\d{4}(?:[-–]\d{0,4})?\)\s*$"


def imdb_only_item_id(tconst: str) -> int:
    """Item id of an IMDb title without a MovieLens movie: `tt0114709` -> -114709."""
    return -imdb_id_from_tconst(tconst)


@dataclass(frozen=True)
class CatalogFilters:
    """Which IMDb titles without a MovieLens movie are recommendable (MovieLens ones always are)."""

    title_types: tuple[str, ...] = ("movie", "tvMovie", "tvSeries", "tvMiniSeries")
    min_votes: int = 1000
    include_adult: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.title_types) - set(IMDB_TITLE_TYPES))
        if unknown:
            raise ValueError(f"unknown IMDb title types {unknown}; known: {list(IMDB_TITLE_TYPES)}")
        if self.min_votes < 0:
            raise ValueError(f"min_votes must be >= 0, got {self.min_votes}")

    @classmethod
    def whole_imdb(cls, min_votes: int = 1) -> CatalogFilters:
        """Every rated IMDb title with at least `min_votes` votes, of every title type (episodes,
        shorts, video games too; ~1.5 M titles on the real dumps); adult titles stay out.
        Titles without a ratings row are never in `imdb_titles`, so `min_votes=1` is all of
        them (docs/architecture.md §4.5)."""
        return cls(title_types=IMDB_TITLE_TYPES, min_votes=min_votes)

    @classmethod
    def named(cls, scope: str) -> CatalogFilters:
        """The filters of a named catalogue scope (`CATALOG_SCOPES`); ValueError otherwise."""
        if scope not in CATALOG_SCOPES:
            raise ValueError(f"unknown catalogue scope {scope!r}; known: {list(CATALOG_SCOPES)}")
        return cls.whole_imdb() if scope == WHOLE_IMDB else cls()


def _mapped_imdb_genres(column: str) -> str:
    cases = " ".join(
        f"WHEN '{imdb}' THEN '{ml}'" for imdb, ml in IMDB_TO_MOVIELENS_GENRE.items() if imdb != ml
    )
    return (
        f"list_sort(list_distinct(list_transform({column}, lambda g: CASE g {cases} ELSE g END)))"
    )


def catalog_sql(conn: duckdb.DuckDBPyConnection, filters: CatalogFilters | None) -> str:
    """SELECT of the catalogue rows (ordered by item id); `filters=None` -> MovieLens titles only.

    Works on whatever warehouse tables exist: without IMDb titles or links, the IMDb columns are
    NULL and only MovieLens titles are returned.
    """
    has_imdb = table_exists(conn, IMDB_TITLES)
    has_links = table_exists(conn, MOVIE_LINKS)
    link_join = f"LEFT JOIN {MOVIE_LINKS} l USING (movie_id)" if has_links else ""
    tconst = "l.tconst" if has_links else "NULL::VARCHAR"
    if has_imdb and has_links:
        imdb_cols = """t.title_type, t.primary_title, t.genres, t.start_year,
            t.runtime_minutes, t.average_rating, t.num_votes"""
        imdb_join = f"LEFT JOIN {IMDB_TITLES} t ON t.tconst = l.tconst"
    else:
        imdb_cols = """NULL::VARCHAR, NULL::VARCHAR, NULL::VARCHAR[], NULL::INTEGER,
            NULL::INTEGER, NULL::DOUBLE, NULL::BIGINT"""
        imdb_join = ""
    union = ""
    if filters is not None and has_imdb:
        unlinked = f"WHERE tconst NOT IN (SELECT tconst FROM {MOVIE_LINKS})" if has_links else ""
        types = ", ".join(f"'{t}'" for t in filters.title_types) or "NULL"
        adult = "" if filters.include_adult else "AND NOT t.is_adult"
        union = f"""
        UNION ALL
        SELECT -CAST(substr(t.tconst, 3) AS BIGINT), t.tconst, NULL, NULL, NULL, NULL,
               t.title_type, t.primary_title, t.genres, t.start_year, t.runtime_minutes,
               t.average_rating, t.num_votes
        FROM (SELECT * FROM {IMDB_TITLES} {unlinked}) t
        WHERE t.title_type IN ({types}) {adult} AND t.num_votes >= {int(filters.min_votes)}
        """
    return f"""
        WITH rows (item_id, tconst, movie_id, ml_title, ml_genres, ml_year, title_type,
                   imdb_title, imdb_genres, imdb_year, runtime, imdb_rating, imdb_votes) AS (
            SELECT m.movie_id, {tconst}, m.movie_id,
                   coalesce(nullif(trim(regexp_replace(m.title, '{_YEAR_SUFFIX}', '')), ''),
                            m.title),
                   m.genres, m.year, {imdb_cols}
            FROM {MOVIELENS_MOVIES} m {link_join} {imdb_join}
            {union}
        )
        SELECT item_id, tconst, movie_id::BIGINT AS movie_id,
               coalesce(title_type, 'movie') AS title_type,
               coalesce(imdb_title, ml_title) AS title,
               CASE WHEN len(coalesce(ml_genres, [])) > 0 THEN ml_genres
                    ELSE coalesce({_mapped_imdb_genres("imdb_genres")}, []) END AS genres,
               coalesce(ml_year, imdb_year)::INTEGER AS year, ml_genres, ml_year, imdb_genres,
               imdb_year, runtime, imdb_rating, imdb_votes
        FROM rows
        QUALIFY row_number() OVER (PARTITION BY item_id ORDER BY tconst NULLS LAST) = 1
        ORDER BY item_id
    """


def build_catalog(conn: duckdb.DuckDBPyConnection, filters: CatalogFilters) -> LoadResult:
    """(Re)create the `catalog` table in one transaction (recorded in the load history)."""
    if not table_exists(conn, MOVIELENS_MOVIES):
        raise ValueError(f"the warehouse has no {MOVIELENS_MOVIES} table: load MovieLens first")
    return replace_table(
        conn, CATALOG, catalog_sql(conn, filters), [], max_reject_share=0.0, source_version=None
    )


def served_catalog_table(conn: duckdb.DuckDBPyConnection) -> str | None:
    """`catalog` where it has been built (MovieLens + IMDb titles), else None: MovieLens only."""
    return CATALOG if table_exists(conn, CATALOG) else None


def load_catalog(conn: duckdb.DuckDBPyConnection, table: str = CATALOG) -> pd.DataFrame:
    """The catalogue table as a DataFrame (genres as Python lists), ordered by item id."""
    return conn.execute(f'SELECT * FROM "{table}" ORDER BY item_id').df()
