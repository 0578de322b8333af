"""A real serving bundle trained in seconds on a generated sample warehouse."""

from __future__ import annotations

from pathlib import Path

import duckdb

from recommender_lib.modeling.two_tower.params import TwoTowerParams
from recommender_lib.warehouse.akas import load_catalog_akas
from recommender_lib.warehouse.catalog import CatalogFilters, build_catalog
from recommender_lib.workflow.steps import connection, train_and_bundle
from tests.support.sample_warehouse import load_sample_warehouse

TINY_PARAMS = TwoTowerParams(
    epochs=2, patience=2, embedding_dim=8, tower_units=(16,), head_units=(16,), latent_dim=4
)


def tiny_warehouse(mirror, workdir: Path) -> duckdb.DuckDBPyConnection:
    """The sample warehouse of `mirror` with its splits, catalogue and its akas, in memory."""
    conn = load_sample_warehouse(mirror, workdir / "scratch")
    build_catalog(conn, CatalogFilters(min_votes=10))
    load_catalog_akas(conn, mirror.akas)
    return conn


def build_tiny_bundle(
    mirror,
    workdir: Path,
    manifest: dict | None = None,
    conn: duckdb.DuckDBPyConnection | None = None,
) -> Path:
    """Every bundle part from `mirror` (a `SampleMirror`), assembled at `workdir/bundle`: the
    evaluated recipe refit on every rating, as the platform bundles it."""
    conn = tiny_warehouse(mirror, workdir) if conn is None else conn
    return train_and_bundle(
        connection(conn), TINY_PARAMS, workdir, {"dagster_run_id": "test"} | (manifest or {})
    )[0]
