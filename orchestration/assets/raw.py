"""Raw group: the IMDb non-commercial dumps and the MovieLens release, verified and versioned.

Each asset keeps one folder per dump version under `<data dir>/raw`; an unchanged source is not
fetched again (conditional requests) and a failed download leaves the previous version current.
"""

import dagster as dg

from orchestration.metadata import fetched_file_metadata
from orchestration.resources import RawSourcesResource
from recommender_lib.formats import IMDB_BASICS_FILE, IMDB_RATINGS_FILE

RAW_KINDS = {"python", "file"}


@dg.asset(group_name="raw", kinds=RAW_KINDS)
def imdb_title_basics(
    context: dg.AssetExecutionContext, raw_sources: RawSourcesResource
) -> dg.MaterializeResult:
    """IMDb `title.basics.tsv.gz`: every title's type, names, years, runtime and genres."""
    fetched = raw_sources.fetch_imdb(context, IMDB_BASICS_FILE)
    return dg.MaterializeResult(
        metadata=fetched_file_metadata(fetched), data_version=dg.DataVersion(fetched.sha256)
    )


@dg.asset(group_name="raw", kinds=RAW_KINDS)
def imdb_title_ratings(
    context: dg.AssetExecutionContext, raw_sources: RawSourcesResource
) -> dg.MaterializeResult:
    """IMDb `title.ratings.tsv.gz`: weighted average rating and vote count per title."""
    fetched = raw_sources.fetch_imdb(context, IMDB_RATINGS_FILE)
    return dg.MaterializeResult(
        metadata=fetched_file_metadata(fetched), data_version=dg.DataVersion(fetched.sha256)
    )


@dg.asset(group_name="raw", kinds=RAW_KINDS)
def movielens_release(
    context: dg.AssetExecutionContext, raw_sources: RawSourcesResource
) -> dg.MaterializeResult:
    """The MovieLens release zip, checked against its CRCs and published `.md5`, extracted."""
    fetched = raw_sources.fetch_movielens(context)
    return dg.MaterializeResult(
        metadata=fetched_file_metadata(fetched), data_version=dg.DataVersion(fetched.sha256)
    )


raw_assets = [imdb_title_basics, imdb_title_ratings, movielens_release]
