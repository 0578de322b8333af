"""Model features computed from the TRAIN split only (DESIGN.md §3 `user_/item_features`).

Two kinds of vectors feed the two-tower model:

* **item features** — one row for EVERY catalogue title, rated or not: genre multi-hot (MovieLens
  genres; IMDb genres mapped onto them for titles without MovieLens genres), IMDb average rating,
  log votes, year and runtime (scaled; missing -> 0 plus a missing indicator), MovieLens train
  statistics (log count, mean shrunk toward the global mean, damped item bias, rating era) and
  implicit co-rating factors (truncated SVD of the train user x title matrix; 0 for unrated
  titles). Aggregations run in DuckDB over the train split registered as a view.
* **user features** — built from a list of ratings by ONE code path
  (`user_features_from_ratings` / `user_feature_matrix`), used for training users and at serving
  time alike (cold start from one rating up, even zero): log count, shrunk mean, spread, damped
  user bias, bias over the most recent ratings, per-genre preference shrunk toward the user's own
  mean (never raw per-genre means), per-genre share of the user's ratings (all / recent) shrunk
  toward the catalogue-wide share, recency (time of the last rating, span of activity), and the
  history's mean co-rating factors (all / recent) and taste direction (factors weighted by the
  rating's residual).

Every fitted quantity (global mean, lambdas, genre vocabulary and priors, scalers, column order)
lives in a `FeatureTransform` dataclass that round-trips through plain JSON; the per-title arrays
live in `ItemFeatures` (saved as `.npz`, no pickle).

All user statistics are sums over the user's ratings in time order, so the features of *every
prefix* of a user's history come out of one cumulative sum, and `_finalize` turns sums into
features for serving (`user_feature_matrix`) and training (`training_user_features`) alike.

Training examples and leakage (chosen on validation RMSE, see `training_user_features`):
`prefix` (default) computes a training rating's user features from the user's ratings strictly
before it — what is known at test time, never the target; `full` includes the target;
`loo` (all other ratings) leaks the target through the shift of the user's statistics and is
kept only for comparison. Item statistics of a training row leave the target rating out
(`training_item_rows`), otherwise a title with few ratings "knows" its own target.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import duckdb
import numpy as np
import pandas as pd

from recommender_lib.sources.formats import MOVIELENS_GENRES, MOVIELENS_NO_GENRES
from recommender_lib.warehouse.catalog import IMDB_TO_MOVIELENS_GENRE, catalog_sql

FEATURES_VERSION = 1
SECONDS_PER_YEAR = 365.25 * 86_400.0
RATING_COLUMNS = ("user_id", "movie_id", "rating", "rating_ts")
USER_CHUNK_ROWS = 1_000_000  # ratings (whole users) summed at a time by `user_feature_matrix`
FEATURE_BLOCK_ROWS = 32_768  # training rows finalised at a time (bounds float64 temporaries)

ItemScheme = Literal["full", "loo"]
UserScheme = Literal["prefix", "loo", "full"]


# --------------------------------------------------------------------------------- transform


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


def _fit_scaler(values: np.ndarray) -> list[float]:
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


# ---------------------------------------------------------------------------- item features


@dataclass
class ItemFeatures:
    """Feature rows of every catalogue title, in `item_ids` order (sorted ascending)."""

    item_ids: np.ndarray  # int64
    matrix: np.ndarray  # float32 (n_items, len(transform.item_columns)), scaled
    bias: np.ndarray  # float64 damped item bias in stars (0 for unrated titles)
    genres: np.ndarray  # float32 multi-hot over transform.genres
    latent: np.ndarray  # float32 (n_items, latent_dim) co-rating factors (0 for unrated titles)
    count: np.ndarray  # int64 train ratings per title
    rating_sum: np.ndarray  # float64
    ts_sum: np.ndarray  # float64 sum of rating times in years (for the era column)
    raw: pd.DataFrame | None = field(default=None, repr=False)  # unscaled inputs (previews)

    def __len__(self) -> int:
        return len(self.item_ids)

    def index_of(self, movie_ids: np.ndarray | pd.Series) -> np.ndarray:
        """Row of each id in this table, -1 where the id is not in the catalogue."""
        ids = np.asarray(movie_ids, dtype=np.int64)
        pos = np.searchsorted(self.item_ids, ids)
        pos = np.clip(pos, 0, max(len(self.item_ids) - 1, 0))
        found = (self.item_ids[pos] == ids) if len(self.item_ids) else np.zeros(len(ids), bool)
        return np.where(found, pos, -1)

    def rows(self, movie_ids: np.ndarray | pd.Series, transform: FeatureTransform) -> np.ndarray:
        """Feature rows of `movie_ids`; ids outside the catalogue get `unknown_item_row`."""
        idx = self.index_of(movie_ids)
        out = self.matrix[np.maximum(idx, 0)].copy() if len(self) else None
        if out is None:
            return np.tile(unknown_item_row(transform), (len(idx), 1))
        out[idx < 0] = unknown_item_row(transform)
        return out

    def biases(self, movie_ids: np.ndarray | pd.Series) -> np.ndarray:
        """Damped item bias of `movie_ids` (0 outside the catalogue)."""
        idx = self.index_of(movie_ids)
        return np.where(idx >= 0, self.bias[np.maximum(idx, 0)] if len(self) else 0.0, 0.0)

    ARRAYS: ClassVar[tuple[str, ...]] = (
        "item_ids", "matrix", "bias", "genres", "latent", "count", "rating_sum", "ts_sum",
    )  # fmt: skip

    def to_npz(self, path: str | Path) -> None:
        """Save the arrays (no pickle) — the serving bundle's copy of the item features."""
        np.savez(path, **{name: getattr(self, name) for name in self.ARRAYS})

    @classmethod
    def from_npz(cls, path: str | Path) -> ItemFeatures:
        with np.load(path, allow_pickle=False) as data:
            return cls(**{name: data[name] for name in cls.ARRAYS})

    def frame(self, transform: FeatureTransform) -> pd.DataFrame:
        """The scaled matrix as a DataFrame with an `item_id` column (for the feature asset)."""
        df = pd.DataFrame(self.matrix, columns=transform.item_columns)
        df.insert(0, "item_id", self.item_ids)
        return df


