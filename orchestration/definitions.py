"""The one `Definitions` object of the Ciné-Reco code location."""

from __future__ import annotations

import dagster as dg

from orchestration.assets.features import feature_assets, feature_checks
from orchestration.assets.model import model_assets, model_checks
from orchestration.assets.raw import raw_assets
from orchestration.assets.registry import registry_assets, registry_checks
from orchestration.assets.warehouse import warehouse_assets
from orchestration.checks import warehouse_checks
from orchestration.jobs import full_refresh_job, ingest_job, retrain_job
from orchestration.resources import default_resources
from orchestration.sensors import schedules, sensors

# In-process execution: a multiprocess step pays ~10 s of imports (pandera, DuckDB, later
# TensorFlow) on these small machines, and DuckDB admits one writing process per file anyway.
# Heavier deployments can switch a job to the multiprocess executor; the warehouse steps
# share the `duckdb_warehouse` pool so they still take turns.
defs = dg.Definitions(
    assets=[*raw_assets, *warehouse_assets, *feature_assets, *model_assets, *registry_assets],
    asset_checks=[*warehouse_checks, *feature_checks, *model_checks, *registry_checks],
    jobs=[ingest_job, retrain_job, full_refresh_job],
    sensors=sensors,
    schedules=schedules,
    resources=default_resources(),
    executor=dg.in_process_executor,
)
