"""The one `Definitions` object of the Ciné-Reco code location."""

from __future__ import annotations

import dagster as dg

from orchestration.assets.raw import raw_assets
from orchestration.assets.warehouse import warehouse_assets
from orchestration.checks import warehouse_checks
from orchestration.jobs import ingest_job
from orchestration.resources import default_resources

# In-process execution: a multiprocess step pays ~10 s of imports (pandera, DuckDB, later
# TensorFlow) on these small machines, and DuckDB admits one writing process per file anyway.
# Heavier deployments can switch a job to the multiprocess executor; the warehouse steps
# share the `duckdb_warehouse` pool so they still take turns.
defs = dg.Definitions(
    assets=[*raw_assets, *warehouse_assets],
    asset_checks=warehouse_checks,
    jobs=[ingest_job],
    resources=default_resources(),
    executor=dg.in_process_executor,
)