def unknown_item_row(transform: FeatureTransform) -> np.ndarray:
    """Features of a title outside the catalogue: no genres, no metadata, never rated."""
    row = np.zeros(len(transform.item_columns), dtype=np.float32)
    for name in ("genre_none", "year_missing", "runtime_missing", "imdb_missing", "ml_unrated"):
        row[transform.item_columns.index(name)] = 1.0
    return row


def _register_train(conn: duckdb.DuckDBPyConnection, train: pd.DataFrame) -> str:
    name = "_features_train_split"
    conn.register(name, check_ratings(train))
    return name


def _catalogue(conn: duckdb.DuckDBPyConnection, catalog_table: str | None) -> str:
    """The catalogue rows: the materialized `catalog_table`, else the MovieLens titles only."""
    return f'SELECT * FROM "{catalog_table}"' if catalog_table else catalog_sql(conn, None)


def _item_raw(
    conn: duckdb.DuckDBPyConnection, train: pd.DataFrame, catalog_table: str | None
) -> pd.DataFrame:
    view = _register_train(conn, train)
    try:
        df = conn.execute(
            f"""
            WITH cat AS ({_catalogue(conn, catalog_table)}),
            stats AS (
                SELECT movie_id AS item_id, count(*) AS n, sum(rating) AS s,
                       sum(rating_ts / {SECONDS_PER_YEAR} + 1970.0) AS ts_sum
                FROM {view} GROUP BY movie_id)
            SELECT cat.*, coalesce(stats.n, 0) AS n, coalesce(stats.s, 0.0) AS s,
                   coalesce(stats.ts_sum, 0.0) AS ts_sum
            FROM cat LEFT JOIN stats USING (item_id)
            ORDER BY item_id
            """
        ).df()
    finally:
        conn.unregister(view)
    if df["item_id"].duplicated().any():
        df = df.drop_duplicates("item_id", keep="first").reset_index(drop=True)
    return df


def _as_list(value: object) -> list[str]:
    """A genre LIST cell as a list (DuckDB NULL arrives as None or pd.NA)."""
    if isinstance(value, list | tuple | np.ndarray):
        return [str(v) for v in value]
    return []


