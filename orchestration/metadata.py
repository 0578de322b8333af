"""Translate library results into Dagster metadata and asset-check results."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
import duckdb
import pandas as pd

from recommender_lib.sources.raw_store import FetchedFile
from recommender_lib.warehouse.quality import QualityResult
from recommender_lib.warehouse.tables import LoadResult, markdown_table, preview_markdown


def fetched_file_metadata(
    fetched: FetchedFile, columns: Sequence[str] = ()
) -> dict[str, dg.RawMetadataValue]:
    """Bytes, sha256, validators, version and verified header of a raw file."""
    meta: dict[str, dg.RawMetadataValue] = {
        "dump_version": fetched.version,
        "changed": fetched.changed,
        "url": dg.MetadataValue.url(fetched.url) if "://" in fetched.url else fetched.url,
        "path": dg.MetadataValue.path(str(fetched.path)),
        "bytes": fetched.size_bytes,
        "sha256": fetched.sha256,
        "etag": fetched.etag or "",
        "last_modified": fetched.last_modified or "",
        "fetched_at": fetched.fetched_at,
    }
    if columns:
        meta["dagster/column_schema"] = dg.MetadataValue.table_schema(
            dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns])
        )
    if fetched.extracted_dir is not None:
        meta["extracted_dir"] = dg.MetadataValue.path(str(fetched.extracted_dir))
        meta["md5_verified"] = fetched.md5_verified
    return meta


def load_metadata(
    conn: duckdb.DuckDBPyConnection, result: LoadResult
) -> dict[str, dg.RawMetadataValue]:
    """Row count, column schema, a preview and the load's bookkeeping, for a warehouse table."""
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, dtype) for name, dtype in result.columns.items()]
    )
    meta: dict[str, dg.RawMetadataValue] = {
        "dagster/row_count": dg.MetadataValue.int(result.row_count),
        "dagster/column_schema": dg.MetadataValue.table_schema(schema),
        "previous_row_count": result.previous_row_count
        if result.previous_row_count is not None
        else dg.MetadataValue.null(),
        "rejected_rows": result.rejected_rows,
        "source_version": result.source_version or "",
        "preview": dg.MetadataValue.md(preview_markdown(conn, result.table)),
    }
    if result.rejected_examples:
        meta["rejected_examples"] = dg.MetadataValue.md(
            "\n".join(f"- {e}" for e in result.rejected_examples)
        )
    return meta


def frame_preview(frame: pd.DataFrame, rows: int = 5, columns: int = 12) -> dg.MetadataValue:
    """The first rows (and columns) of a DataFrame as markdown."""
    head = frame.iloc[:rows, :columns]
    records = [tuple(round(v, 4) if isinstance(v, float) else v for v in r)
               for r in head.itertuples(index=False)]  # fmt: skip
    return dg.MetadataValue.md(markdown_table([str(c) for c in head.columns], records))


def check_result(
    result: QualityResult,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
) -> dg.AssetCheckResult:
    """An asset-check result carrying the rule's summary, details and failure cases."""
    meta: dict[str, dg.RawMetadataValue] = {"summary": result.summary}
    for key, value in result.details.items():
        meta[key] = (
            value if isinstance(value, int | float | str | bool) else dg.MetadataValue.json(value)
        )
    if result.failure_cases is not None and not result.failure_cases.empty:
        cases = result.failure_cases
        rows = [tuple(r) for r in cases.itertuples(index=False)]
        meta["failure_cases"] = dg.MetadataValue.md(markdown_table(list(cases.columns), rows))
    return dg.AssetCheckResult(
        passed=result.passed, severity=severity, metadata=meta, description=result.summary
    )
