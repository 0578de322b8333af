"""Raw group: the IMDb non-commercial dumps and the MovieLens release, verified and versioned.

Each asset keeps one folder per dump version under `<data dir>/raw`; an unchanged source is not
fetched again (conditional requests) and a failed download leaves the previous version current.
"""

import dagster as dg

from orchestration.metadata import fetched_file_metadata
from orchestration.policies import network_retry_policy
from orchestration.resources import RawSourcesResource
from recommender_lib.sources.formats import (
    IMDB_AKAS_FILE,
    IMDB_BASICS_FILE,
    IMDB_HEADERS,
    IMDB_RATINGS_FILE,
)
from recommender_lib.sources.raw_store import FetchedFile

RAW_KINDS = {"python", "file"}


def _result(fetched: FetchedFile, imdb_file: str | None = None) -> dg.MaterializeResult:
    """The raw file's metadata; its data version is the content hash."""
    columns = IMDB_HEADERS[imdb_file] if imdb_file else ()
    return dg.MaterializeResult(
        metadata=fetched_file_metadata(fetched, columns),
        data_version=dg.DataVersion(fetched.sha256),
    )


@dg.asset(group_name="raw", kinds=RAW_KINDS, retry_policy=network_retry_policy)
def imdb_title_basics(
    context: dg.AssetExecutionContext, raw_sources: RawSourcesResource
) -> dg.MaterializeResult:
    """IMDb `title.basics.tsv.gz`: every title's type, names, years, runtime and genres."""
    return _result(raw_sources.fetch_imdb(context, IMDB_BASICS_FILE), IMDB_BASICS_FILE)


@dg.asset(group_name="raw", kinds=RAW_KINDS, retry_policy=network_retry_policy)
def imdb_title_ratings(
    context: dg.AssetExecutionContext, raw_sources: RawSourcesResource
) -> dg.MaterializeResult:
    """IMDb `title.ratings.tsv.gz`: weighted average rating and vote count per title."""
    return _result(raw_sources.fetch_imdb(context, IMDB_RATINGS_FILE), IMDB_RATINGS_FILE)


@dg.asset(group_name="raw", kinds=RAW_KINDS, retry_policy=network_retry_policy)
def imdb_title_akas(
    context: dg.AssetExecutionContext, raw_sources: RawSourcesResource
) -> dg.MaterializeResult:
    """IMDb `title.akas.tsv.gz`: every title's localized titles per region and language."""
    return _result(raw_sources.fetch_imdb(context, IMDB_AKAS_FILE), IMDB_AKAS_FILE)


@dg.asset(group_name="raw", kinds=RAW_KINDS, retry_policy=network_retry_policy)
def movielens_release(
    context: dg.AssetExecutionContext, raw_sources: RawSourcesResource
) -> dg.MaterializeResult:
    """The MovieLens release zip, checked against its CRCs and published `.md5`, extracted."""
    return _result(raw_sources.fetch_movielens(context))


raw_assets = [imdb_title_basics, imdb_title_ratings, imdb_title_akas, movielens_release]
