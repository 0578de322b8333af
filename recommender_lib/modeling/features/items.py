"""Item features: one row for every catalogue title, rated or not, and the training rows that
leave each target rating out of its title's statistics; the transform + item features folder."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import duckdb
import numpy as np
import pandas as pd

from recommender_lib.atomic import atomic_path
from recommender_lib.modeling.features.transform import (
    SECONDS_PER_YEAR,
    FeatureTransform,
    check_ratings,
    fit_scaler,
)
from recommender_lib.sources.formats import MOVIELENS_NO_GENRES
from recommender_lib.warehouse.catalog import catalog_sql

TRANSFORM_FILE = "feature_transform.json"
ITEM_FEATURES_FILE = "item_features.npz"


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


def _item_table(
    conn: duckdb.DuckDBPyConnection,
    train: pd.DataFrame,
    transform: FeatureTransform,
    catalog_table: str | None,
) -> tuple[pd.DataFrame, dict[str, np.ndarray], np.ndarray]:
    """(catalogue rows with train statistics, unscaled item columns, latent factors)."""
    raw = _item_raw(conn, train, catalog_table)
    latent = latent_factors(train, raw["item_id"].to_numpy(np.int64), transform)
    return raw, _item_columns_raw(raw, transform, latent), latent


def fit_item_columns(
    conn: duckdb.DuckDBPyConnection,
    train: pd.DataFrame,
    transform: FeatureTransform,
    catalog_table: str | None = None,
) -> ItemFeatures:
    """Fit the item columns and their scalers into `transform` (in place) on `train` (checked);
    returns the catalogue's item features under them."""
    raw, cols, latent = _item_table(conn, train, transform, catalog_table)
    transform.item_columns = list(cols)
    rated = raw["n"].to_numpy() > 0
    for name in ITEM_SCALED:
        v = cols[name][rated] if name.startswith("ml_") else cols[name]
        transform.scalers[name] = fit_scaler(v)
    return _items_from_raw(raw, cols, latent, transform)


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
    raw, cols, latent = _item_table(conn, check_ratings(train), transform, catalog_table)
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


def write_item_features(directory: Path, transform: FeatureTransform, items: ItemFeatures) -> None:
    """Write the transform (JSON) and the item features (npz) into an existing `directory`."""
    (directory / TRANSFORM_FILE).write_text(transform.to_json(), encoding="utf-8")
    items.to_npz(directory / ITEM_FEATURES_FILE)


def save_item_features(directory: Path, transform: FeatureTransform, items: ItemFeatures) -> Path:
    """Write the transform and item features into a new folder, atomically."""
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        write_item_features(tmp, transform, items)
    return directory


def load_item_features(directory: Path) -> tuple[FeatureTransform, ItemFeatures]:
    """The transform and item features of a folder written by `write_item_features`."""
    transform = FeatureTransform.from_json((directory / TRANSFORM_FILE).read_text("utf-8"))
    return transform, ItemFeatures.from_npz(directory / ITEM_FEATURES_FILE)
