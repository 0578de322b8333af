"""A real serving bundle trained in seconds on a generated sample warehouse."""

from __future__ import annotations

from pathlib import Path

from recommender_lib import splits, training
from recommender_lib.catalog import CATALOG, CatalogFilters, build_catalog, load_catalog
from recommender_lib.content import ContentFeatures, build_content_index, save_content_index
from recommender_lib.serving_bundle import ItemEmbeddings, assemble_bundle, catalog_frame
from recommender_lib.two_tower import TwoTowerParams
from tests.support.sample_warehouse import load_sample_warehouse

TINY_PARAMS = TwoTowerParams(
    epochs=2, patience=2, embedding_dim=8, tower_units=(16,), head_units=(16,), latent_dim=4
)


def build_tiny_bundle(mirror, workdir: Path, manifest: dict | None = None) -> Path:
    """Every bundle part from `mirror` (a `SampleMirror`), assembled at `workdir/bundle`."""
    conn = load_sample_warehouse(mirror, workdir / "scratch")
    build_catalog(conn, CatalogFilters(min_votes=10))
    features = training.fit_protocol_features(conn, splits.P1, TINY_PARAMS, catalog_table=CATALOG)
    model = training.train_model(training.load_protocol(conn, splits.P1), TINY_PARAMS, features)
    catalog = catalog_frame(load_catalog(conn), model)
    content = ContentFeatures.build(catalog)
    user_ids, matrix = training.known_user_features(conn, *features)
    return assemble_bundle(
        workdir / "bundle",
        model_dir=model.save(workdir / "model"),
        embeddings_path=ItemEmbeddings.from_model(model, catalog["item_id"].to_numpy()).save(
            workdir / "item_embeddings.npz"
        ),
        content_dir=save_content_index(
            build_content_index(catalog, content), content.transform, workdir / "content"
        ),
        catalog=catalog,
        user_features_path=training.save_user_features(workdir / "users.npz", user_ids, matrix),
        user_history=splits.load_split(conn, splits.P1, "train+validation"),
        manifest={
            "dagster_run_id": "test",
            "source_versions": {},
            "metrics": {},
            **(manifest or {}),
        },
    )
