"""The catalogue table and the content vectors built from it."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recommender_lib.index.content import ContentFeatures, ContentTransform, content_vectors
from recommender_lib.sources.formats import IMDB_BASICS_COLUMNS, IMDB_RATINGS_COLUMNS
from recommender_lib.warehouse import tables as warehouse
from recommender_lib.warehouse.catalog import (
    CATALOG,
    CatalogFilters,
    build_catalog,
    imdb_only_item_id,
    load_catalog,
)


def _tsv_gz(path: Path, header: tuple[str, ...], rows: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        f.write("\t".join(header) + "\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture
def conn(tmp_path: Path):
    ml = tmp_path / "ml"
    ml.mkdir()
    (ml / "movies.csv").write_text(
        'movieId,title,genres\n1,"Matrix, The (1999)",Action|Sci-Fi\n'
        "2,No Genres (2005),(no genres listed)\n3,Unlinked (2001),Drama\n"
    )
    (ml / "links.csv").write_text("movieId,imdbId,tmdbId\n1,0133093,\n2,0000002,\n3,0000404,\n")
    (ml / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,1000000000\n")
    basics = _tsv_gz(tmp_path / "b.tsv.gz", IMDB_BASICS_COLUMNS, [
        "tt0133093\tmovie\tThe Matrix\tThe Matrix\t0\t1999\t\\N\t136\tAction,Sci-Fi",
        "tt0000002\tmovie\tNo Genres\tNo Genres\t0\t2005\t\\N\t95\tFamily,Biography,History",
        "tt0000007\ttvSeries\tA Series\tA Series\t0\t2010\t2014\t50\tCrime,Reality-TV",
        "tt0000008\ttvEpisode\tEpisode\tEpisode\t0\t2010\t\\N\t20\tDrama",
        "tt0000009\tmovie\tFew Votes\tFew Votes\t0\t2010\t\\N\t90\tDrama",
        "tt0000010\tmovie\tAdult\tAdult\t1\t2010\t\\N\t90\tAdult",
    ])  # fmt: skip
    ratings = _tsv_gz(tmp_path / "r.tsv.gz", IMDB_RATINGS_COLUMNS, [
        "tt0133093\t8.7\t2000000", "tt0000002\t6.0\t50", "tt0000007\t8.0\t5000",
        "tt0000008\t9.0\t9000", "tt0000009\t7.0\t10", "tt0000010\t5.0\t9000",
    ])  # fmt: skip
    db = warehouse.connect(":memory:")
    warehouse.load_movielens_release(db, ml)
    warehouse.load_imdb_titles(db, basics, ratings)
    return db


def test_catalog_has_every_movielens_title_and_filtered_imdb_titles(conn) -> None:
    result = build_catalog(conn, CatalogFilters(min_votes=100))
    df = load_catalog(conn).set_index("item_id")
    assert result.row_count == len(df) == 4
    assert set(df.index) == {1, 2, 3, imdb_only_item_id("tt0000007")}  # no episode/adult/few
    matrix = df.loc[1]
    assert matrix["title"] == "The Matrix" and matrix["year"] == 1999
    assert list(matrix["genres"]) == ["Action", "Sci-Fi"] and matrix["imdb_votes"] == 2000000
    # no MovieLens genres -> IMDb genres mapped onto MovieLens names, deduplicated
    assert list(df.loc[2, "genres"]) == ["Children", "Drama"]
    unlinked = df.loc[3]
    assert unlinked["title"] == "Unlinked" and pd.isna(unlinked["imdb_votes"])
    series = df.loc[imdb_only_item_id("tt0000007")]
    assert series["title_type"] == "tvSeries" and pd.isna(series["movie_id"])
    assert list(series["genres"]) == ["Crime", "Reality-TV"]  # unmapped genres kept
    assert warehouse.load_history(conn, CATALOG) == [4]


def test_catalog_filters(conn) -> None:
    n = build_catalog(conn, CatalogFilters(title_types=("movie",), min_votes=1)).row_count
    assert n == 4  # + "Few Votes", - the series
    n = build_catalog(conn, CatalogFilters(min_votes=1, include_adult=True)).row_count
    assert n == 6
    with pytest.raises(ValueError, match="unknown IMDb title types"):
        CatalogFilters(title_types=("film",))
    with pytest.raises(ValueError, match="min_votes"):
        CatalogFilters(min_votes=-1)


def test_catalog_without_imdb_is_movielens_only(tmp_path: Path) -> None:
    ml = tmp_path / "ml"
    ml.mkdir()
    (ml / "movies.csv").write_text("movieId,title,genres\n5,Alone (2000),Drama\n")
    (ml / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,5,4.0,1000000000\n")
    (ml / "links.csv").write_text("movieId,imdbId,tmdbId\n5,0000005,\n")
    db = warehouse.connect(":memory:")
    warehouse.load_movielens_release(db, ml)
    build_catalog(db, CatalogFilters())
    df = load_catalog(db)
    assert df["item_id"].tolist() == [5] and df["title"].tolist() == ["Alone"]
    assert df["title_type"].tolist() == ["movie"]
    with pytest.raises(ValueError, match="load MovieLens first"):
        build_catalog(warehouse.connect(":memory:"), CatalogFilters())


def test_content_vectors(conn, tmp_path: Path) -> None:
    build_catalog(conn, CatalogFilters(min_votes=100))
    catalog = load_catalog(conn)
    features = ContentFeatures.build(catalog)
    t = features.transform
    assert t.genres == ["Action", "Children", "Crime", "Drama", "Reality-TV", "Sci-Fi"]
    v = features.vectors
    assert v.dtype == np.float32 and v.shape == (4, len(t.columns)) and np.isfinite(v).all()
    genre_norms = np.linalg.norm(v[:, : len(t.genres)], axis=1)
    np.testing.assert_allclose(genre_norms, 1.0, rtol=1e-6)  # every title here has genres
    # the unlinked title has no IMDb numbers: those columns sit at the mean (0)
    row = features.item_ids.tolist().index(3)
    assert (v[row, -3:] == 0).all() and abs(v[row, -4]) <= t.clip * t.numeric_weight
    # a genre outside the vocabulary is ignored, not an error
    extra = catalog.head(1).assign(genres=[["Western"]])
    assert (content_vectors(extra, t)[0, : len(t.genres)] == 0).all()

    loaded = ContentFeatures.load(features.save(tmp_path / "content"))
    np.testing.assert_array_equal(loaded.vectors, v)
    np.testing.assert_array_equal(loaded.item_ids, features.item_ids)
    assert loaded.transform == t
    assert ContentTransform.from_json(t.to_json()) == t


def test_content_features_refuse_bad_catalogues(conn) -> None:
    build_catalog(conn, CatalogFilters())
    catalog = load_catalog(conn)
    with pytest.raises(ValueError, match="not unique"):
        ContentFeatures.build(pd.concat([catalog, catalog.head(1)]))
    with pytest.raises(ValueError, match="empty catalogue"):
        ContentFeatures.build(catalog.head(0))


def test_catalog_schema_accepts_the_built_table(conn) -> None:
    from recommender_lib.warehouse.quality import validate_table
    from recommender_lib.warehouse.schemas import CATALOG_SCHEMA

    build_catalog(conn, CatalogFilters(min_votes=1, include_adult=True))
    assert validate_table(conn, CATALOG, CATALOG_SCHEMA).passed
