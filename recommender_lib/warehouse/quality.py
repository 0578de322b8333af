"""Quality rules over warehouse tables: pandera validation in chunks, keys, coverage, drift.

Every rule returns a `QualityResult`; the orchestration layer turns it into an asset-check result
(passed flag, severity, metadata) without knowing how the rule works.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import duckdb
import pandas as pd
import pandera.errors
import pandera.pandas as pa

from recommender_lib.warehouse import tables as warehouse

MAX_FAILURE_CASES = 50


@dataclass(frozen=True)
class QualityResult:
    """Outcome of one rule: whether it passed, a one-line summary, details for run metadata."""

    passed: bool
    summary: str
    details: Mapping[str, object] = field(default_factory=dict)
    failure_cases: pd.DataFrame | None = None


def validate_table(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    schema: pa.DataFrameSchema,
    *,
    chunk_rows: int = 1_000_000,
) -> QualityResult:
    """Run `schema` lazily over `table` in chunks of about `chunk_rows` rows.

    Lazy validation collects every failing check instead of stopping at the first; the first
    `MAX_FAILURE_CASES` failure cases (with the row index within the table) are kept.
    """
    cursor = conn.execute(f'SELECT * FROM "{table}"')
    vectors = max(1, chunk_rows // 2048)  # DuckDB hands out vectors of 2,048 rows
    offset, n_failures = 0, 0
    cases: list[pd.DataFrame] = []
    failed_checks: set[str] = set()
    while True:
        chunk = cursor.fetch_df_chunk(vectors)
        if chunk.empty:
            break
        chunk.index = pd.RangeIndex(offset, offset + len(chunk))
        try:
            schema.validate(chunk, lazy=True)
        except pandera.errors.SchemaErrors as err:
            fc = err.failure_cases
            n_failures += len(fc)
            failed_checks.update(
                f"{c}: {k}" for c, k in zip(fc["column"], fc["check"], strict=True)
            )
            if sum(len(c) for c in cases) < MAX_FAILURE_CASES:
                cases.append(fc.head(MAX_FAILURE_CASES))
        offset += len(chunk)
    failure_cases = (
        pd.concat(cases)
        .head(MAX_FAILURE_CASES)
        .reset_index(drop=True)[["column", "check", "failure_case", "index"]]
        if cases
        else None
    )
    details: dict[str, object] = {"rows_checked": offset, "failure_count": n_failures}
    if failed_checks:
        details["failed_checks"] = sorted(failed_checks)
        summary = (
            f"{table}: {n_failures} failure cases in {offset} rows "
            f"({len(failed_checks)} failing checks)"
        )
    else:
        summary = f"{table}: all {offset} rows pass schema {schema.name}"
    return QualityResult(n_failures == 0, summary, details, failure_cases)


def check_unique_keys(
    conn: duckdb.DuckDBPyConnection, table: str, keys: list[str]
) -> QualityResult:
    """The key columns identify rows uniquely over the whole table."""
    n, examples = warehouse.duplicate_keys(conn, table, keys)
    label = ", ".join(keys)
    if n == 0:
        return QualityResult(True, f"{table}: ({label}) is unique", {"duplicate_keys": 0})
    cases = pd.DataFrame(examples, columns=[*keys, "occurrences"])
    return QualityResult(
        False, f"{table}: {n} duplicated values of ({label})", {"duplicate_keys": n}, cases
    )


def check_link_coverage(conn: duckdb.DuckDBPyConnection, min_share: float) -> QualityResult:
    """Share of MovieLens links whose tconst is found in `imdb_titles`."""
    found, total = warehouse.link_coverage(conn)
    share = found / total if total else 0.0
    details = {"links": total, "found_in_imdb": found, "coverage": round(share, 4),
               "min_coverage": min_share}  # fmt: skip
    passed = total > 0 and share >= min_share
    return QualityResult(
        passed,
        f"{found}/{total} MovieLens links ({share:.1%}) found in IMDb "
        f"({'at least' if passed else 'below'} {min_share:.0%})",
        details,
    )


def check_row_count_drift(
    conn: duckdb.DuckDBPyConnection, table: str, max_shrink: float, max_growth: float
) -> QualityResult:
    """Row count versus the previous load: a sharp drop (or jump) means a broken source."""
    history = warehouse.load_history(conn, table, limit=2)
    if not history:
        return QualityResult(False, f"{table}: never loaded", {})
    previous = history[1] if len(history) > 1 else None
    return check_row_count_change(table, history[0], previous, max_shrink, max_growth)


def check_row_count_change(
    table: str, current: int, previous: int | None, max_shrink: float, max_growth: float
) -> QualityResult:
    """`current` rows against the `previous` load's (None: a first load, which passes)."""
    if previous is None:
        return QualityResult(True, f"{table}: first load, {current} rows", {"row_count": current})
    change = (current - previous) / previous if previous else float("inf") if current else 0.0
    details = {"row_count": current, "previous_row_count": previous,
               "relative_change": round(change, 4)}  # fmt: skip
    if change < -max_shrink:
        return QualityResult(
            False,
            f"{table}: {previous} -> {current} rows, shrank more than {max_shrink:.0%}",
            details,
        )
    if change > max_growth:
        return QualityResult(
            False,
            f"{table}: {previous} -> {current} rows, grew more than {max_growth:.0%}",
            details,
        )
    return QualityResult(True, f"{table}: {previous} -> {current} rows ({change:+.1%})", details)