def _genre_matrix(df: pd.DataFrame, transform: FeatureTransform) -> tuple[np.ndarray, np.ndarray]:
    """(multi-hot over the vocabulary, whether a title had genres outside the vocabulary)."""
    vocab = {g: j for j, g in enumerate(transform.genres)}
    out = np.zeros((len(df), len(vocab)), dtype=np.float32)
    other = np.zeros(len(df), dtype=np.float32)
    ml = df["ml_genres"].tolist()
    imdb = df["imdb_genres"].tolist()
    for row, (g_ml, g_imdb) in enumerate(zip(ml, imdb, strict=True)):
        names = _as_list(g_ml)
        if not names:
            names = [transform.imdb_genre_map.get(g, g) for g in _as_list(g_imdb)]
        for g in names:
            j = vocab.get(g)
            if j is None:
                if g != MOVIELENS_NO_GENRES:
                    other[row] = 1.0
            else:
                out[row, j] = 1.0
    return out, other


def _item_stat_columns(
    n: np.ndarray, s: np.ndarray, ts_sum: np.ndarray, transform: FeatureTransform
) -> dict[str, np.ndarray]:
    """The MovieLens-statistics columns from sufficient statistics (also used for LOO rows)."""
    mu = transform.global_mean
    n = np.asarray(n, dtype=np.float64)
    rated = n > 0
    era = np.where(rated, ts_sum / np.maximum(n, 1.0), np.nan)
    cols = {
        "ml_log_count": np.log1p(n),
        "ml_mean": (s + transform.mean_lambda * mu) / (n + transform.mean_lambda) - mu,
        "ml_bias": (s - n * mu) / (n + transform.item_lambda),
        "ml_era": era,
        "ml_unrated": (~rated).astype(np.float64),
    }
    return cols


def latent_factors(
    train: pd.DataFrame, item_ids: np.ndarray, transform: FeatureTransform
) -> np.ndarray:
    """Implicit co-rating factors of each title: truncated SVD of the train user x title matrix.

    The binary matrix is normalised as D_u^-1/2 A D_i^-1/2 (so blockbusters do not dominate);
    each title's row of V·S is L2-normalised, scaled by sqrt(dim) (unit-variance entries) and
    shrunk by n / (n + latent_shrink) so titles with few ratings stay near 0. Deterministic.
    """
    dim = int(transform.latent_dim)
    out = np.zeros((len(item_ids), max(dim, 0)), dtype=np.float32)
    if dim <= 0 or len(train) == 0 or len(item_ids) == 0:
        return out
    from scipy import sparse
    from sklearn.utils.extmath import randomized_svd

    ids = np.asarray(item_ids, dtype=np.int64)
    movies = train["movie_id"].to_numpy(np.int64)
    col = np.searchsorted(ids, movies)
    col = np.clip(col, 0, len(ids) - 1)
    ok = ids[col] == movies
    _, row = np.unique(train["user_id"].to_numpy(np.int64)[ok], return_inverse=True)
    col = col[ok]
    a = sparse.csr_matrix(
        (np.ones(len(col)), (row, col)), shape=(int(row.max()) + 1 if len(row) else 0, len(ids))
    )
    a.data = np.minimum(a.data, 1.0)
    du = np.asarray(a.sum(axis=1)).ravel()
    di = np.asarray(a.sum(axis=0)).ravel()
    x = sparse.diags(1.0 / np.sqrt(np.maximum(du, 1.0))) @ a
    x = x @ sparse.diags(1.0 / np.sqrt(np.maximum(di, 1.0)))
    k = min(dim, min(x.shape) - 1)
    if k <= 0:
        return out
    _, sing, vt = randomized_svd(x, k, n_iter=6, random_state=transform.seed)
    v = vt.T * sing
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    v = np.where(norm > 0, v / np.maximum(norm, 1e-12), 0.0) * math.sqrt(dim)
    v *= (di / (di + transform.latent_shrink))[:, None]
    out[:, :k] = v
    return out


