"""The fitted feature transform and the rating frames every feature is computed from."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from recommender_lib.sources.formats import IMDB_TO_MOVIELENS_GENRE

FEATURES_VERSION = 1
SECONDS_PER_YEAR = 365.25 * 86_400.0
RATING_COLUMNS = ("user_id", "movie_id", "rating", "rating_ts")


@dataclass
class FeatureTransform:
    """Everything fitted on the train split that turns raw data into model inputs (plain JSON)."""

    global_mean: float
    global_std: float
    train_end_ts: int  # latest train rating time: the "now" of ratings without a timestamp
    genres: list[str]
    genre_prior: list[float]  # share of train ratings per genre (toward which shares shrink)
    item_columns: list[str] = field(default_factory=list)
    user_columns: list[str] = field(default_factory=list)
    scalers: dict[str, list[float]] = field(default_factory=dict)  # column -> [center, scale]
    item_lambda: float = 25.0  # damped item bias
    user_lambda: float = 10.0  # damped user bias
    mean_lambda: float = 5.0  # shrinkage of item/user mean ratings toward the global mean
    genre_lambda: float = 5.0  # shrinkage of per-genre preference toward the user's mean
    share_alpha: float = 10.0  # pseudo-ratings pulling a user's genre shares to the prior
    recent_window: int = 20  # ratings in the "recent" window
    latent_dim: int = 16  # implicit co-rating factors per title (truncated SVD), 0 = none
    latent_shrink: float = 5.0  # factors of a title with n ratings are scaled by n / (n + this)
    seed: int = 0
    imdb_genre_map: dict[str, str] = field(default_factory=lambda: dict(IMDB_TO_MOVIELENS_GENRE))
    version: int = FEATURES_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> FeatureTransform:
        data = json.loads(text)
        if data.get("version") != FEATURES_VERSION:
            raise ValueError(f"feature transform version {data.get('version')} unsupported")
        return cls(**data)

    def scale(self, column: str, values: np.ndarray) -> np.ndarray:
        center, scale = self.scalers[column]
        return (np.asarray(values, dtype=np.float64) - center) / scale

    @property
    def user_bias_column(self) -> int:
        return self.user_columns.index("u_bias")

    @property
    def item_bias_column(self) -> int:
        return self.item_columns.index("ml_bias")


def fit_scaler(values: np.ndarray) -> list[float]:
    """[center, scale] of the finite `values` (scale 1 where they do not vary)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return [0.0, 1.0]
    std = float(v.std())
    return [float(v.mean()), std if std > 1e-9 else 1.0]


def check_ratings(ratings: pd.DataFrame) -> pd.DataFrame:
    """The rating columns the features need, typed; raises on missing columns."""
    missing = [c for c in RATING_COLUMNS if c not in ratings.columns]
    if missing:
        raise ValueError(f"ratings frame lacks columns {missing}")
    return pd.DataFrame(
        {
            "user_id": ratings["user_id"].to_numpy(np.int64),
            "movie_id": ratings["movie_id"].to_numpy(np.int64),
            "rating": ratings["rating"].to_numpy(np.float64),
            "rating_ts": ratings["rating_ts"].to_numpy(np.int64),
        }
    )


def empty_ratings() -> pd.DataFrame:
    """A typed ratings frame without rows (a user who rated nothing)."""
    return check_ratings(pd.DataFrame(columns=list(RATING_COLUMNS)))


def baseline_prediction(
    user_x: np.ndarray, item_bias: np.ndarray, transform: FeatureTransform
) -> np.ndarray:
    """Damped-bias baseline μ + b_item + b_user, read off the feature vectors (stars)."""
    return transform.global_mean + np.asarray(item_bias) + user_x[:, transform.user_bias_column]
