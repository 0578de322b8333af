"""DuckDB warehouse: typed tables loaded straight from the raw files by DuckDB's CSV reader.

Each loader writes `<table>__staging` first; publishing swaps it in for the table and appends a
row to `warehouse_loads` in one transaction, so a load that fails (too many malformed rows, a
missing file, a failed quality gate in `gate.py`) leaves the previous table in place. No pandas
round trip: DuckDB parses the files with explicit column types.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from recommender_lib.sources.formats import (
    IMDB_BASICS_COLUMNS,
    IMDB_NULL,
    IMDB_RATINGS_COLUMNS,
    MOVIELENS_FILES,
    MOVIELENS_NO_GENRES,
    tconst_sql,
)
from recommender_lib.warehouse.storage import open_warehouse, transaction

IMDB_TITLES = "imdb_titles"
MOVIELENS_RATINGS = "movielens_ratings"
MOVIELENS_MOVIES = "movielens_movies"
MOVIE_LINKS = "movie_links"
LOAD_HISTORY = "warehouse_loads"
STAGING_SUFFIX = "__staging"  # a load's rows before they are published
REJECTED_SUFFIX = "__rejected"  # a staged load that failed its gate, kept for inspection

IMDB_BASICS_TYPES = dict(
    zip(
        IMDB_BASICS_COLUMNS,
        ("VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "BOOLEAN", "SMALLINT", "SMALLINT", "INTEGER",
         "VARCHAR"),
        strict=True,
    )
)  # fmt: skip
IMDB_RATINGS_TYPES = dict(zip(IMDB_RATINGS_COLUMNS, ("VARCHAR", "DOUBLE", "INTEGER"), strict=True))
MOVIELENS_TYPES: dict[str, dict[str, str]] = {
    "ratings.csv": {"userId": "INTEGER", "movieId": "INTEGER", "rating": "DOUBLE",
                    "timestamp": "BIGINT"},
    "movies.csv": {"movieId": "INTEGER", "title": "VARCHAR", "genres": "VARCHAR"},
    "links.csv": {"movieId": "INTEGER", "imdbId": "VARCHAR", "tmdbId": "VARCHAR"},
}  # fmt: skip
assert all(tuple(MOVIELENS_TYPES[f]) == MOVIELENS_FILES[f] for f in MOVIELENS_TYPES)

# Leading articles that MovieLens moves to the end: "Matrix, The (1999)" -> "The Matrix".
_ARTICLES = "The|A|An|Les|La|Le|Il|Lo|Der|Die|Das|El|Los|Las|Det|Den"
_YEAR_SUFFIX = r"\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$"


class WarehouseLoadError(RuntimeError):
    """A raw file could not be loaded into a typed table; the previous table is kept."""


@dataclass(frozen=True)
class LoadResult:
    """What one table load did, for run metadata and drift checks."""

    table: str
    row_count: int
    previous_row_count: int | None
    columns: dict[str, str]
    rejected_rows: int = 0
    rejected_examples: list[str] = field(default_factory=list)
    source_version: str | None = None


def connect(path: Path | str, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the warehouse file, creating its folder on first use.

    A corrupt, truncated or foreign file raises `storage.WarehouseUnreadableError` at once.
    """
    return open_warehouse(path, read_only=read_only)


def staging_table(table: str) -> str:
    return f"{table}{STAGING_SUFFIX}"


def rejected_table(table: str) -> str:
    return f"{table}{REJECTED_SUFFIX}"


def _sql_str(value: str | Path) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _columns_struct(types: dict[str, str]) -> str:
    return "{" + ", ".join(f"{_sql_str(k)}: {_sql_str(v)}" for k, v in types.items()) + "}"


def read_imdb_sql(path: Path, types: dict[str, str], rejects: str) -> str:
    """A DuckDB `read_csv` call for an IMDb dump: tabs, no quoting at all, `\\N` for null."""
    return (
        f"read_csv({_sql_str(path)}, delim='\\t', header=true, quote='', escape='', "
        f"nullstr={_sql_str(IMDB_NULL)}, columns={_columns_struct(types)}, "
        f"compression='gzip', store_rejects=true, rejects_table='{rejects}', "
        f"rejects_scan='{rejects}_scan')"
    )