def _item_columns_raw(
    df: pd.DataFrame, transform: FeatureTransform, latent: np.ndarray
) -> dict[str, np.ndarray]:
    year = df["ml_year"].astype("Float64").fillna(df["imdb_year"].astype("Float64"))
    year = year.to_numpy(dtype=np.float64, na_value=np.nan)
    runtime = df["runtime"].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    runtime = np.where(runtime > 0, np.log(np.where(runtime > 0, runtime, 1.0)), np.nan)
    rating = df["imdb_rating"].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    votes = df["imdb_votes"].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    genres, other = _genre_matrix(df, transform)
    cols: dict[str, np.ndarray] = {
        f"genre:{g}": genres[:, j] for j, g in enumerate(transform.genres)
    }
    cols["genre_other"] = other
    cols["genre_none"] = (genres.sum(axis=1) == 0).astype(np.float64)
    cols["year"] = year
    cols["year_missing"] = np.isnan(year).astype(np.float64)
    cols["log_runtime"] = runtime
    cols["runtime_missing"] = np.isnan(runtime).astype(np.float64)
    cols["imdb_rating"] = rating
    cols["imdb_log_votes"] = np.log1p(votes)
    cols["imdb_missing"] = np.isnan(rating).astype(np.float64)
    cols.update(
        _item_stat_columns(
            df["n"].to_numpy(np.float64), df["s"].to_numpy(np.float64),
            df["ts_sum"].to_numpy(np.float64), transform,
        )
    )  # fmt: skip
    for j in range(latent.shape[1]):
        cols[f"lat:{j}"] = latent[:, j].astype(np.float64)
    return cols


ITEM_SCALED = ("year", "log_runtime", "imdb_rating", "imdb_log_votes", "ml_log_count", "ml_era")


def _item_matrix(cols: dict[str, np.ndarray], transform: FeatureTransform) -> np.ndarray:
    out = np.zeros((len(next(iter(cols.values()))), len(transform.item_columns)), np.float32)
    for j, name in enumerate(transform.item_columns):
        v = cols[name]
        if name in ITEM_SCALED:
            v = transform.scale(name, v)
        out[:, j] = np.nan_to_num(v, nan=0.0)  # missing -> 0 (+ its indicator column)
    return out


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
    raw = _item_raw(conn, train, catalog_table)
    latent = latent_factors(train, raw["item_id"].to_numpy(np.int64), transform)
    cols = _item_columns_raw(raw, transform, latent)
    transform.item_columns = list(cols)
    rated = raw["n"].to_numpy() > 0
    for name in ITEM_SCALED:
        v = cols[name][rated] if name.startswith("ml_") else cols[name]
        transform.scalers[name] = _fit_scaler(v)
    items = _items_from_raw(raw, cols, latent, transform)
    # Genre prior: share of train ratings that fall on each genre, from per-title counts (no
    # ratings x genres matrix), rounded to float32 as the per-rating float32 mean was.
    idx = items.index_of(train["movie_id"].to_numpy())
    per_title = np.bincount(idx[idx >= 0], minlength=len(items)).astype(np.float64)
    prior = (per_title @ items.genres.astype(np.float64) / len(train)).astype(np.float32)
    transform.genre_prior = [float(x) for x in prior]
    # User scalers: fitted on the train users' full-history vectors.
    transform.user_columns = _user_column_names(transform)
    raw_user = _user_raw_full(train, items, transform)[1]
    for name in USER_SCALED:
        transform.scalers[name] = _fit_scaler(raw_user[:, transform.user_columns.index(name)])
    return transform


def _items_from_raw(
    raw: pd.DataFrame,
    cols: dict[str, np.ndarray],
    latent: np.ndarray,
    transform: FeatureTransform,
) -> ItemFeatures:
    genres = np.stack([cols[f"genre:{g}"] for g in transform.genres], axis=1).astype(np.float32)
    matrix = (
        _item_matrix(cols, transform)
        if all(n in transform.scalers for n in ITEM_SCALED)
        else np.zeros((len(raw), 0), np.float32)
    )
    return ItemFeatures(
        item_ids=raw["item_id"].to_numpy(np.int64),
        matrix=matrix,
        bias=cols["ml_bias"].astype(np.float64),
        genres=genres,
        latent=latent,
        count=raw["n"].to_numpy(np.int64),
        rating_sum=raw["s"].to_numpy(np.float64),
        ts_sum=raw["ts_sum"].to_numpy(np.float64),
        raw=raw,
    )


