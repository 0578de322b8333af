"""The workflow of the platform, one step per Dagster asset of the features and model groups.

Each step reads what it needs from the warehouse (through `connect`, which opens a connection
only while reading, so training never holds DuckDB's write lock), calls the stage packages and
returns a small artefact record: a path on disk plus the numbers its asset reports. The assets
are one call each into these steps; `train_and_bundle` chains the same steps for the tests and
the benchmarks. Raw, warehouse and registry steps live in their stage packages.

    catalog -> content_features -> content_index --------------------------.
    rating_splits -> item_features -> two_tower_model -> model_evaluation   |
                                                      -> production_model -+-> serving bundle
                                      user_features, item_embeddings <-----'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from recommender_lib.atomic import atomic_path
from recommender_lib.bundle.layout import (
    ItemEmbeddings,
    akas_frame,
    assemble_bundle,
    catalog_frame,
)
from recommender_lib.bundle.layout import model_manifest as bundle_model_manifest
from recommender_lib.evaluation.report import EvaluationReport, evaluate_models, load_protocol
from recommender_lib.index.content import (
    ContentFeatures,
    build_content_index,
    save_content_index,
)
from recommender_lib.modeling.features.fit import fit_features
from recommender_lib.modeling.features.items import (
    ItemFeatures,
    load_item_features,
    save_item_features,
)
from recommender_lib.modeling.features.transform import FeatureTransform
from recommender_lib.modeling.features.users import (
    USER_FEATURES_FILE,
    save_user_features,
    user_feature_matrix,
)
from recommender_lib.modeling.splits import P1, P2, load_split, release_ratings
from recommender_lib.modeling.two_tower.params import TwoTowerParams
from recommender_lib.modeling.two_tower.trained import TrainedTwoTower
from recommender_lib.warehouse.akas import CATALOG_AKAS
from recommender_lib.warehouse.catalog import load_catalog, served_catalog_table
from recommender_lib.warehouse.posters import catalog_poster_urls
from recommender_lib.warehouse.tables import table_exists
from recommender_lib.workflow.train import train_two_tower

Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]
Log = Callable[[str], None] | None


def connection(conn: duckdb.DuckDBPyConnection) -> Connect:
    """A `Connect` over an open connection (tests, benchmarks, notebooks)."""
    return lambda: nullcontext(conn)


# ------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ContentArtefact:
    """Content vectors of every catalogue title and their fitted transform (a folder)."""

    folder: Path
    titles: int
    dimensions: int
    genres: list[str]
    titles_without_content: int

    def load(self) -> ContentFeatures:
        return ContentFeatures.load(self.folder)


@dataclass(frozen=True)
class ItemFeaturesArtefact:
    """The feature transform and every catalogue title's feature row (a folder)."""

    folder: Path
    titles: int
    rated_titles: int
    columns: list[str]
    global_mean: float
    preview: pd.DataFrame = field(repr=False, compare=False)

    def load(self) -> tuple[FeatureTransform, ItemFeatures]:
        return load_item_features(self.folder)


@dataclass(frozen=True)
class ModelArtefact:
    """A trained two-tower model (a folder) and what its asset reports."""

    folder: Path
    params: dict[str, Any]
    info: dict[str, Any]
    history: dict[str, list[float]]
    ranking_rule: str

    def load(self) -> TrainedTwoTower:
        return TrainedTwoTower.load(self.folder)

    @classmethod
    def save(cls, model: TrainedTwoTower, folder: Path) -> ModelArtefact:
        """Save `model` into a new folder, atomically."""
        with atomic_path(folder) as tmp:
            model.save(tmp)
        return cls.of(model, folder)

    @classmethod
    def of(cls, model: TrainedTwoTower, folder: Path) -> ModelArtefact:
        """The artefact of `model`, saved in `folder`."""
        params, rule = model.params.to_dict(), model.ranking.describe()
        return cls(folder, params, model.info, model.history, rule)


@dataclass(frozen=True)
class ArrayArtefact:
    """One `.npz` file of per-row vectors (user features, item embeddings)."""

    path: Path
    rows: int
    dimensions: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ContentIndexArtefact:
    """The cosine index over the content vectors, with its filter columns (a folder)."""

    folder: Path
    titles: int
    dimensions: int
    genres: list[str]
    title_types: list[str]
    approximate: bool = False  # an HNSW graph answers unfiltered-or-filtered top-k
    recall_at_10: float | None = None  # its recall@10 vs exact, checked at build (>= 0.98)


# ------------------------------------------------------------------------------- steps