def _read_movielens(path: Path, types: dict[str, str], rejects: str) -> str:
    """A DuckDB `read_csv` call for a MovieLens CSV (RFC 4180 quoting; LF or CRLF)."""
    return (
        f"read_csv({_sql_str(path)}, delim=',', header=true, quote='\"', escape='\"', "
        f"columns={_columns_struct(types)}, store_rejects=true, rejects_table='{rejects}', "
        f"rejects_scan='{rejects}_scan')"
    )


def _ensure_history(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {LOAD_HISTORY} (
            table_name VARCHAR NOT NULL, loaded_at TIMESTAMP NOT NULL, row_count BIGINT NOT NULL,
            rejected_rows BIGINT NOT NULL, source_version VARCHAR)"""
    )


def table_exists(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
    # fetchall: DuckDB 2 keeps a result open after fetchone, which blocks `register` next
    rows = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
    ).fetchall()
    return bool(rows and rows[0][0])


def row_count(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    row = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
    return int(row[0]) if row else 0


def table_schema(conn: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    """Column name -> DuckDB type, in table order."""
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()
    return {name: dtype for name, dtype in rows}


def load_history(conn: duckdb.DuckDBPyConnection, table: str, limit: int = 2) -> list[int]:
    """Row counts of the latest loads of `table`, newest first."""
    if not table_exists(conn, LOAD_HISTORY):
        return []
    rows = conn.execute(
        f"SELECT row_count FROM {LOAD_HISTORY} WHERE table_name = ? "
        "ORDER BY loaded_at DESC LIMIT ?",
        [table, limit],
    ).fetchall()
    return [int(r[0]) for r in rows]


def _rejects(conn: duckdb.DuckDBPyConnection, rejects: str) -> tuple[int, list[str]]:
    count = conn.execute(f"SELECT count(*) FROM {rejects}").fetchone()
    examples = conn.execute(
        f"SELECT 'line ' || line || ', column ' || coalesce(column_name, '?') || ': ' || "
        f"error_message FROM {rejects} ORDER BY line LIMIT 5"
    ).fetchall()
    return (int(count[0]) if count else 0), [e[0] for e in examples]


def replace_table(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    select_sql: str,
    reject_tables: list[tuple[str, str]],
    *,
    max_reject_share: float,
    source_version: str | None,
    publish: bool = True,
) -> LoadResult:
    """Load `select_sql` into `<table>__staging`, refusing too many malformed rows, then (with
    `publish`) swap it in for `table` atomically (`publish_staged`).

    `reject_tables` pairs each file's DuckDB rejects table with a label for error messages. With
    `publish=False` the rows stay staged for a gate (`gate.load_gated`); the table is untouched.
    """
    _ensure_history(conn)
    previous = row_count(conn, table) if table_exists(conn, table) else None
    staging = staging_table(table)
    try:
        with transaction(conn):
            conn.execute(f'CREATE OR REPLACE TABLE "{staging}" AS {select_sql}')
            rows = row_count(conn, staging)
            rejected, examples = 0, []
            for rejects, label in reject_tables:
                n, ex = _rejects(conn, rejects)
                rejected += n
                examples += [f"{label}: {e}" for e in ex]
            if rejected and rejected > max_reject_share * max(rows + rejected, 1):
                raise WarehouseLoadError(
                    f"{table}: {rejected} malformed source rows against {rows} loaded rows "
                    f"(limit {max_reject_share:.2%}); first: {'; '.join(examples[:3])}"
                )
    except duckdb.Error as exc:
        raise WarehouseLoadError(f"{table}: load failed, previous table kept: {exc}") from exc
    finally:
        for rejects, _ in reject_tables:
            conn.execute(f"DROP TABLE IF EXISTS {rejects}")
            conn.execute(f"DROP TABLE IF EXISTS {rejects}_scan")
    staged = LoadResult(
        table=table,
        row_count=rows,
        previous_row_count=previous,
        columns=table_schema(conn, staging),
        rejected_rows=rejected,
        rejected_examples=examples,
        source_version=source_version,
    )
    return publish_staged(conn, staged) if publish else staged


def publish_staged(conn: duckdb.DuckDBPyConnection, staged: LoadResult) -> LoadResult:
    """Swap `<table>__staging` in for the table and record the load, in one transaction.

    A stale `<table>__rejected` goes too: the table now holds a load that passed.
    """
    table = staged.table
    with transaction(conn):
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        conn.execute(f'ALTER TABLE "{staging_table(table)}" RENAME TO "{table}"')
        conn.execute(f'DROP TABLE IF EXISTS "{rejected_table(table)}"')
        conn.execute(
            f"INSERT INTO {LOAD_HISTORY} VALUES (?, ?, ?, ?, ?)",
            [table, datetime.now(UTC).replace(tzinfo=None), staged.row_count,
             staged.rejected_rows, staged.source_version],
        )  # fmt: skip
    return replace(staged, columns=table_schema(conn, table))


def reject_staged(conn: duckdb.DuckDBPyConnection, table: str) -> str:
    """Keep `<table>__staging` as `<table>__rejected` (replacing an older one); its name."""
    rejected = rejected_table(table)
    with transaction(conn):
        conn.execute(f'DROP TABLE IF EXISTS "{rejected}"')
        conn.execute(f'ALTER TABLE "{staging_table(table)}" RENAME TO "{rejected}"')
    return rejected


def load_imdb_titles(
    conn: duckdb.DuckDBPyConnection,
    basics_path: Path,
    ratings_path: Path,
    *,
    source_version: str | None = None,
    max_reject_share: float = 0.001,
    publish: bool = True,
) -> LoadResult:
    """`imdb_titles` = title.basics ⋈ title.ratings, typed, genres as a LIST."""
    select = f"""
        SELECT
            b.tconst,
            b.titleType AS title_type,
            b.primaryTitle AS primary_title,
            b.originalTitle AS original_title,
            coalesce(b.isAdult, false) AS is_adult,
            b.startYear AS start_year,
            b.endYear AS end_year,
            b.runtimeMinutes AS runtime_minutes,
            CASE WHEN b.genres IS NULL THEN []::VARCHAR[]
                 ELSE string_split(b.genres, ',') END AS genres,
            r.averageRating AS average_rating,
            r.numVotes AS num_votes
        FROM {read_imdb_sql(basics_path, IMDB_BASICS_TYPES, "rejects_basics")} AS b
        JOIN {read_imdb_sql(ratings_path, IMDB_RATINGS_TYPES, "rejects_ratings")} AS r
            USING (tconst)
        ORDER BY b.tconst
    """
    return replace_table(
        conn,
        IMDB_TITLES,
        select,
        [("rejects_basics", basics_path.name), ("rejects_ratings", ratings_path.name)],
        max_reject_share=max_reject_share,
        source_version=source_version,
        publish=publish,
    )


@dataclass(frozen=True)
class MovieLensTable:
    """A warehouse table loaded by one SELECT over one CSV file of a MovieLens release folder;
    calling it replaces the table (`{source}` in `select` is the typed read of the file)."""

    table: str
    filename: str
    select: str

    def __call__(
        self,
        conn: duckdb.DuckDBPyConnection,
        release_dir: Path,
        *,
        source_version: str | None = None,
        max_reject_share: float = 0.0,
        publish: bool = True,
    ) -> LoadResult:
        path = Path(release_dir) / self.filename
        if not path.is_file():
            raise WarehouseLoadError(f"MovieLens release at {release_dir} has no {self.filename}")
        rejects = f"rejects_{self.table}"
        source = _read_movielens(path, MOVIELENS_TYPES[self.filename], rejects)
        return replace_table(
            conn,
            self.table,
            self.select.replace("{source}", source),
            [(rejects, self.filename)],
            max_reject_share=max_reject_share,
            source_version=source_version,
            publish=publish,
        )


# `movielens_ratings`: one row per (user, movie), ordered by user then time.
load_movielens_ratings = MovieLensTable(
    MOVIELENS_RATINGS,
    "ratings.csv",
    """
        SELECT userId AS user_id, movieId AS movie_id, rating,
               timestamp AS rating_ts, make_timestamp(timestamp * 1000000) AS rated_at
        FROM {source}
        ORDER BY user_id, rating_ts, movie_id
    """,
)

# `movielens_movies`: clean title (article restored, year removed), year, genre LIST.
_NO_YEAR = f"regexp_replace(trim(title), '{_YEAR_SUFFIX}', '')"
load_movielens_movies = MovieLensTable(
    MOVIELENS_MOVIES,
    "movies.csv",
    f"""
        SELECT
            movieId AS movie_id,
            regexp_replace(
                regexp_replace({_NO_YEAR}, '^(.*?), (L'')((?: \\(.*\\))?)$', '\\2\\1\\3'),
                '^(.*?), ({_ARTICLES})((?: \\(.*\\))?)$', '\\2 \\1\\3') AS title,
            try_cast(regexp_extract(trim(title), '{_YEAR_SUFFIX}', 1) AS SMALLINT) AS year,
            CASE WHEN genres IS NULL OR genres = {_sql_str(MOVIELENS_NO_GENRES)}
                 THEN []::VARCHAR[] ELSE string_split(genres, '|') END AS genres,
            title AS raw_title
        FROM {{source}}
        ORDER BY movie_id
    """,
)

# `movie_links`: movieId -> tconst (`tt` + imdbId zero-padded to at least 7 digits).
load_movie_links = MovieLensTable(
    MOVIE_LINKS,
    "links.csv",
    f"""
        SELECT
            movieId AS movie_id,
            CAST(imdbId AS BIGINT) AS imdb_id,
            {tconst_sql("CAST(imdbId AS BIGINT)")} AS tconst,
            try_cast(nullif(trim(tmdbId), '') AS BIGINT) AS tmdb_id
        FROM {{source}}
        ORDER BY movie_id
    """,
)


def load_movielens_release(
    conn: duckdb.DuckDBPyConnection, release_dir: Path, *, source_version: str | None = None
) -> list[LoadResult]:
    """Load `movielens_ratings`, `movielens_movies` and `movie_links` from one release folder."""
    return [
        load(conn, release_dir, source_version=source_version)
        for load in (load_movielens_ratings, load_movielens_movies, load_movie_links)
    ]


def link_coverage(conn: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(links whose tconst is in `imdb_titles`, all links)."""
    row = conn.execute(
        f"""SELECT count(t.tconst), count(*) FROM {MOVIE_LINKS} l
            LEFT JOIN {IMDB_TITLES} t USING (tconst)"""
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def duplicate_keys(
    conn: duckdb.DuckDBPyConnection, table: str, keys: list[str], limit: int = 5
) -> tuple[int, list[tuple]]:
    """(number of key values that occur more than once, a few examples with their counts)."""
    cols = ", ".join(f'"{k}"' for k in keys)
    dupes = f'SELECT {cols}, count(*) AS n FROM "{table}" GROUP BY ALL HAVING count(*) > 1'
    total = conn.execute(f"SELECT count(*) FROM ({dupes})").fetchone()
    examples = conn.execute(f"{dupes} ORDER BY n DESC LIMIT {int(limit)}").fetchall()
    return (int(total[0]) if total else 0), examples


def preview_markdown(conn: duckdb.DuckDBPyConnection, table: str, n: int = 5) -> str:
    """The first `n` rows of `table` as a markdown table."""
    cursor = conn.execute(f'SELECT * FROM "{table}" LIMIT {int(n)}')
    header = [d[0] for d in cursor.description]
    return markdown_table(header, cursor.fetchall())


def markdown_table(header: list[str], rows: list[tuple]) -> str:
    """A GitHub-flavoured markdown table; cells have `|` and newlines escaped."""

    def cell(value: object) -> str:
        text = "" if value is None else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def source_versions(conn: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Source (dump) version of the latest load of every warehouse table."""
    if not table_exists(conn, LOAD_HISTORY):
        return {}
    rows = conn.execute(
        f"SELECT table_name, arg_max(source_version, loaded_at) FROM {LOAD_HISTORY} GROUP BY 1"
    ).fetchall()
    return {table: version or "" for table, version in sorted(rows)}
