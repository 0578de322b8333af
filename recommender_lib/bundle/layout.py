"""What goes into a serving bundle, and how it is assembled (docs/architecture.md §4).

Layout (every array in catalogue order: ascending item id, as in the `catalog` table)::

    manifest.json                 version, created_at, git commit, run ids, data versions,
                                  metrics, sha256 of every file (`recommender_lib.bundle.format`)
    model/                        the Keras two-tower model + feature transform + item features
    embeddings/item_embeddings.npz   item-tower output + ranking bias of every catalogue title
    content/                      the cosine `ContentIndex` + the content transform (JSON)
    catalog.parquet               title metadata shown by the API (title, type, year, genres,
                                  poster URL…)
    akas.parquet                  localized titles of catalogue titles (IMDb akas): item_id,
                                  title, region, language, preference, ordering
    users/user_features.npz       known users' feature vectors (all their ratings in the release)
    users/user_history.npz        each known user's ratings: titles, stars, times (CSR arrays)
    personal/                     above `APPROXIMATE_THRESHOLD` titles (or when asked): the HNSW
                                  graph of personalised retrieval (`index.personal`), its
                                  recall@10 also in the manifest's `personal_index` entry

The manifest's `model` entry says what the served model was trained on (a full refit on every
rating of the release, or an evaluation split) and which ranking rule it serves with.

The directory is written by `recommender_lib.bundle.format.write_bundle` (temp dir + rename,
hashes) and read by `recommender_lib.engine.recommender.Recommender`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from recommender_lib.atomic import atomic_path
from recommender_lib.bundle.format import write_bundle
from recommender_lib.index.backends import APPROXIMATE_THRESHOLD, HNSWParams
from recommender_lib.index.localized_titles import aka_preference
from recommender_lib.index.personal import (
    PersonalIndex,
    check_personal_recall,
    item_log_popularity,
    recall_sample,
)
from recommender_lib.modeling.features.users import USER_FEATURES_FILE, load_user_features
from recommender_lib.modeling.two_tower.trained import TrainedTwoTower

MODEL_DIR = "model"
EMBEDDINGS_FILE = "embeddings/item_embeddings.npz"
CONTENT_DIR = "content"
CATALOG_FILE = "catalog.parquet"
AKAS_FILE = "akas.parquet"
USER_FEATURES_PATH = f"users/{USER_FEATURES_FILE}"
USER_HISTORY_FILE = "users/user_history.npz"
PERSONAL_DIR = "personal"
CATALOG_COLUMNS = (
    "item_id", "tconst", "movie_id", "title", "title_type", "year", "genres", "runtime",
    "imdb_rating", "imdb_votes", "ml_ratings", "popularity", "poster_url",
)  # fmt: skip
AKAS_COLUMNS = ("item_id", "title", "region", "language", "preference", "ordering")


@dataclass
class ItemEmbeddings:
    """Item-tower embeddings (L2-normalised) and ranking biases of every catalogue title."""

    item_ids: np.ndarray  # int64, ascending
    vectors: np.ndarray  # float32 (n, d)
    biases: np.ndarray  # float32 (n,): item-tower ranking bias (the rule adds popularity)

    @classmethod
    def from_model(cls, model: TrainedTwoTower, item_ids: np.ndarray) -> ItemEmbeddings:
        """Embed `item_ids` with the item tower; titles nobody rated get content-only vectors."""
        ids = np.asarray(item_ids, dtype=np.int64)
        if len(ids) and (np.diff(ids) <= 0).any():
            raise ValueError("item ids must be unique and ascending (catalogue order)")
        vectors, biases = model.item_vectors(ids)
        return cls(ids, np.asarray(vectors, np.float32), np.asarray(biases, np.float32))

    def save(self, path: Path) -> Path:
        with atomic_path(Path(path)) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, item_ids=self.item_ids, vectors=self.vectors, biases=self.biases)
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> ItemEmbeddings:
        with np.load(path, allow_pickle=False) as data:
            return cls(data["item_ids"], data["vectors"], data["biases"])


def catalog_frame(
    catalog: pd.DataFrame, model: TrainedTwoTower, posters: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The catalogue metadata served by the API, with MovieLens train counts, popularity and
    poster URLs (`posters`: item_id, poster_url; titles without one get None).

    popularity = train ratings + IMDb votes / 100 (one MovieLens rating ~ 100 IMDb votes): the
    tie-breaker of search and the fallback ranking for users without ratings.
    """
    df = catalog.sort_values("item_id").reset_index(drop=True)
    urls = (
        {} if posters is None else dict(zip(posters["item_id"], posters["poster_url"], strict=True))
    )
    df["poster_url"] = [urls.get(i) for i in df["item_id"].tolist()]
    idx = model.items.index_of(df["item_id"].to_numpy(np.int64))
    df["ml_ratings"] = np.where(idx >= 0, model.items.count[np.maximum(idx, 0)], 0)
    votes = df["imdb_votes"].astype("Float64").fillna(0).to_numpy(np.float64)
    df["popularity"] = df["ml_ratings"].to_numpy(np.float64) + votes / 100.0
    df["genres"] = [list(g) if g is not None else [] for g in df["genres"]]
    return df[list(CATALOG_COLUMNS)]


