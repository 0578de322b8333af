"""Baselines reported beside every model on the same split (docs/architecture.md §6).

Each baseline follows `recommender_lib.evaluation.protocols.RatingModel`: `fit(train)` learns from
the protocol's training rows only; `predict(history, pairs)` and `score_catalogue(history, ...)` get
what the model may know about the users at prediction time (their training rows under P1, their k
revealed rows under P2) and never anything else.

- `GlobalMean` predicts the training mean. It cannot rank: its catalogue scores are all equal,
  and any top-k would only reflect the tie-break, so it sets `ranks_items = False` and the
  evaluation reports its ranking metrics as NaN instead of a meaningless number.
- `DampedBias` is mu + b_i + b_u with damped (shrunk) item and user offsets, the user offset
  recomputed from the history given at prediction time, so a cold-start user is folded in from
  its revealed ratings alone. Ranking by mu + b_i + b_u is ranking by b_i.
- `MostPopular` ranks by training rating count (ties: higher mean, then lower movie id); its
  rating prediction is the item mean shrunk towards the global mean,
  (sum(r) + λ·mu) / (n_i + λ) with λ = `item_lambda`, i.e. mu + b_i without a user term.
- `Ease` is the closed-form item-item model of Steck (2019), "Embarrassingly Shallow
  Autoencoders": a user's scores are x_u · B, x_u the user's binary row built from `history`
  alone (so a cold-start user is scored from its revealed ratings, like the bias offsets above).
  Its scores are not stars, so it sets `predicts_ratings = False`: `predict` returns NaN and
  the evaluation reports its RMSE / MAE as NaN. Every baseline states `predicts_ratings`.

Unknown items get b_i = 0 (the global mean); users without history get b_u = 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import linalg, sparse

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
    predicts_ratings = True

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
    predicts_ratings = True

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
    predicts_ratings = True

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


EASE_L2 = 200.0
"""Default EASE ridge λ; how it was chosen is in the `Ease` docstring."""

EASE_FLOAT32_ABOVE = 5_000
"""`Ease.fit` solves in float32 above this many items (faster, same ranking), float64 below."""


def _spd_inverse(gram: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix via Cholesky (LAPACK potrf + potri).

    About twice as fast as `np.linalg.inv` (LU). Overwrites `gram`; returns a full symmetric
    matrix of the same dtype.
    """
    potrf, potri = linalg.get_lapack_funcs(("potrf", "potri"), (gram,))
    # gram is symmetric, so its transpose is the same matrix, Fortran-ordered: no copy
    chol, info = potrf(gram.T, lower=True, overwrite_a=True, clean=False)
    if info != 0:
        raise np.linalg.LinAlgError(f"Gram matrix is not positive definite (potrf info={info})")
    inv, info = potri(chol, lower=True, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"Gram matrix inversion failed (potri info={info})")
    # potri fills the lower triangle only: mirror it, a block of rows at a time
    n, block = inv.shape[0], 1024
    for start in range(0, n, block):
        stop = min(start + block, n)
        diag = inv[start:stop, start:stop]
        diag[...] = np.tril(diag) + np.tril(diag, -1).T
        inv[start:stop, stop:] = inv[stop:, start:stop].T
    return inv


