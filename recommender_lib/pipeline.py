"""Warehouse -> trained model -> serving bundle in one call: what the Dagster assets do step by
step (features, model, embeddings, content index, bundle), for tests, benchmarks and notebooks.

The warehouse must hold the MovieLens tables, `rating_splits` and the `catalog` table.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb

from recommender_lib import splits, training
from recommender_lib.catalog import CATALOG, load_catalog
from recommender_lib.content import ContentFeatures, build_content_index, save_content_index
from recommender_lib.serving_bundle import ItemEmbeddings, assemble_bundle, catalog_frame
from recommender_lib.two_tower import TrainedTwoTower, TwoTowerParams


def train_and_bundle(
    conn: duckdb.DuckDBPyConnection,
    params: TwoTowerParams,
    workdir: Path,
    manifest: Mapping[str, Any],
) -> tuple[Path, TrainedTwoTower]:
    """Train on P1 with the catalogue's features and assemble `workdir/bundle`; parts stay in
    `workdir/parts`. Returns (bundle dir, model)."""
    workdir, parts = Path(workdir), Path(workdir) / "parts"
    features = training.fit_protocol_features(conn, splits.P1, params, catalog_table=CATALOG)
    model = training.train_model(training.load_protocol(conn, splits.P1), params, features)
    catalog = catalog_frame(load_catalog(conn), model)
    content = ContentFeatures.build(catalog)
    user_ids, matrix = training.known_user_features(conn, *features)
    embeddings = ItemEmbeddings.from_model(model, catalog["item_id"].to_numpy())
    bundle = assemble_bundle(
        workdir / "bundle",
        model_dir=model.save(parts / "model"),
        embeddings_path=embeddings.save(parts / "item_embeddings.npz"),
        content_dir=save_content_index(
            build_content_index(catalog, content), content.transform, parts / "content"
        ),
        catalog=catalog,
        user_features_path=training.save_user_features(parts / "users.npz", user_ids, matrix),
        user_history=splits.load_split(conn, splits.P1, "train+validation"),
        manifest={"source_versions": {}, "metrics": {}, **manifest},
    )
    return bundle, model
