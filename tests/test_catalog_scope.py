"""The whole-IMDb catalogue setting: every rated IMDb title joins; the default is unchanged."""

from __future__ import annotations

import pytest

from orchestration.config import CatalogConfig
from recommender_lib.sources.formats import IMDB_TITLE_TYPES
from recommender_lib.sources.integrity import extract_zip
from recommender_lib.warehouse import tables as warehouse
from recommender_lib.warehouse.catalog import (
    CATALOG_SCOPES,
    CatalogFilters,
    build_catalog,
    load_catalog,
)


@pytest.fixture(scope="module")
def conn(sample_mirror, tmp_path_factory: pytest.TempPathFactory):
    release = extract_zip(sample_mirror.movielens_zip, tmp_path_factory.mktemp("scope"))
    db = warehouse.connect(":memory:")
    warehouse.load_movielens_release(db, release / "ml-latest-small")
    warehouse.load_imdb_titles(db, sample_mirror.basics, sample_mirror.ratings)
    yield db
    db.close()


def test_whole_imdb_admits_every_rated_title(conn) -> None:
    result = build_catalog(conn, CatalogFilters.whole_imdb())
    catalog = load_catalog(conn)
    tconsts = set(catalog["tconst"].dropna())
    rated = {
        r[0] for r in conn.execute("SELECT tconst FROM imdb_titles WHERE NOT is_adult").fetchall()
    }
    assert rated <= tconsts  # every rated non-adult title, of every type, down to 1 vote
    movies = conn.execute("SELECT count(*) FROM movielens_movies").fetchall()[0][0]
    imdb_only = catalog["movie_id"].isna()
    assert imdb_only.sum() == len(rated - set(catalog.loc[~imdb_only, "tconst"].dropna()))
    assert result.row_count == len(catalog) == movies + imdb_only.sum()
    # the sample has what the default leaves out: other types and titles under 1,000 votes
    only_whole = catalog[imdb_only & (catalog["imdb_votes"] < 1000)]
    assert len(only_whole) > 0 and only_whole["imdb_votes"].min() >= 1
    assert set(catalog.loc[imdb_only, "title_type"]) - set(CatalogFilters().title_types)

    default_n = build_catalog(conn, CatalogFilters()).row_count
    assert default_n < result.row_count
    floor = build_catalog(conn, CatalogFilters.whole_imdb(min_votes=50)).row_count
    assert default_n <= floor < result.row_count


def test_default_scope_is_unchanged() -> None:
    default = CatalogFilters()
    assert default.min_votes == 1000 and not default.include_adult
    assert default.title_types == ("movie", "tvMovie", "tvSeries", "tvMiniSeries")
    assert CatalogFilters.named("default") == default
    assert CatalogConfig().to_lib() == default
    whole = CatalogFilters.whole_imdb()
    assert whole.min_votes == 1 and whole.title_types == IMDB_TITLE_TYPES
    assert not whole.include_adult
    assert CATALOG_SCOPES == ("default", "whole_imdb")


def test_catalog_config_scope() -> None:
    assert CatalogConfig(scope="whole_imdb").to_lib() == CatalogFilters.whole_imdb()
    assert CatalogConfig(scope="whole_imdb", min_votes=20).to_lib() == CatalogFilters(
        title_types=IMDB_TITLE_TYPES, min_votes=20
    )
    assert CatalogConfig(min_votes=5, title_types=["movie"]).to_lib() == CatalogFilters(
        title_types=("movie",), min_votes=5
    )
    with pytest.raises(ValueError, match="unknown catalogue scope 'everything'"):
        CatalogConfig(scope="everything").to_lib()
