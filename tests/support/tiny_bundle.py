"""A real serving bundle trained in seconds on a generated sample warehouse."""

from __future__ import annotations

from pathlib import Path

from recommender_lib.catalog import CatalogFilters, build_catalog
from recommender_lib.pipeline import train_and_bundle
from recommender_lib.two_tower import TwoTowerParams
from tests.support.sample_warehouse import load_sample_warehouse

TINY_PARAMS = TwoTowerParams(
    epochs=2, patience=2, embedding_dim=8, tower_units=(16,), head_units=(16,), latent_dim=4
)


def build_tiny_bundle(mirror, workdir: Path, manifest: dict | None = None) -> Path:
    """Every bundle part from `mirror` (a `SampleMirror`), assembled at `workdir/bundle`."""
    conn = load_sample_warehouse(mirror, workdir / "scratch")
    build_catalog(conn, CatalogFilters(min_votes=10))
    return train_and_bundle(
        conn, TINY_PARAMS, workdir, {"dagster_run_id": "test"} | (manifest or {})
    )[0]
