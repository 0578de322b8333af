"""Quality rules on crafted tables: each passes on good data and fails on a crafted bad row."""

from __future__ import annotations

import duckdb
import pytest

from recommender_lib.warehouse import quality
from recommender_lib.warehouse import tables as warehouse
from recommender_lib.warehouse.schemas import WAREHOUSE_KEYS, WAREHOUSE_SCHEMAS

GOOD_ROWS = {
    warehouse.IMDB_TITLES: """
        SELECT * FROM (VALUES
          ('tt0114709', 'movie', 'Toy Story', 'Toy Story', false, 1995::SMALLINT, NULL::SMALLINT,
           81, ['Adventure', 'Animation', 'Comedy'], 8.3::DOUBLE, 1100000),
          ('tt10000001', 'tvSeries', '"Giliap"', '"Giliap"', false, 2019::SMALLINT,
           2021::SMALLINT, NULL, []::VARCHAR[], 6.1, 12)
        ) t(tconst, title_type, primary_title, original_title, is_adult, start_year, end_year,
            runtime_minutes, genres, average_rating, num_votes)""",
    warehouse.MOVIELENS_RATINGS: """
        SELECT * FROM (VALUES (1, 1, 4.5::DOUBLE, 964982703::BIGINT),
                              (1, 2, 0.5, 964982704::BIGINT),
                              (2, 1, 5.0, 1500000000::BIGINT)) t(user_id, movie_id, rating, ts)
        """,
    warehouse.MOVIELENS_MOVIES: """
        SELECT * FROM (VALUES (1, 'Toy Story', 1995::SMALLINT, ['Animation', 'IMAX'],
                               'Toy Story (1995)'),
                              (2, 'Babylon 5', NULL::SMALLINT, []::VARCHAR[], 'Babylon 5')
        ) t(movie_id, title, year, genres, raw_title)""",
    warehouse.MOVIE_LINKS: """
        SELECT * FROM (VALUES (1, 114709::BIGINT, 'tt0114709', 862::BIGINT),
                              (2, 10000001::BIGINT, 'tt10000001', NULL::BIGINT)
        ) t(movie_id, imdb_id, tconst, tmdb_id)""",
}

# Crafted defects per table, and the column (or check) the failure must name.
BAD_UPDATES = {
    warehouse.IMDB_TITLES: [
        ("UPDATE imdb_titles SET tconst = 'tt123' WHERE num_votes = 12", "tconst"),
        ("UPDATE imdb_titles SET average_rating = 11.0 WHERE num_votes = 12", "average_rating"),
        ("UPDATE imdb_titles SET num_votes = 0 WHERE num_votes = 12", "num_votes"),
        ("UPDATE imdb_titles SET start_year = 1066 WHERE num_votes = 12", "start_year"),
        ("UPDATE imdb_titles SET genres = ['Cartoon'] WHERE num_votes = 12", "genres"),
        ("UPDATE imdb_titles SET end_year = 1990 WHERE num_votes = 12", "end_year >= start_year"),
    ],
    warehouse.MOVIELENS_RATINGS: [
        ("UPDATE movielens_ratings SET rating = 4.2 WHERE user_id = 2", "rating"),
        ("UPDATE movielens_ratings SET rating = 5.5 WHERE user_id = 2", "rating"),
        ("UPDATE movielens_ratings SET movie_id = 2 WHERE rating = 4.5", "uniqueness"),
        ("UPDATE movielens_ratings SET rating_ts = 12 WHERE user_id = 2", "rating_ts"),
    ],
    warehouse.MOVIELENS_MOVIES: [
        ("UPDATE movielens_movies SET genres = ['Cartoon'] WHERE movie_id = 2", "genres"),
        ("UPDATE movielens_movies SET title = '' WHERE movie_id = 2", "title"),
        ("UPDATE movielens_movies SET movie_id = 1 WHERE movie_id = 2", "movie_id"),
    ],
    warehouse.MOVIE_LINKS: [
        ("UPDATE movie_links SET tconst = 'nm0000001' WHERE movie_id = 2", "tconst"),
        ("UPDATE movie_links SET tmdb_id = -3 WHERE movie_id = 2", "tmdb_id"),
    ],
}


def _make(conn: duckdb.DuckDBPyConnection, table: str) -> None:
    if table == warehouse.MOVIELENS_RATINGS:
        conn.execute(
            f"CREATE OR REPLACE TABLE {table} AS SELECT user_id, movie_id, rating, ts AS rating_ts,"
            f" make_timestamp(ts * 1000000) AS rated_at FROM ({GOOD_ROWS[table]})"
        )
    else:
        conn.execute(f"CREATE OR REPLACE TABLE {table} AS {GOOD_ROWS[table]}")


