"""Warehouse -> evaluated model -> production refit -> serving bundle in one call: what the
Dagster assets do step by step, for tests, benchmarks and notebooks.

The warehouse must hold the MovieLens tables, `rating_splits` and the `catalog` table.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb

from recommender_lib.bundle.layout import (
    ItemEmbeddings,
    assemble_bundle,
    catalog_frame,
    model_manifest,
)
from recommender_lib.index.content import ContentFeatures, build_content_index, save_content_index
from recommender_lib.modeling import splits
from recommender_lib.modeling.two_tower import TrainedTwoTower, TwoTowerParams
from recommender_lib.warehouse.catalog import load_catalog
from recommender_lib.workflow import training


def bundle_model(
    conn: duckdb.DuckDBPyConnection,
    model: TrainedTwoTower,
    workdir: Path,
    manifest: Mapping[str, Any],
) -> Path:
    """Assemble `workdir/bundle` around `model` (parts stay in `workdir/parts`): its item
    embeddings, the content index, the catalogue and every user of the release."""
    workdir, parts = Path(workdir), Path(workdir) / "parts"
    catalog = catalog_frame(load_catalog(conn), model)
    content = ContentFeatures.build(catalog)
    user_ids, matrix = training.known_user_features(conn, model.transform, model.items)
    embeddings = ItemEmbeddings.from_model(model, catalog["item_id"].to_numpy())
    return assemble_bundle(
        workdir / "bundle",
        model_dir=model.save(parts / "model"),
        embeddings_path=embeddings.save(parts / "item_embeddings.npz"),
        content_dir=save_content_index(
            build_content_index(catalog, content), content.transform, parts / "content"
        ),
        catalog=catalog,
        user_features_path=training.save_user_features(parts / "users.npz", user_ids, matrix),
        user_history=training.release_ratings(conn),
        manifest={"source_versions": {}, "metrics": {}, "model": model_manifest(model)}
        | dict(manifest),
    )


def train_and_bundle(
    conn: duckdb.DuckDBPyConnection,
    params: TwoTowerParams,
    workdir: Path,
    manifest: Mapping[str, Any],
) -> tuple[Path, TrainedTwoTower]:
    """Train on P1 (the evaluated recipe: early stopping and ranking rule on validation), refit
    it on every rating of the release and bundle the refit. Returns (bundle dir, refit model)."""
    features = training.fit_protocol_features(conn, splits.P1, params)
    evaluated = training.train_model(training.load_protocol(conn, splits.P1), params, features)
    model = training.refit_production(conn, evaluated)
    return bundle_model(conn, model, workdir, manifest), model