class Ease:
    """EASE (Steck 2019): closed-form item-item weights B, user scores x_u · B.

    `fit(train)` builds the binary users × items matrix X of `train` (a rating of any value is
    a 1), G = XᵀX + λI with λ = `l2`, P = G⁻¹ and B = I − P / diag(P) (column-wise), so that
    diag(B) = 0: an item never recommends itself. `items` holds the movie id of each row and
    column of B (`weights`). With more than `max_items` distinct items only the `max_items`
    most-rated ones are kept (ties: lower movie id), bounding B at max_items² floats; G is
    solved in float32 above `EASE_FLOAT32_ABOVE` items (see below).

    `score_catalogue` scores each user from its `history` rows only, never from the training
    matrix. Items outside B score below every item of B asked for (the row's lowest such score
    minus 1), so they rank last; users whose history has no item of B get all-zero (all-equal)
    scores.

    Default λ = `EASE_L2` = 200, chosen on ml-latest-small P1: fit on train, ranked with
    history = train against the validation rows, the grid λ = 50, 100, 200, 400, 800, 1600 gives
    validation NDCG@10 0.0940, 0.0979, 0.0988, 0.0984, 0.0962, 0.0951. Fit on train + validation
    (8,230 items) it reaches test NDCG@10 0.1306 and Recall@10 0.1323 (most popular: 0.0887,
    0.0824). That fit takes ~14 s in float32 (7-22 s across runs on 2 shared CPU cores); float64
    gives the same metrics in about twice the time.
    """

    name = "ease"
    ranks_items = True
    predicts_ratings = False

    def __init__(self, l2: float = EASE_L2, max_items: int = 20_000) -> None:
        if l2 <= 0:
            raise ValueError(f"l2 must be positive, got {l2}")
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        self.l2 = float(l2)
        self.max_items = int(max_items)
        self.items: pd.Index | None = None  # movie id of each row / column of `weights`
        self.weights: np.ndarray | None = None  # B, (len(items), len(items))

    def fit(self, train: pd.DataFrame) -> Ease:
        if train.empty:
            raise ValueError("cannot fit on an empty training set")
        pairs = train[["user_id", "movie_id"]].drop_duplicates()
        counts = pairs["movie_id"].value_counts()
        movies = counts.index.to_numpy(dtype=np.int64)
        kept = movies[np.lexsort((movies, -counts.to_numpy()))[: self.max_items]]
        self.items = pd.Index(np.sort(kept))
        dtype = np.float32 if len(self.items) > EASE_FLOAT32_ABOVE else np.float64
        cols = self.items.get_indexer(pairs["movie_id"].to_numpy())
        inside = cols >= 0
        rows, users = pd.factorize(pairs["user_id"].to_numpy()[inside])
        x = sparse.csr_matrix(
            (np.ones(len(rows), dtype=dtype), (rows, cols[inside])),
            shape=(len(users), len(self.items)),
        )
        gram = (x.T @ x).toarray()
        gram[np.diag_indices_from(gram)] += self.l2
        weights = _spd_inverse(gram)
        weights /= -np.diag(weights)  # B_ij = -P_ij / P_jj for i != j
        np.fill_diagonal(weights, 0.0)
        self.weights = weights
        return self

    def user_rows(self, history: pd.DataFrame, user_ids: np.ndarray) -> sparse.csr_matrix:
        """Binary rows x_u (len(user_ids) × len(items)) from `history`; `user_ids` unique."""
        _require_fitted(self, "weights")
        assert self.items is not None and self.weights is not None
        users = pd.Index(np.asarray(user_ids))
        rows = users.get_indexer(history["user_id"].to_numpy())
        cols = self.items.get_indexer(history["movie_id"].to_numpy())
        inside = (rows >= 0) & (cols >= 0)
        x = sparse.csr_matrix(
            (np.ones(int(inside.sum()), dtype=self.weights.dtype), (rows[inside], cols[inside])),
            shape=(len(users), len(self.items)),
        )
        x.sum_duplicates()
        x.data[:] = 1  # a movie rated twice is still one 1
        return x

    def predict(self, history: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
        """NaN for every pair: EASE scores are not stars (`predicts_ratings = False`)."""
        _require_fitted(self, "weights")
        return np.full(len(pairs), np.nan, dtype=np.float64)

    def score_catalogue(
        self, history: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray
    ) -> np.ndarray:
        _require_fitted(self, "weights")
        assert self.items is not None and self.weights is not None
        users, inverse = np.unique(np.asarray(user_ids), return_inverse=True)
        pos = self.items.get_indexer(np.asarray(item_ids))
        known = pos >= 0
        x = self.user_rows(history, users)
        active = np.diff(x.indptr) > 0
        out = np.zeros((len(users), len(pos)), dtype=np.float64)
        if active.any() and known.any():
            scores = np.asarray(x[active] @ self.weights, dtype=np.float64)[:, pos[known]]
            out[np.ix_(active, known)] = scores
            out[np.ix_(active, ~known)] = scores.min(axis=1, keepdims=True) - 1.0
        return out[inverse.ravel()]


def fit_baselines(
    train: pd.DataFrame,
    *,
    item_lambda: float = 25.0,
    user_lambda: float = 10.0,
    ease_l2: float = EASE_L2,
) -> list[GlobalMean | DampedBias | MostPopular | Ease]:
    """The docs/architecture.md §6 baselines plus EASE, fit on `train` (one protocol's
    training rows)."""
    return [
        GlobalMean().fit(train),
        DampedBias(item_lambda=item_lambda, user_lambda=user_lambda).fit(train),
        MostPopular(item_lambda=item_lambda).fit(train),
        Ease(l2=ease_l2).fit(train),
    ]


BASELINE_NAMES: Sequence[str] = (GlobalMean.name, DampedBias.name, MostPopular.name, Ease.name)
