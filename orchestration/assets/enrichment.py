"""Enrichment group: optional data from outside the platform's sources (TMDb posters).

Nothing here fails the pipeline: without `TMDB_API_KEY` the asset fetches nothing and reports
`enabled: false`; failed lookups are counted; a key TMDb refuses stops the fetch and fails the
non-blocking check `tmdb_requests_accepted`, so downstream assets still run.
"""

from datetime import timedelta
from pathlib import Path

import dagster as dg

from orchestration.assets.features import catalog
from orchestration.resources import WAREHOUSE_POOL, TmdbResource, WarehouseResource
from recommender_lib.warehouse.posters import (
    TMDB_POSTERS,
    PosterRefresh,
    poster_counts,
    refresh_posters,
)

REQUESTS_ACCEPTED = "tmdb_requests_accepted"


@dg.asset(
    group_name="enrichment", kinds={"duckdb", "table"}, pool=WAREHOUSE_POOL, deps=[catalog],
    check_specs=[dg.AssetCheckSpec(
        REQUESTS_ACCEPTED, asset=TMDB_POSTERS, blocking=False,
        description="TMDb accepted the API key (no 401/403 stopped the poster fetch).",
    )],
)  # fmt: skip
def tmdb_posters(
    context: dg.AssetExecutionContext, warehouse_db: WarehouseResource, tmdb: TmdbResource
) -> dg.MaterializeResult:
    """TMDb poster of every catalogue title with a TMDb id, cached in table `tmdb_posters`
    (found / missing / not_found / failed, poster URL, fetched_at). Incremental: titles never
    fetched, failed ones and those older than the refresh age, at most `max_titles_per_run`.
    Off without `TMDB_API_KEY`."""
    if not tmdb.enabled:
        context.log.info("TMDB_API_KEY is not set: poster enrichment is off")
        cached = 0
        if Path(warehouse_db.database).is_file():  # do not create a warehouse just to count
            with warehouse_db.get_connection() as conn:
                cached = sum(poster_counts(conn).values())
        return _result(PosterRefresh(enabled=False, cached_total=cached))
    with tmdb.client() as client, warehouse_db.get_connection() as conn:
        refresh = refresh_posters(
            conn,
            client,
            image_base_url=tmdb.image_base_url,
            refresh_after=timedelta(days=tmdb.refresh_after_days),
            limit=tmdb.max_titles_per_run,
        )
    if refresh.error:
        context.log.error(f"poster fetch stopped: {refresh.error}")
    context.log.info(
        f"{refresh.fetched} posters looked up: {refresh.found} found, {refresh.missing} "
        f"without a poster, {refresh.not_found} unknown to TMDb, {refresh.failed} failed"
    )
    return _result(refresh)


def _result(refresh: PosterRefresh) -> dg.MaterializeResult:
    metadata: dict[str, dg.RawMetadataValue] = {
        "enabled": refresh.enabled,
        "fetched": refresh.fetched,
        "found": refresh.found,
        "missing": refresh.missing,
        "not_found": refresh.not_found,
        "failed": refresh.failed,
        "cached_total": refresh.cached_total,
        "dagster/row_count": refresh.cached_total,
        "duration": dg.MetadataValue.float(refresh.duration_s),
    }
    if refresh.error:
        metadata["error"] = refresh.error
    check = dg.AssetCheckResult(
        check_name=REQUESTS_ACCEPTED,
        passed=refresh.error is None,
        severity=dg.AssetCheckSeverity.ERROR,
        description=refresh.error,
        metadata={"enabled": refresh.enabled},
    )
    return dg.MaterializeResult(metadata=metadata, check_results=[check])


enrichment_assets = [tmdb_posters]