def content_features(connect: Connect, folder: Path) -> ContentArtefact:
    """Content vectors of the catalogue (genres, year, runtime, IMDb rating and votes)."""
    with connect() as conn:
        features = ContentFeatures.build(load_catalog(conn))
    features.save(folder)
    return ContentArtefact(
        folder=Path(folder),
        titles=len(features.item_ids),
        dimensions=int(features.vectors.shape[1]),
        genres=list(features.transform.genres),
        titles_without_content=int((np.abs(features.vectors).sum(axis=1) == 0).sum()),
    )


def item_features(
    connect: Connect, feature_params: Mapping[str, Any], folder: Path, protocol: str = P1
) -> ItemFeaturesArtefact:
    """The feature transform and item features fitted on `protocol`'s train rows only."""
    with connect() as conn:
        transform, items = _fit_features(conn, protocol, feature_params)
    save_item_features(Path(folder), transform, items)
    return ItemFeaturesArtefact(
        folder=Path(folder),
        titles=len(items),
        rated_titles=int((items.count > 0).sum()),
        columns=list(transform.item_columns),
        global_mean=float(transform.global_mean),
        preview=items.frame(transform).head(20),
    )


def train_evaluated_model(
    connect: Connect, params: TwoTowerParams, features: ItemFeaturesArtefact, folder: Path,
    log: Log = None,
) -> ModelArtefact:  # fmt: skip
    """The two-tower model on P1 train with `features`: early stopping on validation RMSE, then
    the ranking rule chosen on validation NDCG@10."""
    transform, items = features.load()
    with connect() as conn:
        data = load_protocol(conn, P1)
    model = train_two_tower(data.train, data.validation, items, transform, params, log=log)
    model.info["trained_on"] = trained_on(data.train, f"evaluation split ({P1} train)")
    return ModelArtefact.save(model, Path(folder))


def evaluate_model(connect: Connect, evaluated: ModelArtefact, log: Log = None) -> EvaluationReport:
    """P1 metrics of the evaluated model and P2 (cold-start) metrics of the same recipe trained
    on P2 train, beside every baseline, all ranked by the serving engine."""
    model_p1 = evaluated.load()
    with connect() as conn:
        p1, p2 = load_protocol(conn, P1), load_protocol(conn, P2)
        transform, items = _fit_features(conn, P2, feature_settings(model_p1.transform))
    model_p2 = train_two_tower(p2.train, p2.validation, items, transform, model_p1.params, log=log)
    return evaluate_models(p1, model_p1, p2, model_p2)


def refit_production(
    connect: Connect, evaluated: ModelArtefact, folder: Path, log: Log = None
) -> ModelArtefact:
    """The evaluated recipe refit on every rating of the release: the same hyper-parameters,
    the number of epochs early stopping chose, and the ranking rule chosen on validation."""
    recipe = evaluated.load()
    with connect() as conn:
        ratings = release_ratings(conn)
        transform, items = _fit_features(conn, ratings, feature_settings(recipe.transform))
    model = train_two_tower(
        ratings, None, items, transform, recipe.params,
        log=log, ranking=recipe.ranking, fixed_epochs=int(recipe.info["best_epoch"]),
    )  # fmt: skip
    model.info["trained_on"] = trained_on(ratings, "full refit")
    model.info["evaluated_on"] = recipe.info.get("trained_on", {})
    return ModelArtefact.save(model, Path(folder))


def user_features(connect: Connect, production: ModelArtefact, path: Path) -> ArrayArtefact:
    """Every user of the release from ALL their ratings, with the production transform: the
    function that serves a new user from a list of ratings, so the two cannot diverge."""
    model = production.load()
    with connect() as conn:
        user_ids, matrix = user_feature_matrix(release_ratings(conn), model.items, model.transform)
    save_user_features(Path(path), user_ids, matrix)
    return ArrayArtefact(
        Path(path), len(user_ids), int(matrix.shape[1]), {"columns": model.transform.user_columns}
    )


def item_embeddings(connect: Connect, production: ModelArtefact, path: Path) -> ArrayArtefact:
    """Item-tower embeddings and ranking biases of every catalogue title (content-only ones
    too)."""
    model = production.load()
    with connect() as conn:
        item_ids = load_catalog(conn)["item_id"].to_numpy(np.int64)
    embeddings = ItemEmbeddings.from_model(model, item_ids)
    embeddings.save(Path(path))
    rated = model.items.count[model.items.index_of(item_ids)] > 0
    return ArrayArtefact(
        Path(path),
        len(item_ids),
        int(embeddings.vectors.shape[1]),
        {"titles_without_ratings": int((~rated).sum())},
    )


