"""Gated warehouse loads: stage, check, and only then publish (docs/architecture.md §4.5).

A loader writes `<table>__staging`; the table's rules — its pandera schema, unique key and
row-count drift against the last published load, the same rules as its blocking asset checks —
run on the staged rows. When all pass, the staged table is swapped in atomically; otherwise the
published table is left as it was and the staged rows are kept as `<table>__rejected`, named in
every failing rule's details so the failure cases can be inspected with SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import duckdb
import pandera.pandas as pa

from recommender_lib.warehouse import quality
from recommender_lib.warehouse import tables as warehouse
from recommender_lib.warehouse.quality import QualityResult
from recommender_lib.warehouse.schemas import WAREHOUSE_KEYS, WAREHOUSE_SCHEMAS

# Rule names; the orchestration layer uses them as the names of the tables' asset checks.
SCHEMA_RULE, KEY_RULE, DRIFT_RULE = "pandera_schema", "unique_key", "row_count_drift"


@dataclass(frozen=True)
class TableRules:
    """What a staged load must satisfy before it replaces the published table."""

    schema: pa.DataFrameSchema
    keys: list[str]
    max_shrink: float = 0.5
    max_growth: float = 5.0

    @classmethod
    def for_table(cls, table: str, max_shrink: float = 0.5, max_growth: float = 5.0) -> TableRules:
        """The rules of a warehouse table (`WAREHOUSE_SCHEMAS`, `WAREHOUSE_KEYS`)."""
        return cls(WAREHOUSE_SCHEMAS[table], WAREHOUSE_KEYS[table], max_shrink, max_growth)


@dataclass(frozen=True)
class GatedLoad:
    """A gated load: the staged load, each rule's result, and where the rows ended up."""

    load: warehouse.LoadResult
    checks: Mapping[str, QualityResult]
    published: bool
    rejected_table: str | None = None

    @property
    def stored_as(self) -> str:
        """The table holding this load's rows: the published table or `<table>__rejected`."""
        return self.rejected_table or self.load.table

    @property
    def failures(self) -> list[str]:
        return [f"{name}: {r.summary}" for name, r in self.checks.items() if not r.passed]


def check_staged(
    conn: duckdb.DuckDBPyConnection, staged: warehouse.LoadResult, rules: TableRules
) -> dict[str, QualityResult]:
    """Every rule on `<table>__staging`; drift compares with the last published load."""
    staging = warehouse.staging_table(staged.table)
    history = warehouse.load_history(conn, staged.table, limit=1)
    return {
        SCHEMA_RULE: quality.validate_table(conn, staging, rules.schema),
        KEY_RULE: quality.check_unique_keys(conn, staging, rules.keys),
        DRIFT_RULE: quality.check_row_count_change(
            staged.table,
            staged.row_count,
            history[0] if history else None,
            rules.max_shrink,
            rules.max_growth,
        ),
    }


def _naming(result: QualityResult, staging: str, rejected: str) -> QualityResult:
    """A failing rule's result pointing at the kept rows instead of the dropped staging name."""
    if result.passed:
        return result
    return replace(
        result,
        summary=result.summary.replace(staging, rejected),
        details={**result.details, "rejected_table": rejected},
    )


def load_gated(
    conn: duckdb.DuckDBPyConnection,
    load: Callable[..., warehouse.LoadResult],
    *args: object,
    rules: TableRules,
    **kwargs: object,
) -> GatedLoad:
    """Run `load(conn, *args, publish=False, **kwargs)`, check the staged rows, then publish
    them or keep them as `<table>__rejected` (the published table unchanged).

    A load error (`WarehouseLoadError`) propagates with the published table untouched.
    """
    staged = load(conn, *args, publish=False, **kwargs)
    checks = check_staged(conn, staged, rules)
    if all(r.passed for r in checks.values()):
        return GatedLoad(warehouse.publish_staged(conn, staged), checks, published=True)
    rejected = warehouse.reject_staged(conn, staged.table)
    staging = warehouse.staging_table(staged.table)
    named = {name: _naming(r, staging, rejected) for name, r in checks.items()}
    return GatedLoad(staged, named, published=False, rejected_table=rejected)