def build_item_features(
    conn: duckdb.DuckDBPyConnection,
    train: pd.DataFrame,
    transform: FeatureTransform,
    *,
    catalog_table: str | None = None,
) -> ItemFeatures:
    """Feature rows for every catalogue title from the warehouse metadata + `train` statistics.

    The catalogue is the `catalog_table` built by `recommender_lib.warehouse.catalog` (MovieLens
    movies plus IMDb titles passing its filters), or every MovieLens movie when no table is given.
    Titles nobody rated get content-only rows (`ml_unrated` = 1).
    """
    train = check_ratings(train)
    raw = _item_raw(conn, train, catalog_table)
    latent = latent_factors(train, raw["item_id"].to_numpy(np.int64), transform)
    cols = _item_columns_raw(raw, transform, latent)
    if list(cols) != transform.item_columns:
        raise ValueError("item columns differ from the fitted transform's")
    return _items_from_raw(raw, cols, latent, transform)


def training_item_rows(
    train: pd.DataFrame, items: ItemFeatures, transform: FeatureTransform
) -> np.ndarray:
    """Item rows for each training rating with its own rating left out of the ML statistics.

    The statistics columns (count, mean, bias, era) are recomputed without the target rating, so
    the item tower cannot read the target through them; the other columns are unchanged.
    """
    train = check_ratings(train)
    idx = items.index_of(train["movie_id"].to_numpy())
    if (idx < 0).any():
        raise ValueError("training ratings reference titles outside the catalogue")
    n = items.count[idx] - 1.0
    s = items.rating_sum[idx] - train["rating"].to_numpy()
    ts = items.ts_sum[idx] - (train["rating_ts"].to_numpy() / SECONDS_PER_YEAR + 1970.0)
    rows = items.matrix[idx].copy()
    for name, v in _item_stat_columns(n, s, ts, transform).items():
        j = transform.item_columns.index(name)
        v = transform.scale(name, v) if name in ITEM_SCALED else v
        rows[:, j] = np.nan_to_num(v, nan=0.0)
    return rows


# ---------------------------------------------------------------------------- user features

USER_SCALED = ("u_log_count", "u_last_year", "u_log_span")


def _user_column_names(transform: FeatureTransform) -> list[str]:
    return [
        "u_log_count", "u_mean", "u_std", "u_bias", "u_recent_bias",
        *(f"u_pref:{g}" for g in transform.genres),
        *(f"u_share:{g}" for g in transform.genres),
        *(f"u_recent_share:{g}" for g in transform.genres),
        "u_last_year", "u_log_span",
        *(f"u_lat:{j}" for j in range(transform.latent_dim)),
        *(f"u_recent_lat:{j}" for j in range(transform.latent_dim)),
        *(f"u_taste:{j}" for j in range(transform.latent_dim)),
    ]  # fmt: skip


