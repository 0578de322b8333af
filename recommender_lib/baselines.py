"""Baselines reported beside every model on the same split (DESIGN.md §6).

Each baseline follows `recommender_lib.evaluation.RatingModel`: `fit(train)` learns from the
protocol's training rows only; `predict(history, pairs)` and `score_catalogue(history, ...)` get
what the model may know about the users at prediction time (their training rows under P1, their
k revealed rows under P2) and never anything else.

- `GlobalMean` predicts the training mean. It cannot rank: its catalogue scores are all equal,
  and any top-k would only reflect the tie-break, so it sets `ranks_items = False` and the
  evaluation reports its ranking metrics as NaN instead of a meaningless number.
- `DampedBias` is mu + b_i + b_u with damped (shrunk) item and user offsets, the user offset
  recomputed from the history given at prediction time, so a cold-start user is folded in from
  its revealed ratings alone. Ranking by mu + b_i + b_u is ranking by b_i.
- `MostPopular` ranks by training rating count (ties: higher mean, then lower movie id); its
  rating prediction is the item mean shrunk towards the global mean,
  (sum(r) + λ·mu) / (n_i + λ) with λ = `item_lambda`, i.e. mu + b_i without a user term.

Unknown items get b_i = 0 (the global mean); users without history get b_u = 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

MIN_STARS = 0.5
MAX_STARS = 5.0


def _require_fitted(model: object, attr: str) -> None:
    if getattr(model, attr, None) is None:
        raise RuntimeError(f"{type(model).__name__} must be fit() before predicting")


def _item_bias(train: pd.DataFrame, mu: float, lam: float) -> pd.Series:
    """b_i = sum(r - mu) / (n_i + λ), indexed by movie_id."""
    grouped = train.groupby("movie_id", sort=True)["rating"]
    return (grouped.sum() - mu * grouped.count()) / (grouped.count() + lam)


def _lookup(series: pd.Series, keys: np.ndarray | pd.Series, default: float = 0.0) -> np.ndarray:
    """series[keys] as float64, `default` for keys the series does not have."""
    pos = series.index.get_indexer(np.asarray(keys))
    values = series.to_numpy(dtype=np.float64)
    out = np.full(pos.shape, default, dtype=np.float64)
    known = pos >= 0
    out[known] = values[pos[known]]
    return out


class GlobalMean:
    """Predicts the training mean for every pair; does not rank (see module docstring)."""

    name = "global_mean"
    ranks_items = False

    def __init__(self) -> None:
        self.mu: float | None = None

    def fit(self, train: pd.DataFrame) -> GlobalMean:
        if train.empty:
            raise ValueError("cannot fit on an empty training set")
        self.mu = float(train["rating"].mean())
        return self

    def predict(self, history: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
        _require_fitted(self, "mu")
        return np.full(len(pairs), self.mu, dtype=np.float64)

    def score_catalogue(
        self, history: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray
    ) -> np.ndarray:
        _require_fitted(self, "mu")
        return np.full((len(user_ids), len(item_ids)), self.mu, dtype=np.float64)


class DampedBias:
    """mu + b_i + b_u with b_i, b_u damped by `item_lambda`, `user_lambda` (clipped to stars)."""

    name = "damped_bias"
    ranks_items = True

    def __init__(self, item_lambda: float = 25.0, user_lambda: float = 10.0) -> None:
        self.item_lambda = float(item_lambda)
        self.user_lambda = float(user_lambda)
        self.mu: float | None = None
        self.item_bias: pd.Series | None = None

    def fit(self, train: pd.DataFrame) -> DampedBias:
        if train.empty:
            raise ValueError("cannot fit on an empty training set")
        self.mu = float(train["rating"].mean())
        self.item_bias = _item_bias(train, self.mu, self.item_lambda)
        return self

    def user_bias(self, history: pd.DataFrame) -> pd.Series:
        """b_u = sum(r - mu - b_i) / (n_u + λ_u) from `history`, indexed by user_id."""
        _require_fitted(self, "item_bias")
        assert self.mu is not None and self.item_bias is not None
        residual = (
            history["rating"].to_numpy(dtype=np.float64)
            - self.mu
            - _lookup(self.item_bias, history["movie_id"])
        )
        grouped = pd.Series(residual).groupby(history["user_id"].to_numpy(), sort=True)
        return grouped.sum() / (grouped.count() + self.user_lambda)

    def predict(self, history: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
        _require_fitted(self, "item_bias")
        assert self.mu is not None and self.item_bias is not None
        b_u = _lookup(self.user_bias(history), pairs["user_id"])
        b_i = _lookup(self.item_bias, pairs["movie_id"])
        return np.clip(self.mu + b_i + b_u, MIN_STARS, MAX_STARS)

    def score_catalogue(
        self, history: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray
    ) -> np.ndarray:
        _require_fitted(self, "item_bias")
        assert self.mu is not None and self.item_bias is not None
        b_u = _lookup(self.user_bias(history), np.asarray(user_ids))
        b_i = _lookup(self.item_bias, np.asarray(item_ids))
        return self.mu + b_u[:, None] + b_i[None, :]


class MostPopular:
    """Ranks by training rating count; predicts the item mean shrunk to the global mean."""

    name = "most_popular"
    ranks_items = True

    def __init__(self, item_lambda: float = 25.0) -> None:
        self.item_lambda = float(item_lambda)
        self.mu: float | None = None
        self.item_stats: pd.DataFrame | None = None  # movie_id -> count, mean

    def fit(self, train: pd.DataFrame) -> MostPopular:
        if train.empty:
            raise ValueError("cannot fit on an empty training set")
        self.mu = float(train["rating"].mean())
        self.item_stats = train.groupby("movie_id", sort=True)["rating"].agg(["count", "mean"])
        return self

    def predict(self, history: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
        _require_fitted(self, "item_stats")
        assert self.mu is not None and self.item_stats is not None
        movies = pairs["movie_id"]
        n = _lookup(self.item_stats["count"], movies)
        mean = _lookup(self.item_stats["mean"], movies, default=self.mu)
        return (n * mean + self.item_lambda * self.mu) / (n + self.item_lambda)

    def popularity_order(self, item_ids: np.ndarray) -> np.ndarray:
        """Positions into `item_ids`, most popular first (count desc, mean desc, id asc)."""
        _require_fitted(self, "item_stats")
        assert self.item_stats is not None
        items = np.asarray(item_ids)
        count = _lookup(self.item_stats["count"], items)
        mean = _lookup(self.item_stats["mean"], items, default=-np.inf)
        return np.lexsort((items, -mean, -count))

    def score_catalogue(
        self, history: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray
    ) -> np.ndarray:
        # Strictly decreasing scores down the popularity order, so the tie-break is ours, not
        # the ranking function's (the catalogue need not be sorted by id).
        order = self.popularity_order(item_ids)
        scores = np.empty(len(order), dtype=np.float64)
        scores[order] = np.arange(len(order), 0, -1, dtype=np.float64)
        return np.broadcast_to(scores, (len(user_ids), len(order))).copy()


def fit_baselines(
    train: pd.DataFrame, *, item_lambda: float = 25.0, user_lambda: float = 10.0
) -> list[GlobalMean | DampedBias | MostPopular]:
    """The three DESIGN.md §6 baselines, fit on `train` (one protocol's training rows)."""
    return [
        GlobalMean().fit(train),
        DampedBias(item_lambda=item_lambda, user_lambda=user_lambda).fit(train),
        MostPopular(item_lambda=item_lambda).fit(train),
    ]


BASELINE_NAMES: Sequence[str] = (GlobalMean.name, DampedBias.name, MostPopular.name)
