"""The Ciné-Reco code location: `build_defs` assembles it from the domain modules."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from orchestration.assets.enrichment import enrichment_assets
from orchestration.assets.features import feature_assets, feature_checks
from orchestration.assets.feedback import feedback_assets
from orchestration.assets.model import model_assets, model_checks
from orchestration.assets.raw import raw_assets
from orchestration.assets.registry import registry_assets, registry_checks
from orchestration.assets.warehouse import warehouse_assets
from orchestration.checks import warehouse_checks
from orchestration.feedback_sensor import feedback_sensors
from orchestration.jobs import jobs
from orchestration.resources import default_resources
from orchestration.sensors import schedules, sensors
from orchestration.tracking import run_end_sensors
from recommender_lib.config import Settings

ASSETS = (
    *raw_assets,
    *warehouse_assets,
    *feedback_assets,
    *feature_assets,
    *enrichment_assets,
    *model_assets,
    *registry_assets,
)
ASSET_CHECKS = (*warehouse_checks, *feature_checks, *model_checks, *registry_checks)


def build_defs(
    settings: Settings | None = None, resource_overrides: Mapping[str, object] | None = None
) -> dg.Definitions:
    """Every asset, check, job, sensor and schedule, with the resources of `settings`.

    `settings` defaults to `Settings.from_env()`; `resource_overrides` replaces resources by key
    (tests, fault injection).
    """
    # In-process execution: a multiprocess step pays ~10 s of imports (pandera, DuckDB, later
    # TensorFlow) on these small machines, and DuckDB admits one writing process per file
    # anyway. Heavier deployments can switch a job to the multiprocess executor; the warehouse
    # steps share the `duckdb_warehouse` pool so they still take turns.
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=ASSET_CHECKS,
        jobs=jobs,
        sensors=[*sensors, *feedback_sensors, *run_end_sensors],
        schedules=schedules,
        resources={**default_resources(settings), **(resource_overrides or {})},
        executor=dg.in_process_executor,
    )


defs = build_defs()
