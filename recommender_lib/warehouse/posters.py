"""TMDb posters of the catalogue, cached in the warehouse table `tmdb_posters` (optional).

One row per TMDb id (`movie_links.tmdb_id` of a catalogue title): `status` found | missing |
not_found | failed, `poster_path`, `poster_url` (image base + path), the last `http_status` and
`fetched_at` (UTC). `refresh_posters` is incremental: ids never fetched first, then failed ones
(retried after `retry_failed_after`, by default on the next run), then rows older than
`refresh_after`; results are upserted and committed batch by batch, so an interrupted run keeps
what it fetched. A failed refresh keeps the poster it had. `catalog_poster_urls` is what the
serving bundle reads. IMDb-only titles have no TMDb id and get no poster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import duckdb
import pandas as pd

from recommender_lib.sources.tmdb import PosterLookup, PosterStatus, TmdbError
from recommender_lib.warehouse.catalog import CATALOG
from recommender_lib.warehouse.storage import transaction
from recommender_lib.warehouse.tables import MOVIE_LINKS, table_exists

log = logging.getLogger(__name__)

TMDB_POSTERS = "tmdb_posters"
DEFAULT_REFRESH_AFTER = timedelta(days=30)
DEFAULT_BATCH_SIZE = 50
POSTER_URL_COLUMNS = ("item_id", "poster_url")

_STATUSES = ", ".join(f"'{s.value}'" for s in PosterStatus)
_CREATE = f"""CREATE TABLE IF NOT EXISTS {TMDB_POSTERS} (
    tmdb_id BIGINT PRIMARY KEY,
    poster_path VARCHAR,
    poster_url VARCHAR,
    status VARCHAR NOT NULL CHECK (status IN ({_STATUSES})),
    http_status INTEGER,
    fetched_at TIMESTAMP NOT NULL)"""
# A failed refresh keeps the poster the row had; any other answer replaces it.
_UPSERT = f"""INSERT INTO {TMDB_POSTERS} VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (tmdb_id) DO UPDATE SET
        poster_path = CASE WHEN EXCLUDED.status = '{PosterStatus.FAILED}'
                           THEN {TMDB_POSTERS}.poster_path ELSE EXCLUDED.poster_path END,
        poster_url = CASE WHEN EXCLUDED.status = '{PosterStatus.FAILED}'
                          THEN {TMDB_POSTERS}.poster_url ELSE EXCLUDED.poster_url END,
        status = EXCLUDED.status, http_status = EXCLUDED.http_status,
        fetched_at = EXCLUDED.fetched_at"""


class PosterSource(Protocol):
    """What `refresh_posters` needs of a client (`sources.tmdb.TmdbClient`)."""

    def posters(self, tmdb_ids: Sequence[int]) -> list[PosterLookup]: ...


@dataclass(frozen=True)
class PosterRefresh:
    """What one refresh did: lookups by status, rows cached, and why it stopped early."""

    enabled: bool
    fetched: int = 0
    found: int = 0
    missing: int = 0
    not_found: int = 0
    failed: int = 0
    cached_total: int = 0
    duration_s: float = 0.0
    error: str | None = None


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def ensure_posters_table(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(_CREATE)


def poster_url(image_base_url: str, poster_path: str | None) -> str | None:
    """`https://image.tmdb.org/t/p/w342` + `/abc.jpg`; None without a path."""
    if not poster_path:
        return None
    return f"{image_base_url.rstrip('/')}/{poster_path.lstrip('/')}"


def titles_to_fetch(
    conn: duckdb.DuckDBPyConnection,
    refresh_after: timedelta,
    limit: int,
    *,
    retry_failed_after: timedelta = timedelta(0),
    now: datetime | None = None,
) -> list[int]:
    """TMDb ids of catalogue titles due a lookup, at most `limit`: never fetched first, then
    failed ones older than `retry_failed_after`, then others older than `refresh_after`."""
    for table in (CATALOG, MOVIE_LINKS):
        if not table_exists(conn, table):
            raise ValueError(f"the warehouse has no {table} table: build the catalogue first")
    ensure_posters_table(conn)
    now = now or _utc_now()
    rows = conn.execute(
        f"""WITH ids AS (
                SELECT DISTINCT l.tmdb_id FROM {CATALOG} c
                JOIN {MOVIE_LINKS} l ON l.movie_id = c.movie_id
                WHERE l.tmdb_id IS NOT NULL)
            SELECT ids.tmdb_id FROM ids LEFT JOIN {TMDB_POSTERS} p USING (tmdb_id)
            WHERE p.tmdb_id IS NULL
               OR (p.status = '{PosterStatus.FAILED}' AND p.fetched_at <= ?)
               OR p.fetched_at <= ?
            ORDER BY (p.tmdb_id IS NOT NULL), (p.status IS DISTINCT FROM '{PosterStatus.FAILED}'),
                     p.fetched_at, ids.tmdb_id
            LIMIT ?""",
        [now - retry_failed_after, now - refresh_after, max(0, int(limit))],
    ).fetchall()
    return [int(r[0]) for r in rows]


def store_lookups(
    conn: duckdb.DuckDBPyConnection,
    lookups: Sequence[PosterLookup],
    image_base_url: str,
    *,
    fetched_at: datetime | None = None,
) -> None:
    """Upsert `lookups` in one committed transaction."""
    ensure_posters_table(conn)
    stamp = fetched_at or _utc_now()
    latest = {lk.tmdb_id: lk for lk in lookups}
    rows = [
        [lk.tmdb_id, lk.poster_path, poster_url(image_base_url, lk.poster_path),
         str(lk.status), lk.http_status, stamp]
        for lk in latest.values()
    ]  # fmt: skip
    if not rows:
        return
    with transaction(conn):
        conn.executemany(_UPSERT, rows)


def poster_counts(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Cached rows by status (every status, 0 where none); empty without the table."""
    if not table_exists(conn, TMDB_POSTERS):
        return {}
    rows = conn.execute(f"SELECT status, count(*) FROM {TMDB_POSTERS} GROUP BY 1").fetchall()
    counts = {s.value: 0 for s in PosterStatus}
    counts.update({str(s): int(n) for s, n in rows})
    return counts


