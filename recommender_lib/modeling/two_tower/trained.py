"""A trained two-tower model: inference (stars, embeddings) and its folder on disk.

The folder holds the Keras model (`MODEL_FILE`), the feature transform and item features
(`recommender_lib.modeling.features.items.write_item_features`), the id-embedding row of each
title (`ITEM_INDEX_FILE`) and a JSON manifest with the parameters, ranking rule, history and
training info (`META_FILE`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recommender_lib.modeling.baselines import MAX_STARS, MIN_STARS
from recommender_lib.modeling.features.items import (
    ItemFeatures,
    load_item_features,
    write_item_features,
)
from recommender_lib.modeling.features.transform import (
    FeatureTransform,
    baseline_prediction,
    check_ratings,
    empty_ratings,
)
from recommender_lib.modeling.features.users import user_feature_matrix
from recommender_lib.modeling.two_tower.dataset import item_inputs
from recommender_lib.modeling.two_tower.networks import infer
from recommender_lib.modeling.two_tower.params import TwoTowerParams
from recommender_lib.modeling.two_tower.ranking_rule import RankingRule, UnknownRankingRuleError

MODEL_FILE = "two_tower.keras"
META_FILE = "two_tower.json"
ITEM_INDEX_FILE = "item_index.npy"


@dataclass
class TrainedTwoTower:
    """A trained two-tower model with its feature transform, catalogue item features and the
    ranking rule chosen on validation (applied by `recommender_lib.engine.ranking.RankingEngine`).

    Rating prediction follows the `RatingModel` protocol of `recommender_lib.evaluation.protocols`.
    """

    model: Any  # the composed keras.Model (towers and head are nested models)
    transform: FeatureTransform
    items: ItemFeatures
    params: TwoTowerParams
    item_index: np.ndarray  # int32 id-embedding row of each catalogue item (0 = OOV)
    temperature: float
    ranking: RankingRule = field(default_factory=RankingRule)
    history: dict[str, list[float]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    name: str = "two_tower"
    _item_cache: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    # --- sub-models
    @property
    def user_tower(self) -> Any:
        return self.model.get_layer("user_tower")

    @property
    def item_tower(self) -> Any:
        return self.model.get_layer("item_tower")

    @property
    def head(self) -> Any:
        return self.model.get_layer("fusion_head")

    # --- features
    def user_features(self, history: pd.DataFrame, user_ids: np.ndarray) -> np.ndarray:
        hist = check_ratings(history) if len(history) else empty_ratings()
        return user_feature_matrix(hist, self.items, self.transform, user_ids)[1]

    # --- embeddings
    def user_embeddings(self, user_x: np.ndarray) -> np.ndarray:
        return infer(self.user_tower, user_x)

    def _embed_items(self, rows: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v, b = infer(self.item_tower, [rows, ids])
        return v, b

    def _catalogue(self) -> tuple[np.ndarray, np.ndarray]:
        if self._item_cache is None:
            rows = self.items.matrix
            self._item_cache = self._embed_items(rows, self.item_index.astype(np.int32))
        return self._item_cache

    def item_vectors(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(L2-normalised embeddings, item-tower ranking biases) of `item_ids`; ids outside the
        item features go through the item tower with content-only rows."""
        v, b = self._catalogue()
        ids = np.asarray(item_ids, dtype=np.int64)
        idx = self.items.index_of(ids)
        if (idx >= 0).all():
            return v[idx], b[idx]
        out_v, out_b = np.empty((len(ids), v.shape[1]), np.float32), np.empty(len(ids), np.float32)
        out_v[idx >= 0], out_b[idx >= 0] = v[idx[idx >= 0]], b[idx[idx >= 0]]
        out_v[idx < 0], out_b[idx < 0] = self._embed_items(
            *item_inputs(self.items, self.transform, self.item_index, ids[idx < 0])
        )
        return out_v, out_b

    def head_predict(self, u: np.ndarray, v: np.ndarray, base: np.ndarray) -> np.ndarray:
        """Fusion-head stars (unclipped, float64) of aligned user/item embeddings + baseline."""
        pred = infer(self.head, [u, v, np.asarray(base, np.float32).reshape(-1, 1)])
        return np.asarray(pred, dtype=np.float64).ravel()

    # --- RatingModel protocol
    def predict(self, history: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
        """Predicted stars for (user_id, movie_id) pairs given each user's known ratings."""
        if len(pairs) == 0:
            return np.zeros(0, dtype=np.float64)
        users, inv = np.unique(pairs["user_id"].to_numpy(np.int64), return_inverse=True)
        items, jnv = np.unique(pairs["movie_id"].to_numpy(np.int64), return_inverse=True)
        ux = self.user_features(history, users)
        u = self.user_embeddings(ux)
        v, _ = self.item_vectors(items)
        base = baseline_prediction(ux[inv], self.items.biases(items)[jnv], self.transform)
        return np.clip(self.head_predict(u[inv], v[jnv], base), MIN_STARS, MAX_STARS)

    def predict_from_ratings(self, ratings: pd.DataFrame, item_ids: np.ndarray) -> np.ndarray:
        """Predicted stars of `item_ids` for one (possibly new) user from their ratings."""
        df = ratings.copy()
        df["user_id"] = -1
        if "rating_ts" not in df.columns:
            df["rating_ts"] = np.int64(self.transform.train_end_ts)
        pairs = pd.DataFrame({"user_id": -1, "movie_id": np.asarray(item_ids, dtype=np.int64)})
        return self.predict(df, pairs)

    # --- persistence
    def save(self, directory: str | Path) -> Path:
        """Write the Keras model, the JSON transform, the item features and a JSON manifest."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save(out / MODEL_FILE)
        write_item_features(out, self.transform, self.items)
        meta = {
            "name": self.name,
            "params": self.params.to_dict(),
            "temperature": self.temperature,
            "ranking": self.ranking.to_dict(),
            "history": self.history,
            "info": self.info,
        }
        (out / META_FILE).write_text(json.dumps(meta, indent=1, default=_json_default))
        np.save(out / ITEM_INDEX_FILE, self.item_index, allow_pickle=False)
        return out

    @classmethod
    def load(cls, directory: str | Path) -> TrainedTwoTower:
        import keras

        import recommender_lib.modeling.two_tower.layers  # noqa: F401  (registers its layers)

        d = Path(directory)
        model = keras.saving.load_model(d / MODEL_FILE, compile=False)
        meta = json.loads((d / META_FILE).read_text())
        if not isinstance(meta.get("ranking"), dict):
            raise UnknownRankingRuleError(f"{d / META_FILE} names no ranking rule")
        transform, items = load_item_features(d)
        return cls(
            model=model,
            transform=transform,
            items=items,
            params=TwoTowerParams.from_dict(meta["params"]),
            item_index=np.load(d / ITEM_INDEX_FILE, allow_pickle=False),
            temperature=float(meta["temperature"]),
            ranking=RankingRule.from_dict(meta["ranking"]),
            history=meta.get("history", {}),
            info=meta.get("info", {}),
            name=meta.get("name", "two_tower"),
        )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")