@pytest.fixture
def conn() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect(":memory:")
    for table in GOOD_ROWS:
        _make(c, table)
    return c


@pytest.mark.parametrize("table", list(GOOD_ROWS))
def test_schema_passes_on_good_rows(conn: duckdb.DuckDBPyConnection, table: str) -> None:
    result = quality.validate_table(conn, table, WAREHOUSE_SCHEMAS[table])
    assert result.passed, result.failure_cases
    assert result.details["rows_checked"] == warehouse.row_count(conn, table)


@pytest.mark.parametrize(
    ("table", "update", "column"),
    [(t, u, c) for t, cases in BAD_UPDATES.items() for u, c in cases],
)
def test_schema_fails_on_crafted_bad_row(
    conn: duckdb.DuckDBPyConnection, table: str, update: str, column: str
) -> None:
    conn.execute(update)
    result = quality.validate_table(conn, table, WAREHOUSE_SCHEMAS[table])
    assert not result.passed
    assert result.failure_cases is not None and len(result.failure_cases) >= 1
    assert any(column in c for c in result.details["failed_checks"]), result.details


def test_validation_in_chunks_reports_row_index_across_chunks() -> None:
    conn = duckdb.connect(":memory:")
    conn.execute(
        "CREATE TABLE movielens_ratings AS SELECT (i // 10 + 1)::INTEGER AS user_id, "
        "(i % 10 + 1)::INTEGER AS movie_id, CASE WHEN i = 9000 THEN 7.0 ELSE 3.5 END AS rating,"
        " 964982703::BIGINT + i AS rating_ts, make_timestamp((964982703 + i) * 1000000) AS"
        " rated_at FROM range(10000) r(i)"
    )
    result = quality.validate_table(
        conn, "movielens_ratings", WAREHOUSE_SCHEMAS["movielens_ratings"], chunk_rows=2048
    )
    assert not result.passed
    assert result.details["rows_checked"] == 10000
    assert result.details["failure_count"] == 1
    assert int(result.failure_cases["index"].iloc[0]) == 9000
    assert float(result.failure_cases["failure_case"].iloc[0]) == 7.0


@pytest.mark.parametrize("table", list(GOOD_ROWS))
def test_unique_keys(conn: duckdb.DuckDBPyConnection, table: str) -> None:
    keys = WAREHOUSE_KEYS[table]
    assert quality.check_unique_keys(conn, table, keys).passed
    conn.execute(f"INSERT INTO {table} SELECT * FROM {table} LIMIT 1")
    result = quality.check_unique_keys(conn, table, keys)
    assert not result.passed
    assert result.details["duplicate_keys"] == 1
    assert list(result.failure_cases.columns) == [*keys, "occurrences"]


def test_link_coverage(conn: duckdb.DuckDBPyConnection) -> None:
    assert quality.check_link_coverage(conn, 0.9).passed
    conn.execute("DELETE FROM imdb_titles WHERE tconst = 'tt10000001'")
    result = quality.check_link_coverage(conn, 0.9)
    assert not result.passed
    assert result.details["coverage"] == 0.5
    assert "1/2" in result.summary


def _record_load(conn: duckdb.DuckDBPyConnection, table: str, rows: int, when: int) -> None:
    warehouse._ensure_history(conn)
    conn.execute(
        f"INSERT INTO {warehouse.LOAD_HISTORY} VALUES (?, make_timestamp(?), ?, 0, NULL)",
        [table, when * 1_000_000, rows],
    )


@pytest.mark.parametrize(
    ("previous", "current", "passed"),
    [(1000, 1000, True), (1000, 600, True), (1000, 400, False), (1000, 5000, True),
     (1000, 7000, False), (0, 10, False)],
)  # fmt: skip
def test_row_count_drift(previous: int, current: int, passed: bool) -> None:
    conn = duckdb.connect(":memory:")
    assert not quality.check_row_count_drift(conn, "t", 0.5, 5.0).passed  # never loaded
    _record_load(conn, "t", previous, 1)
    assert quality.check_row_count_drift(conn, "t", 0.5, 5.0).passed  # first load
    _record_load(conn, "t", current, 2)
    result = quality.check_row_count_drift(conn, "t", 0.5, 5.0)
    assert result.passed is passed
    assert result.details["previous_row_count"] == previous