def content_index(connect: Connect, content: ContentArtefact, folder: Path) -> ContentIndexArtefact:
    """The normalised content vectors + id order + filter columns for exact cosine top-k."""
    features = content.load()
    with connect() as conn:
        index = build_content_index(load_catalog(conn), features)
    save_content_index(index, features.transform, Path(folder))
    graph = index.approximate
    return ContentIndexArtefact(
        Path(folder), len(index), index.dim, list(index.genre_vocab), list(index.title_type_vocab),
        approximate=graph is not None, recall_at_10=None if graph is None else graph.recall_at_10,
    )  # fmt: skip


def serving_bundle(
    connect: Connect,
    production: ModelArtefact,
    embeddings: ArrayArtefact,
    index: ContentIndexArtefact,
    users: ArrayArtefact,
    destination: Path,
    manifest: Mapping[str, Any],
) -> Path:
    """One hashed serving bundle around the production model: its embeddings, the content
    index, the catalogue metadata (with poster URLs where the TMDb enrichment found them),
    the localized titles (`catalog_akas`, where loaded) and every user of the release with all
    their ratings."""
    model = production.load()
    with connect() as conn:
        catalog = catalog_frame(load_catalog(conn), model, catalog_poster_urls(conn))
        akas = None
        if table_exists(conn, CATALOG_AKAS):
            akas = akas_frame(conn.execute(f"SELECT * FROM {CATALOG_AKAS}").df(), catalog)
        history = release_ratings(conn)
    return assemble_bundle(
        Path(destination),
        model_dir=production.folder,
        embeddings_path=embeddings.path,
        content_dir=index.folder,
        catalog=catalog,
        user_features_path=users.path,
        user_history=history,
        akas=akas,
        model=model,
        manifest={
            "source_versions": {},
            "metrics": {},
            "model": bundle_model_manifest(model),
            "content_index": {"approximate": index.approximate, "recall_at_10": index.recall_at_10},
        }
        | dict(manifest),
    )


def train_and_bundle(
    connect: Connect, params: TwoTowerParams, workdir: Path, manifest: Mapping[str, Any]
) -> tuple[Path, TrainedTwoTower]:
    """The feature and model steps chained as the assets run them (without the evaluation and
    the registry): features, P1 training, the production refit and its bundle in
    `workdir/bundle` (parts in `workdir/parts`). Returns (bundle dir, production model)."""
    parts = Path(workdir) / "parts"
    content = content_features(connect, parts / "content_features")
    features = item_features(connect, params.feature_params(), parts / "item_features")
    evaluated = train_evaluated_model(connect, params, features, parts / "models" / "p1")
    production = refit_production(connect, evaluated, parts / "models" / "prod")
    bundle = serving_bundle(
        connect,
        production,
        item_embeddings(connect, production, parts / "item_embeddings.npz"),
        content_index(connect, content, parts / "content_index"),
        user_features(connect, production, parts / USER_FEATURES_FILE),
        Path(workdir) / "bundle",
        manifest,
    )
    return bundle, production.load()


# ------------------------------------------------------------------------------- helpers


def trained_on(ratings: pd.DataFrame, kind: str) -> dict[str, object]:
    """What a model was trained on, for the manifest and `GET /version`."""
    ts = pd.to_datetime(ratings["rating_ts"], unit="s", utc=True)
    return {
        "kind": kind,
        "ratings": len(ratings),
        "users": int(ratings["user_id"].nunique()),
        "titles": int(ratings["movie_id"].nunique()),
        "first_rating_at": ts.min().isoformat() if len(ts) else None,
        "last_rating_at": ts.max().isoformat() if len(ts) else None,
    }


def feature_settings(transform: FeatureTransform) -> dict[str, Any]:
    """The settings a transform was fitted with (the `item_features` run config): P2 and the
    production refit fit their features with exactly these."""
    return {name: getattr(transform, name) for name in TwoTowerParams().feature_params()}


def _fit_features(
    conn: duckdb.DuckDBPyConnection,
    train: str | pd.DataFrame,
    settings: Mapping[str, Any],
) -> tuple[FeatureTransform, ItemFeatures]:
    """Features fitted on `train` (a protocol's train split, or ratings) over the served
    catalogue, with `settings` (`TwoTowerParams.feature_params` names)."""
    rows = load_split(conn, train, "train") if isinstance(train, str) else train
    params = TwoTowerParams(**dict(settings))
    return fit_features(conn, rows, params, catalog_table=served_catalog_table(conn))