def akas_frame(akas: pd.DataFrame, catalog: pd.DataFrame) -> pd.DataFrame:
    """The bundle's akas: warehouse akas rows (tconst, title, region, language, types,
    attributes, ordering) of catalogue titles, by item id, with their `aka_preference`."""
    item_of = dict(zip(catalog["tconst"], catalog["item_id"], strict=True))
    rows = akas[akas["tconst"].isin(item_of.keys()) & akas["title"].notna()]
    frame = pd.DataFrame(
        {
            "item_id": rows["tconst"].map(item_of).to_numpy(np.int64),
            "title": rows["title"].astype(str).to_numpy(),
            "region": rows["region"].to_numpy(object),
            "language": rows["language"].to_numpy(object),
            "preference": np.fromiter(
                map(aka_preference, rows["types"], rows["attributes"]), np.int8, len(rows)
            ),
            "ordering": rows["ordering"].to_numpy(np.int32),
        }
    )
    return frame.sort_values(["item_id", "ordering"], kind="stable").reset_index(drop=True)


def model_manifest(model: TrainedTwoTower) -> dict[str, Any]:
    """The manifest's `model` entry: training data, ranking rule, the evaluated recipe's data."""
    return {
        "trained_on": model.info.get("trained_on", {}),
        "evaluated_on": model.info.get("evaluated_on", model.info.get("trained_on", {})),
        "epochs": model.info.get("epochs_run"),
        "ranking_rule": model.ranking.to_dict() | {"description": model.ranking.describe()},
    }


def user_history_arrays(history: pd.DataFrame) -> dict[str, np.ndarray]:
    """CSR arrays of each known user's ratings: user_ids, offsets, and per rating item_ids,
    ratings, rating_ts (sorted by user, then item)."""
    df = history[["user_id", "movie_id", "rating", "rating_ts"]].sort_values(
        ["user_id", "movie_id"], kind="stable"
    )
    users, starts = np.unique(df["user_id"].to_numpy(np.int64), return_index=True)
    return {
        "user_ids": users,
        "offsets": np.append(starts, len(df)).astype(np.int64),
        "item_ids": df["movie_id"].to_numpy(np.int64),
        "ratings": df["rating"].to_numpy(np.float32),
        "rating_ts": df["rating_ts"].to_numpy(np.int64),
    }


def personal_index(
    model: TrainedTwoTower,
    embeddings: ItemEmbeddings,
    user_features_path: Path,
    history: pd.DataFrame,
    hnsw: HNSWParams | None = None,
) -> PersonalIndex:
    """The personalised-retrieval HNSW graph over the bundle's item embeddings, its recall@10
    checked (`RecallTooLow` below 0.98) on a seeded sample of the release's users: their
    user-tower vectors with the rule's popularity weight for their number of ratings."""
    log_pop = item_log_popularity(model.items, embeddings.item_ids)
    index = PersonalIndex.build(embeddings.vectors, embeddings.biases, log_pop, hnsw)
    user_ids, matrix = load_user_features(Path(user_features_path))
    if len(user_ids) == 0:
        raise ValueError("no users to check the personal index's recall on")
    pick = recall_sample(len(user_ids))
    counts = history["user_id"].value_counts()
    n = counts.reindex(user_ids[pick], fill_value=0).to_numpy(np.float64)
    u = np.asarray(model.user_embeddings(matrix[pick]), dtype=np.float32)
    queries = index.augmentation.queries(u, model.temperature, model.ranking.popularity_weight(n))
    check_personal_recall(index, embeddings.vectors, embeddings.biases, log_pop, queries)
    return index


def assemble_bundle(
    destination: Path,
    *,
    model_dir: Path,
    embeddings_path: Path,
    content_dir: Path,
    catalog: pd.DataFrame,
    user_features_path: Path,
    user_history: pd.DataFrame,
    manifest: Mapping[str, Any],
    akas: pd.DataFrame | None = None,
    approximate: bool | None = None,
    hnsw: HNSWParams | None = None,
    model: TrainedTwoTower | None = None,
) -> Path:
    """Write one self-contained, hashed serving bundle to `destination` (atomically);
    `akas` (`akas_frame`) may be None: a catalogue without localized titles. `approximate`:
    None = the personal HNSW graph (`personal_index`, `hnsw` parameters) above
    `APPROXIMATE_THRESHOLD` titles, True / False = always / never; its recall check raises
    `RecallTooLow` (a `ValueError`) below 0.98. `model`: the model of `model_dir` when the
    caller has it loaded (else loaded here when the graph is built)."""
    Path(destination).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bundle-parts-", dir=Path(destination).parent) as d:
        parts = Path(d)
        catalog.to_parquet(parts / "catalog.parquet", index=False)
        akas = akas if akas is not None else pd.DataFrame({c: [] for c in AKAS_COLUMNS})
        akas[list(AKAS_COLUMNS)].to_parquet(parts / "akas.parquet", index=False)
        with open(parts / "user_history.npz", "wb") as fh:
            np.savez(fh, **cast(dict[str, Any], user_history_arrays(user_history)))
        files = {
            MODEL_DIR: Path(model_dir),
            EMBEDDINGS_FILE: Path(embeddings_path),
            CONTENT_DIR: Path(content_dir),
            CATALOG_FILE: parts / "catalog.parquet",
            AKAS_FILE: parts / "akas.parquet",
            USER_FEATURES_PATH: Path(user_features_path),
            USER_HISTORY_FILE: parts / "user_history.npz",
        }
        personal: dict[str, Any] = {"approximate": False}
        if len(catalog) > APPROXIMATE_THRESHOLD if approximate is None else approximate:
            model = model or TrainedTwoTower.load(Path(model_dir))
            embeddings = ItemEmbeddings.load(Path(embeddings_path))
            index = personal_index(model, embeddings, user_features_path, user_history, hnsw)
            index.save(parts / PERSONAL_DIR)
            files[PERSONAL_DIR] = parts / PERSONAL_DIR
            personal = index.describe()
        return write_bundle(Path(destination), files, {**manifest, "personal_index": personal})
