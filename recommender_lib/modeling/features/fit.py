"""Fitting the feature transform and the catalogue's item features on a train split only."""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pandas as pd

from recommender_lib.modeling.features.items import ItemFeatures, fit_item_columns
from recommender_lib.modeling.features.transform import FeatureTransform, check_ratings
from recommender_lib.modeling.features.users import fit_user_columns
from recommender_lib.modeling.two_tower.params import TwoTowerParams
from recommender_lib.sources.formats import MOVIELENS_GENRES, MOVIELENS_NO_GENRES


def _fit(
    conn: duckdb.DuckDBPyConnection, train: pd.DataFrame, catalog_table: str | None, **params: Any
) -> tuple[FeatureTransform, ItemFeatures]:
    """The fitted transform and the catalogue's item features under it, in one pass."""
    train = check_ratings(train)
    if train.empty:
        raise ValueError("cannot fit features on an empty train split")
    genres = [g for g in MOVIELENS_GENRES if g != MOVIELENS_NO_GENRES]
    transform = FeatureTransform(
        global_mean=float(train["rating"].mean()),
        global_std=float(train["rating"].std(ddof=0)) or 1.0,
        train_end_ts=int(train["rating_ts"].max()),
        genres=genres,
        genre_prior=[0.0] * len(genres),
        **params,
    )
    items = fit_item_columns(conn, train, transform, catalog_table)
    # Genre prior: share of train ratings that fall on each genre, from per-title counts (no
    # ratings x genres matrix), rounded to float32 as the per-rating float32 mean was.
    idx = items.index_of(train["movie_id"].to_numpy())
    per_title = np.bincount(idx[idx >= 0], minlength=len(items)).astype(np.float64)
    prior = (per_title @ items.genres.astype(np.float64) / len(train)).astype(np.float32)
    transform.genre_prior = [float(x) for x in prior]
    fit_user_columns(train, transform)
    return transform, items


def fit_feature_transform(
    conn: duckdb.DuckDBPyConnection,
    train: pd.DataFrame,
    *,
    catalog_table: str | None = None,
    **params: Any,
) -> FeatureTransform:
    """Fit the transform (global mean, genre vocabulary and priors, scalers) on `train` only.

    `params` override the FeatureTransform hyper-parameters (`item_lambda`, `user_lambda`, ...).
    """
    return _fit(conn, train, catalog_table, **params)[0]


def fit_features(
    conn: Any, train: pd.DataFrame, params: TwoTowerParams | None = None, **kwargs: Any
) -> tuple[FeatureTransform, ItemFeatures]:
    """Fit the feature transform and build the catalogue's item features from `train` only
    (the item table and its co-rating factors are computed once, for both)."""
    p = params or TwoTowerParams()
    return _fit(conn, train, kwargs.pop("catalog_table", None), **p.feature_params(), **kwargs)