def catalog_poster_urls(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """`item_id` (int64), `poster_url` (str) of the catalogue titles with a poster, by item id;
    an empty frame with those columns when the catalogue, links or posters table is absent."""
    if not all(table_exists(conn, t) for t in (CATALOG, MOVIE_LINKS, TMDB_POSTERS)):
        return pd.DataFrame(
            {"item_id": pd.Series(dtype="int64"), "poster_url": pd.Series(dtype="object")}
        )
    rows = conn.execute(
        f"""SELECT c.item_id, p.poster_url FROM {CATALOG} c
            JOIN {MOVIE_LINKS} l ON l.movie_id = c.movie_id
            JOIN {TMDB_POSTERS} p ON p.tmdb_id = l.tmdb_id
            WHERE p.poster_url IS NOT NULL
            ORDER BY c.item_id"""
    ).fetchall()
    return pd.DataFrame(
        {
            "item_id": pd.Series([int(r[0]) for r in rows], dtype="int64"),
            "poster_url": pd.Series([str(r[1]) for r in rows], dtype="object"),
        }
    )


def refresh_posters(
    conn: duckdb.DuckDBPyConnection,
    source: PosterSource,
    *,
    image_base_url: str,
    refresh_after: timedelta = DEFAULT_REFRESH_AFTER,
    limit: int,
    retry_failed_after: timedelta = timedelta(0),
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> PosterRefresh:
    """Look up the titles due (`titles_to_fetch`) and cache the answers, committing each batch.

    Failed lookups are counted, never raised. A `TmdbError` (the key was refused) stops the
    fetch: what was fetched before stays committed and the result carries the error.
    """
    started = time.monotonic()
    due = titles_to_fetch(conn, refresh_after, limit, retry_failed_after=retry_failed_after)
    counts = {s.value: 0 for s in PosterStatus}
    error: str | None = None
    for start in range(0, len(due), max(1, batch_size)):
        try:
            lookups = source.posters(due[start : start + batch_size])
        except TmdbError as exc:
            error = str(exc)
            log.error("poster fetch stopped: %s", error)
            break
        store_lookups(conn, lookups, image_base_url)
        for lookup in lookups:
            counts[lookup.status.value] += 1
    return PosterRefresh(
        enabled=True,
        fetched=sum(counts.values()),
        found=counts[PosterStatus.FOUND],
        missing=counts[PosterStatus.MISSING],
        not_found=counts[PosterStatus.NOT_FOUND],
        failed=counts[PosterStatus.FAILED],
        cached_total=sum(poster_counts(conn).values()),
        duration_s=round(time.monotonic() - started, 3),
        error=error,
    )