def user_row_chunks(user_ids: np.ndarray, chunk_rows: int) -> list[np.ndarray]:
    """Row positions split into chunks of about `chunk_rows` ratings, each holding whole users.

    One chunk of all rows in order when they fit; otherwise rows grouped by user (stable), a
    chunk closing at the first user boundary past each multiple of `chunk_rows`.
    """
    ids = np.asarray(user_ids, dtype=np.int64)
    if len(ids) <= chunk_rows:
        return [np.arange(len(ids))]
    order = np.argsort(ids, kind="stable")
    grouped = ids[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
    chunk = starts // max(int(chunk_rows), 1)
    return np.split(order, starts[1:][chunk[1:] != chunk[:-1]])


def _contributions(
    ratings: pd.DataFrame, items: ItemFeatures, transform: FeatureTransform
) -> tuple[pd.DataFrame, np.ndarray]:
    """Ratings sorted by (user, time, movie) and each rating's additive contributions.

    Columns: [1, r, r², d, G, G·d, V, V·d] with d = r − μ − b_item, G the title's genre
    multi-hot and V its latent factors (zeros for titles outside the catalogue); float64,
    written into one array.
    """
    df = check_ratings(ratings).sort_values(["user_id", "rating_ts", "movie_id"], kind="stable")
    df = df.reset_index(drop=True)
    idx = items.index_of(df["movie_id"].to_numpy())
    known, safe = idx >= 0, np.maximum(idx, 0)
    ng, nf = items.genres.shape[1], items.latent.shape[1]
    r = df["rating"].to_numpy(np.float64)
    d = r - transform.global_mean - np.where(known, items.bias[safe], 0.0)
    x = np.empty((len(df), 4 + 2 * ng + 2 * nf))
    x[:, 0], x[:, 1], x[:, 2], x[:, 3] = 1.0, r, r * r, d
    for o, table in ((4, items.genres), (4 + 2 * ng, items.latent)):
        k = table.shape[1]
        x[:, o : o + k] = np.where(known[:, None], table[safe], 0.0)
        np.multiply(x[:, o : o + k], d[:, None], out=x[:, o + k : o + 2 * k])
    return df, x


def _finalize(
    total: np.ndarray,
    recent: np.ndarray,
    first_year: np.ndarray,
    last_year: np.ndarray,
    transform: FeatureTransform,
) -> np.ndarray:
    """Raw (unscaled) user features from summed contributions of a history and its recent part."""
    ng = len(transform.genres)
    mu, sd = transform.global_mean, transform.global_std
    n, s, s2, sd_ = total[:, 0], total[:, 1], total[:, 2], total[:, 3]
    ng_cnt, ng_d = total[:, 4 : 4 + ng], total[:, 4 + ng : 4 + 2 * ng]
    has = n > 0
    safe_n = np.maximum(n, 1.0)
    mean_d = np.where(has, sd_ / safe_n, 0.0)
    var = np.where(has, np.maximum(s2 / safe_n - (s / safe_n) ** 2, 0.0), 0.0)
    lam_m = transform.mean_lambda
    prior = np.asarray(transform.genre_prior, dtype=np.float64)
    alpha = transform.share_alpha
    rn = recent[:, 0]
    cols = [
        np.log1p(n),
        (s + lam_m * mu) / (n + lam_m) - mu,
        np.sqrt((n * var + lam_m * sd * sd) / (n + lam_m)) - sd,
        sd_ / (n + transform.user_lambda),
        recent[:, 3] / (rn + transform.user_lambda),
    ]
    pref = (ng_d - ng_cnt * mean_d[:, None]) / (ng_cnt + transform.genre_lambda)
    share = (ng_cnt + alpha * prior) / (n[:, None] + alpha) - prior
    rshare = (recent[:, 4 : 4 + ng] + alpha * prior) / (rn[:, None] + alpha) - prior
    span = np.where(has, np.log1p(np.maximum(last_year - first_year, 0.0) * 365.25), 0.0)
    f, o = transform.latent_dim, 4 + 2 * ng
    lat_sum, lat_d = total[:, o : o + f], total[:, o + f : o + 2 * f]
    lat = lat_sum / (n[:, None] + alpha)
    rlat = recent[:, o : o + f] / (rn[:, None] + alpha)
    taste = (lat_d - lat_sum * mean_d[:, None]) / (n[:, None] + transform.genre_lambda)
    out = np.concatenate(
        [np.stack(cols, axis=1), pref, share, rshare, np.stack([last_year, span], axis=1),
         lat, rlat, taste],
        axis=1,
    )  # fmt: skip
    return out


def _scale_users(raw: np.ndarray, transform: FeatureTransform) -> np.ndarray:
    out = raw.copy()
    n = raw[:, 0]
    for name in USER_SCALED:
        j = transform.user_columns.index(name)
        out[:, j] = transform.scale(name, raw[:, j])
    j = transform.user_columns.index("u_last_year")
    out[:, j] = np.where(n > 0, out[:, j], 0.0)  # no history: neutral time
    return np.nan_to_num(out, nan=0.0).astype(np.float32)


def _group_cumsum(
    x: np.ndarray, starts: np.ndarray, sizes: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """Inclusive cumulative sums restarting at every group (sequential, float64; `out=x`: in
    place)."""
    out = np.empty_like(x) if out is None else out
    for s0, m in zip(starts.tolist(), sizes.tolist(), strict=True):
        np.cumsum(x[s0 : s0 + m], axis=0, out=out[s0 : s0 + m])
    return out


def _history_stats(
    cum: np.ndarray, years: np.ndarray, starts: np.ndarray, ends: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sums over the histories rows[start:end] (exclusive end) and over their last `window` rows."""
    k = cum.shape[1]
    m = ends - starts
    has = m > 0
    last = np.where(has, ends - 1, 0)
    total = np.where(has[:, None], cum[last], 0.0) if len(cum) else np.zeros((len(m), k))
    cut = ends - 1 - window
    before = (cut >= starts) & has
    recent = total - np.where(before[:, None], cum[np.maximum(cut, 0)], 0.0)
    first_year = np.where(has, years[np.minimum(starts, max(len(years) - 1, 0))], 0.0)
    last_year = np.where(has, years[last], 0.0)
    return total, recent, first_year, last_year


def _loo_stats(
    cum: np.ndarray,
    x: np.ndarray,
    years: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    window: int,
    j: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sums over each user's rows except row j itself, for the sorted rows `j` (starts/ends:
    the bounds of each one's user)."""
    xj = x[j]
    m = ends - starts - 1  # history size once row j is left out
    has = m > 0
    total = cum[ends - 1] - xj
    in_tail = j >= ends - window  # row j is among the last `window` rows
    cut = np.where(in_tail, ends - window - 2, ends - window - 1)
    recent = cum[ends - 1] - np.where(in_tail[:, None], xj, 0.0)
    recent = recent - np.where((cut >= starts)[:, None], cum[np.maximum(cut, 0)], 0.0)
    first = np.where(j == starts, np.minimum(starts + 1, ends - 1), starts)
    last = np.where(j == ends - 1, np.maximum(ends - 2, starts), ends - 1)
    total = np.where(has[:, None], total, 0.0)
    recent = np.where(has[:, None], recent, 0.0)
    return total, recent, np.where(has, years[first], 0.0), np.where(has, years[last], 0.0)


def _user_raw_full(
    ratings: pd.DataFrame, items: ItemFeatures, transform: FeatureTransform
) -> tuple[np.ndarray, np.ndarray]:
    """(sorted user ids, raw features of each one's whole history), `USER_CHUNK_ROWS` ratings of
    whole users at a time (a user's sums only involve their own ratings: same result)."""
    ratings = check_ratings(ratings)
    users, raws = [], []
    for rows in user_row_chunks(ratings["user_id"].to_numpy(), USER_CHUNK_ROWS):
        df, x = _contributions(ratings.iloc[rows], items, transform)
        ids, starts, sizes = np.unique(
            df["user_id"].to_numpy(), return_index=True, return_counts=True
        )
        cum = _group_cumsum(x, starts, sizes, out=x)
        years = df["rating_ts"].to_numpy(np.float64) / SECONDS_PER_YEAR + 1970.0
        total, recent, fy, ly = _history_stats(
            cum, years, starts, starts + sizes, transform.recent_window
        )
        users.append(ids)
        raws.append(_finalize(total, recent, fy, ly, transform))
    return np.concatenate(users), np.concatenate(raws)


def user_feature_matrix(
    ratings: pd.DataFrame,
    items: ItemFeatures,
    transform: FeatureTransform,
    user_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(user ids, features) from each user's whole list of `ratings` — serving and test time.

    With `user_ids`, rows come in that order and users without ratings get the empty-history
    vector (a cold user with zero ratings).
    """
    users, raw = _user_raw_full(ratings, items, transform)
    feats = _scale_users(raw, transform)
    if user_ids is None:
        return users, feats
    want = np.asarray(user_ids, dtype=np.int64)
    empty = empty_user_features(transform)
    out = np.tile(empty, (len(want), 1))
    pos = np.searchsorted(users, want)
    pos = np.clip(pos, 0, max(len(users) - 1, 0))
    hit = (users[pos] == want) if len(users) else np.zeros(len(want), bool)
    out[hit] = feats[pos[hit]]
    return want, out


def user_features_from_ratings(
    ratings: pd.DataFrame, items: ItemFeatures, transform: FeatureTransform
) -> np.ndarray:
    """One user's feature vector from their list of ratings (any length, even empty).

    `ratings` needs `movie_id` and `rating`; `rating_ts` is optional (missing: the end of the
    train period); `user_id` is ignored (all rows are one user). Unknown movies still count in
    the rating statistics, without genre, bias or latent factors.
    """
    df = ratings.copy()
    if "rating_ts" not in df.columns:  # ratings given "now": at the end of the train period
        df["rating_ts"] = np.int64(transform.train_end_ts)
    df["user_id"] = 0
    if df.empty:
        return empty_user_features(transform)
    return user_feature_matrix(df, items, transform)[1][0]


def empty_user_features(transform: FeatureTransform) -> np.ndarray:
    """The vector of a user with no ratings at all."""
    k = 4 + 2 * len(transform.genres) + 2 * transform.latent_dim
    zero = np.zeros((1, k))
    raw = _finalize(zero, zero, np.zeros(1), np.zeros(1), transform)
    return _scale_users(raw, transform)[0]


def training_user_features(
    train: pd.DataFrame,
    items: ItemFeatures,
    transform: FeatureTransform,
    scheme: UserScheme = "prefix",
    *,
    cold_share: float = 0.0,
    cold_max: int = 10,
    seed: int | Sequence[int] = 0,
) -> np.ndarray:
    """Float32 user features for every row of `train` (rows in the order given).

    `prefix`: from the user's ratings strictly before that rating in (time, movie) order — what a
    model sees at test time, never including the target. `loo`: from all the user's other train
    ratings (leave-one-out: the history size of test time, without the target). `full`: from the
    user's whole train history (includes the target: optimistic, kept for comparison).

    Cold-start augmentation: a random `cold_share` of the rows instead get the features of the
    user's first k ratings, k uniform in 0..min(cold_max, ratings before the target) — what a
    cold user who revealed k ratings looks like when asked about a later title. `seed`: any
    `numpy.random.default_rng` seed.

    Memory: the rows' float64 contributions, summed in place (plus a copy for `loo`), and the
    float32 output; the features are finalised `FEATURE_BLOCK_ROWS` rows at a time.
    """
    if scheme not in ("prefix", "full", "loo"):
        raise ValueError(f"unknown user feature scheme {scheme!r}")
    train = check_ratings(train)
    order = np.lexsort(
        (train["movie_id"].to_numpy(), train["rating_ts"].to_numpy(), train["user_id"].to_numpy())
    )
    df, x = _contributions(train, items, transform)  # same stable order as `order`
    users, starts, sizes = np.unique(
        df["user_id"].to_numpy(), return_index=True, return_counts=True
    )
    cum = _group_cumsum(x, starts, sizes, out=None if scheme == "loo" else x)
    years = df["rating_ts"].to_numpy(np.float64) / SECONDS_PER_YEAR + 1970.0
    group = np.repeat(np.arange(len(users)), sizes)
    row_start = starts[group]
    if scheme == "prefix":
        ends = np.arange(len(df))
        if cold_share > 0:
            rng = np.random.default_rng(seed)
            before = ends - row_start
            k = np.floor(rng.random(len(df)) * (np.minimum(before, cold_max) + 1)).astype(int)
            cold = rng.random(len(df)) < cold_share
            ends = np.where(cold, row_start + k, ends)
    else:  # the user's whole history (`loo` leaves row j out of it below)
        ends = (starts + sizes)[group]
    window = transform.recent_window
    out = np.empty((len(df), len(transform.user_columns)), dtype=np.float32)
    for b0 in range(0, len(df), FEATURE_BLOCK_ROWS):
        b = slice(b0, b0 + FEATURE_BLOCK_ROWS)
        if scheme == "loo":
            j = np.arange(b0, min(b0 + FEATURE_BLOCK_ROWS, len(df)))
            stats = _loo_stats(cum, x, years, row_start[b], ends[b], window, j)
        else:
            stats = _history_stats(cum, years, row_start[b], ends[b], window)
        out[order[b]] = _scale_users(_finalize(*stats, transform), transform)
    return out


def baseline_prediction(
    user_x: np.ndarray, item_bias: np.ndarray, transform: FeatureTransform
) -> np.ndarray:
    """Damped-bias baseline μ + b_item + b_user, read off the feature vectors (stars)."""
    return transform.global_mean + np.asarray(item_bias) + user_x[:, transform.user_bias_column]
