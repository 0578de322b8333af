"""`catalog_akas`: the localized titles (IMDb title.akas) of the catalogue's titles.

Loaded straight from the dump by DuckDB's CSV reader with the IMDb rules (tabs, no quoting,
`\\N` nulls; `tables.read_imdb_sql`), keeping only rows whose `titleId` is a `catalog.tconst`, so a
50 M-row dump becomes a table the size of the catalogue's akas. The `\\x02`-separated `types`
and `attributes` become LISTs (`[]` when `\\N`). Like every warehouse table it is staged first;
`gate.load_gated` publishes it only after its schema, key (tconst, ordering) and drift rules.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from recommender_lib.sources.formats import IMDB_AKAS_COLUMNS, IMDB_ARRAY_SEPARATOR
from recommender_lib.warehouse.catalog import CATALOG
from recommender_lib.warehouse.tables import (
    LoadResult,
    WarehouseLoadError,
    read_imdb_sql,
    replace_table,
    table_exists,
)

CATALOG_AKAS = "catalog_akas"
CATALOG_AKAS_KEY = ["tconst", "ordering"]

IMDB_AKAS_TYPES = dict(
    zip(
        IMDB_AKAS_COLUMNS,
        ("VARCHAR", "INTEGER", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "BOOLEAN"),
        strict=True,
    )
)
_REJECTS = "rejects_akas"


def _array(column: str) -> str:
    """SQL: an IMDb array column as a VARCHAR[] (`\\N` or empty -> [], empty items dropped)."""
    sep = f"chr({ord(IMDB_ARRAY_SEPARATOR)})"
    return (
        f"CASE WHEN {column} IS NULL OR {column} = '' THEN []::VARCHAR[] "
        f"ELSE list_filter(string_split({column}, {sep}), lambda x: x <> '') END"
    )


def load_catalog_akas(
    conn: duckdb.DuckDBPyConnection,
    akas_path: Path,
    *,
    source_version: str | None = None,
    max_reject_share: float = 0.001,
    publish: bool = True,
) -> LoadResult:
    """`catalog_akas` from title.akas.tsv.gz: the rows of titles in `catalog`, typed.

    Raises `WarehouseLoadError` (the published table untouched) without a `catalog` table, a
    readable file, or when more than `max_reject_share` of the loaded rows' count is malformed
    lines (counted over the whole file).
    """
    akas_path = Path(akas_path)
    if not table_exists(conn, CATALOG):
        raise WarehouseLoadError(
            f"{CATALOG_AKAS}: the `{CATALOG}` table does not exist; build the catalogue first "
            "(the akas kept are those of catalogue titles)"
        )
    if not akas_path.is_file():
        raise WarehouseLoadError(f"{CATALOG_AKAS}: no akas file at {akas_path}")
    select = f"""
        SELECT
            a.titleId AS tconst,
            a.ordering,
            a.title,
            a.region,
            a.language,
            {_array("a.types")} AS types,
            {_array("a.attributes")} AS attributes,
            a.isOriginalTitle AS is_original_title
        FROM {read_imdb_sql(akas_path, IMDB_AKAS_TYPES, _REJECTS)} AS a
        SEMI JOIN (SELECT DISTINCT tconst FROM "{CATALOG}" WHERE tconst IS NOT NULL) AS c
            ON a.titleId = c.tconst
        ORDER BY tconst, ordering
    """
    return replace_table(
        conn,
        CATALOG_AKAS,
        select,
        [(_REJECTS, akas_path.name)],
        max_reject_share=max_reject_share,
        source_version=source_version,
        publish=publish,
    )
