"""Warehouse loaders: typed tables straight from the raw files, failures keep the old table."""

from __future__ import annotations

import gzip
from pathlib import Path

import duckdb
import pytest

from recommender_lib.sources.formats import IMDB_BASICS_COLUMNS, IMDB_RATINGS_COLUMNS
from recommender_lib.warehouse import tables as warehouse

BASICS_ROWS = [
    'tt0000001\tshort\t"Giliap"\t"Giliap"\t0\t1894\t\\N\t1\tDocumentary,Short',
    "tt0114709\tmovie\tToy Story\tToy Story\t0\t1995\t\\N\t81\tAdventure,Animation,Comedy",
    "tt0000003\tmovie\tNo Rating\tNo Rating\t0\t2001\t\\N\t90\tDrama",
    'tt10000001\ttvSeries\tÉté 85, "le" retour\tÉté\t1\t\\N\t\\N\t\\N\t\\N',
]
RATINGS_ROWS = ["tt0000001\t5.6\t2000", "tt0114709\t8.3\t1000000", "tt10000001\t7.0\t15"]


def _write_tsv_gz(path: Path, header: tuple[str, ...], rows: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        f.write("\t".join(header) + "\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture
def imdb_files(tmp_path: Path) -> tuple[Path, Path]:
    return (
        _write_tsv_gz(tmp_path / "title.basics.tsv.gz", IMDB_BASICS_COLUMNS, BASICS_ROWS),
        _write_tsv_gz(tmp_path / "title.ratings.tsv.gz", IMDB_RATINGS_COLUMNS, RATINGS_ROWS),
    )


def test_imdb_titles_typed_join(imdb_files: tuple[Path, Path]) -> None:
    conn = warehouse.connect(":memory:")
    result = warehouse.load_imdb_titles(conn, *imdb_files, source_version="v1")
    assert result.row_count == 3  # tt0000003 has no ratings row
    assert result.previous_row_count is None
    assert result.columns["genres"] == "VARCHAR[]"
    assert result.columns["start_year"] == "SMALLINT"
    rows = {r[0]: r for r in conn.execute("SELECT * FROM imdb_titles").fetchall()}
    assert rows["tt0000001"][2] == '"Giliap"'  # a leading quote is data, not quoting
    assert rows["tt0114709"][8] == ["Adventure", "Animation", "Comedy"]
    assert rows["tt0114709"][9:] == (8.3, 1_000_000)
    series = rows["tt10000001"]
    assert series[2] == 'Été 85, "le" retour'
    assert series[4] is True and series[5] is None and series[7] is None and series[8] == []
    assert warehouse.load_history(conn, "imdb_titles") == [3]


def test_malformed_rows_are_counted_then_refused(tmp_path: Path, imdb_files) -> None:
    basics, ratings = imdb_files
    conn = warehouse.connect(tmp_path / "w.duckdb")
    warehouse.load_imdb_titles(conn, basics, ratings)
    bad = [*BASICS_ROWS, "tt0000009\tmovie\tShifted\tShifted\t0\t2001\t\\N\tReality-TV\tDrama"]
    bad_basics = _write_tsv_gz(tmp_path / "bad.tsv.gz", IMDB_BASICS_COLUMNS, bad)

    tolerant = warehouse.load_imdb_titles(conn, bad_basics, ratings, max_reject_share=0.5)
    assert tolerant.rejected_rows == 1
    assert "runtimeMinutes" in tolerant.rejected_examples[0]

    with pytest.raises(
        warehouse.WarehouseLoadError, match=r"1 malformed source rows against 3 loaded"
    ):
        warehouse.load_imdb_titles(conn, bad_basics, ratings, max_reject_share=0.001)
    # The refused load rolled back: the table and its history are as before.
    assert warehouse.row_count(conn, "imdb_titles") == 3
    assert warehouse.load_history(conn, "imdb_titles", limit=5) == [3, 3]


def test_missing_file_keeps_previous_table(tmp_path: Path, imdb_files) -> None:
    conn = warehouse.connect(tmp_path / "w.duckdb")
    warehouse.load_imdb_titles(conn, *imdb_files)
    with pytest.raises(warehouse.WarehouseLoadError, match="previous table kept"):
        warehouse.load_imdb_titles(conn, tmp_path / "gone.tsv.gz", imdb_files[1])
    assert warehouse.row_count(conn, "imdb_titles") == 3


def _write_release(root: Path, newline: str) -> Path:
    release = root / "ml-test"
    release.mkdir()
    files = {
        "movies.csv": ["movieId,title,genres", "1,Toy Story (1995),Adventure|Animation|IMAX",
                       '2,"American President, The (1995)",Comedy|Drama',
                       '3,"Cité des enfants perdus, La (City of Lost Children, The) (1995)",Drama',
                       "4,Babylon 5,(no genres listed)",
                       "5,\"Auberge espagnole, L' (2002)\",Comedy",
                       "6,Big Bang Theory (2007-2019),Comedy"],
        "ratings.csv": ["userId,movieId,rating,timestamp", "1,2,3.5,964982703",
                        "1,1,4.0,964982224", "2,1,0.5,1445714835"],
        "links.csv": ["movieId,imdbId,tmdbId", "1,0114709,862", "2,0112346,",
                      "3,0112682,902", "4,10000001,", "5,0283900,1555", "6,0898266,1418"],
    }  # fmt: skip
    for name, lines in files.items():
        (release / name).write_bytes((newline.join(lines) + newline).encode())
    return release


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_movielens_tables(tmp_path: Path, newline: str) -> None:
    release = _write_release(tmp_path, newline)
    conn = warehouse.connect(":memory:")
    assert warehouse.load_movielens_ratings(conn, release).row_count == 3
    assert warehouse.load_movielens_movies(conn, release).row_count == 6
    assert warehouse.load_movie_links(conn, release).row_count == 6

    ratings = conn.execute("SELECT user_id, movie_id, rating, rated_at FROM movielens_ratings")
    first = ratings.fetchall()[0]
    assert first[:3] == (1, 1, 4.0)  # ordered by user, then time
    assert str(first[3]) == "2000-07-30 18:37:04"
    movies = dict(conn.execute("SELECT movie_id, [title, year::VARCHAR] FROM movielens_movies")
                  .fetchall())  # fmt: skip
    assert movies[1] == ["Toy Story", "1995"]
    assert movies[2] == ["The American President", "1995"]
    assert movies[3] == ["La Cité des enfants perdus (City of Lost Children, The)", "1995"]
    assert movies[4] == ["Babylon 5", None]
    assert movies[5] == ["L'Auberge espagnole", "2002"]
    assert movies[6] == ["Big Bang Theory", "2007"]
    genres = dict(conn.execute("SELECT movie_id, genres FROM movielens_movies").fetchall())
    assert genres[1] == ["Adventure", "Animation", "IMAX"] and genres[4] == []
    links = {r[0]: r[1:] for r in conn.execute("SELECT * FROM movie_links").fetchall()}
    assert links[1] == (114709, "tt0114709", 862)
    assert links[2] == (112346, "tt0112346", None)
    assert links[4] == (10000001, "tt10000001", None)  # eight digits stay eight


def test_movielens_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(warehouse.WarehouseLoadError, match=r"has no ratings\.csv"):
        warehouse.load_movielens_ratings(duckdb.connect(), tmp_path)


@pytest.mark.shared_data
def test_real_movielens_release(shared_movielens: Path) -> None:
    release = shared_movielens / "ml-latest-small"
    conn = warehouse.connect(":memory:")
    assert warehouse.load_movielens_ratings(conn, release).row_count == 100_836
    assert warehouse.load_movielens_movies(conn, release).row_count == 9_742
    links = warehouse.load_movie_links(conn, release)
    assert links.row_count == 9_742 and links.rejected_rows == 0
    (users, lo, hi) = conn.execute(
        "SELECT count(DISTINCT user_id), min(rating), max(rating) FROM movielens_ratings"
    ).fetchone()
    assert (users, lo, hi) == (610, 0.5, 5.0)
    assert conn.execute("SELECT tconst FROM movie_links WHERE movie_id = 1").fetchone() == (
        "tt0114709",
    )
    assert conn.execute("SELECT count(*) FROM movie_links WHERE tmdb_id IS NULL").fetchone()[0] == 8
    no_year = conn.execute("SELECT count(*) FROM movielens_movies WHERE year IS NULL").fetchone()
    assert 0 < no_year[0] < 20
