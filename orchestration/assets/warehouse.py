"""Warehouse group: typed DuckDB tables loaded straight from the current raw versions."""

from collections.abc import Callable
from pathlib import Path

import dagster as dg

from orchestration.assets.raw import imdb_title_basics, imdb_title_ratings, movielens_release
from orchestration.metadata import load_metadata
from orchestration.resources import WAREHOUSE_POOL, RawSourcesResource, WarehouseResource
from recommender_lib.sources.formats import IMDB_BASICS_FILE, IMDB_RATINGS_FILE
from recommender_lib.warehouse import tables as wh

WAREHOUSE_KINDS = {"duckdb", "table"}


def materialize_table(
    db: WarehouseResource, load: Callable[..., wh.LoadResult], *args: object, **kw: object
) -> dg.MaterializeResult:
    """Run a warehouse load, turning its `LoadResult` into metadata and its errors into Failure."""
    try:
        with db.get_connection() as conn:
            result = load(conn, *args, **kw)
            metadata = load_metadata(conn, result)
    except wh.WarehouseLoadError as exc:
        raise dg.Failure(str(exc)) from exc
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name="warehouse", kinds=WAREHOUSE_KINDS, pool=WAREHOUSE_POOL,
    deps=[imdb_title_basics, imdb_title_ratings],
)  # fmt: skip
def imdb_titles(
    raw_sources: RawSourcesResource, warehouse_db: WarehouseResource
) -> dg.MaterializeResult:
    """IMDb titles with ratings (basics ⋈ ratings): typed columns, genres as a LIST."""
    basics = raw_sources.current_imdb(IMDB_BASICS_FILE)
    ratings = raw_sources.current_imdb(IMDB_RATINGS_FILE)
    return materialize_table(
        warehouse_db,
        wh.load_imdb_titles,
        basics.path,
        ratings.path,
        source_version=f"basics={basics.version};ratings={ratings.version}",
    )


def _movielens_dir(raw_sources: RawSourcesResource) -> tuple[Path, str]:
    release = raw_sources.current_movielens()
    assert release.extracted_dir is not None, "movielens_release stores an extracted copy"
    return release.extracted_dir, release.version


def _movielens_asset(name: str, load: Callable[..., wh.LoadResult], doc: str):
    @dg.asset(
        name=name, group_name="warehouse", kinds=WAREHOUSE_KINDS, pool=WAREHOUSE_POOL,
        deps=[movielens_release], description=doc,
    )  # fmt: skip
    def _asset(
        raw_sources: RawSourcesResource, warehouse_db: WarehouseResource
    ) -> dg.MaterializeResult:
        release_dir, version = _movielens_dir(raw_sources)
        return materialize_table(warehouse_db, load, release_dir, source_version=version)

    return _asset


movielens_ratings = _movielens_asset(
    wh.MOVIELENS_RATINGS,
    wh.load_movielens_ratings,
    "MovieLens ratings: one row per (user, movie) with the rating in stars and its time.",
)
movielens_movies = _movielens_asset(
    wh.MOVIELENS_MOVIES,
    wh.load_movielens_movies,
    "MovieLens movies: clean title, release year parsed out of the title, genres as a LIST.",
)
movie_links = _movielens_asset(
    wh.MOVIE_LINKS,
    wh.load_movie_links,
    "MovieLens links: movieId -> IMDb tconst ('tt' + imdbId padded to 7 digits) and tmdbId.",
)

warehouse_assets = [imdb_titles, movielens_ratings, movielens_movies, movie_links]
