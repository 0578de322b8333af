"""Asset checks: the quality gates between raw data and everything trained on it.

pandera schemas, key uniqueness and row-count drift are blocking with ERROR severity, so a
failing table stops its downstream assets in the same run. The warehouse tables evaluate them
inside their gated loads (`orchestration/assets/warehouse.py`: rows that fail are never
published); the factories here build them as separate checks of a published table (`catalog`).
Link coverage only warns.
"""

import dagster as dg
import pandera.pandas as pa

from orchestration.assets.warehouse import RowCountDriftConfig, imdb_titles, movie_links
from orchestration.metadata import check_result
from orchestration.resources import WAREHOUSE_POOL, WarehouseResource
from recommender_lib.warehouse import quality

__all__ = ["RowCountDriftConfig", "pandera_schema_check", "row_count_drift_check",
           "unique_key_check", "warehouse_checks"]  # fmt: skip


def _table(asset: dg.AssetsDefinition) -> str:
    return asset.key.to_user_string()


def pandera_schema_check(
    asset: dg.AssetsDefinition, schema: pa.DataFrameSchema
) -> dg.AssetChecksDefinition:
    """A blocking check that validates the asset's table against a pandera schema.

    Validation is lazy (every failing check is reported, not just the first) and runs in
    chunks, so it scales to tables larger than memory; failure cases go into the metadata.
    """
    table = _table(asset)

    @dg.asset_check(
        asset=asset, name="pandera_schema", blocking=True, pool=WAREHOUSE_POOL,
        description=f"Rows of {table} satisfy the pandera schema `{schema.name}`.",
    )  # fmt: skip
    def _check(warehouse_db: WarehouseResource) -> dg.AssetCheckResult:
        with warehouse_db.get_connection() as conn:
            return check_result(quality.validate_table(conn, table, schema))

    return _check


def unique_key_check(asset: dg.AssetsDefinition, keys: list[str]) -> dg.AssetChecksDefinition:
    """A blocking check that the key columns are unique over the whole table."""
    table = _table(asset)

    @dg.asset_check(
        asset=asset, name="unique_key", blocking=True, pool=WAREHOUSE_POOL,
        description=f"({', '.join(keys)}) identifies rows of {table} uniquely.",
    )  # fmt: skip
    def _check(warehouse_db: WarehouseResource) -> dg.AssetCheckResult:
        with warehouse_db.get_connection() as conn:
            return check_result(quality.check_unique_keys(conn, table, keys))

    return _check


def row_count_drift_check(asset: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    """A blocking check that the row count did not collapse (or explode) since the last load."""
    table = _table(asset)

    @dg.asset_check(
        asset=asset, name="row_count_drift", blocking=True, pool=WAREHOUSE_POOL,
        description=f"Row count of {table} is within bounds of the previous load.",
    )  # fmt: skip
    def _check(config: RowCountDriftConfig, warehouse_db: WarehouseResource) -> dg.AssetCheckResult:
        with warehouse_db.get_connection() as conn:
            return check_result(
                quality.check_row_count_drift(conn, table, config.max_shrink, config.max_growth)
            )

    return _check


class LinkCoverageConfig(dg.Config):
    min_coverage: float = 0.9


@dg.asset_check(
    asset=movie_links, additional_deps=[imdb_titles], pool=WAREHOUSE_POOL,
    description="Share of MovieLens links whose tconst is found in imdb_titles (warns when low).",
)  # fmt: skip
def imdb_link_coverage(
    config: LinkCoverageConfig, warehouse_db: WarehouseResource
) -> dg.AssetCheckResult:
    with warehouse_db.get_connection() as conn:
        return check_result(
            quality.check_link_coverage(conn, config.min_coverage),
            severity=dg.AssetCheckSeverity.WARN,
        )


# pandera_schema, unique_key and row_count_drift of the warehouse tables are the check specs of
# their gated loads (`orchestration/assets/warehouse.py::gate_check_specs`).
warehouse_checks: list[dg.AssetChecksDefinition] = [imdb_link_coverage]
