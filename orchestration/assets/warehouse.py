"""Warehouse group: typed DuckDB tables loaded straight from the current raw versions.

Each table asset is a gated load (`recommender_lib/warehouse/gate.py`): the rows are staged, the
table's blocking checks (`pandera_schema`, `unique_key`, `row_count_drift`) run on them inside
the asset, and only rows that pass replace the published table. A failing check leaves the
previous table serving, keeps the rows as `<table>__rejected` (named in the metadata) and fails
the step, which skips everything downstream.
"""

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import dagster as dg

from orchestration.assets.raw import imdb_title_basics, imdb_title_ratings, movielens_release
from orchestration.metadata import check_result, load_metadata
from orchestration.resources import WAREHOUSE_POOL, RawSourcesResource, WarehouseResource
from recommender_lib.sources.formats import IMDB_BASICS_FILE, IMDB_RATINGS_FILE
from recommender_lib.warehouse import gate
from recommender_lib.warehouse import tables as wh

WAREHOUSE_KINDS = {"duckdb", "table"}


class RowCountDriftConfig(dg.Config):
    """Largest accepted relative change of the row count against the previous load."""

    max_shrink: float = 0.5
    max_growth: float = 5.0


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


def gate_check_specs(table: str) -> list[dg.AssetCheckSpec]:
    """The blocking checks a gated load of `table` evaluates on its staged rows."""
    described = {
        gate.SCHEMA_RULE: f"Rows of {table} satisfy the pandera schema `{table}`.",
        gate.KEY_RULE: f"The key of {table} identifies rows uniquely.",
        gate.DRIFT_RULE: f"Row count of {table} is within bounds of the previous load.",
    }
    return [
        dg.AssetCheckSpec(name, asset=table, blocking=True, description=text)
        for name, text in described.items()
    ]


def materialize_gated(
    db: WarehouseResource,
    config: RowCountDriftConfig,
    table: str,
    load: Callable[..., wh.LoadResult],
    *args: object,
    **kw: object,
) -> dg.MaterializeResult:
    """A gated load of `table`: metadata of the stored rows and one result per blocking check.

    When a check fails the published table is unchanged, the metadata names the table holding
    the rejected rows, and the failing (blocking) check result fails the step.
    """
    rules = gate.TableRules.for_table(table, config.max_shrink, config.max_growth)
    try:
        with db.get_connection() as conn:
            gated = gate.load_gated(conn, load, *args, rules=rules, **kw)
            metadata = load_metadata(conn, replace(gated.load, table=gated.stored_as))
            metadata["published"] = gated.published
            if gated.rejected_table:
                serving = wh.row_count(conn, table) if wh.table_exists(conn, table) else None
                metadata["rejected_table"] = gated.rejected_table
                metadata["serving_row_count"] = serving if serving is not None else 0
                metadata["failed_checks"] = dg.MetadataValue.md(
                    "\n".join(f"- {f}" for f in gated.failures)
                )
    except wh.WarehouseLoadError as exc:
        raise dg.Failure(str(exc)) from exc
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[_named_check(name, result) for name, result in gated.checks.items()],
    )


def _named_check(name: str, result: gate.QualityResult) -> dg.AssetCheckResult:
    base = check_result(result)
    return dg.AssetCheckResult(
        check_name=name,
        passed=base.passed,
        severity=base.severity,
        metadata=base.metadata,
        description=base.description,
    )


@dg.asset(
    group_name="warehouse", kinds=WAREHOUSE_KINDS, pool=WAREHOUSE_POOL,
    deps=[imdb_title_basics, imdb_title_ratings], check_specs=gate_check_specs(wh.IMDB_TITLES),
)  # fmt: skip
def imdb_titles(
    config: RowCountDriftConfig, raw_sources: RawSourcesResource, warehouse_db: WarehouseResource
) -> dg.MaterializeResult:
    """IMDb titles with ratings (basics ⋈ ratings): typed columns, genres as a LIST."""
    basics = raw_sources.current_imdb(IMDB_BASICS_FILE)
    ratings = raw_sources.current_imdb(IMDB_RATINGS_FILE)
    return materialize_gated(
        warehouse_db,
        config,
        wh.IMDB_TITLES,
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
        deps=[movielens_release], description=doc, check_specs=gate_check_specs(name),
    )  # fmt: skip
    def _asset(
        config: RowCountDriftConfig,
        raw_sources: RawSourcesResource,
        warehouse_db: WarehouseResource,
    ) -> dg.MaterializeResult:
        release_dir, version = _movielens_dir(raw_sources)
        return materialize_gated(
            warehouse_db, config, name, load, release_dir, source_version=version
        )

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
