"""User features, from a list of ratings by one code path for training and serving alike, and
the npz of known users' vectors (`USER_FEATURES_FILE`).

All user statistics are sums over the user's ratings in time order, so the features of *every
prefix* of a user's history come out of one cumulative sum, and `_finalize` turns sums into
features for serving (`user_feature_matrix`) and training (`training_user_features`) alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from recommender_lib.atomic import atomic_path
from recommender_lib.modeling.features.items import ItemFeatures
from recommender_lib.modeling.features.transform import (
    SECONDS_PER_YEAR,
    FeatureTransform,
    check_ratings,
    fit_scaler,
)

USER_CHUNK_ROWS = 1_000_000  # ratings (whole users) summed at a time by `user_feature_matrix`
FEATURE_BLOCK_ROWS = 4_096  # training rows finalised at a time (cache-sized float64 temporaries)
USER_SCALED = ("u_log_count", "u_last_year", "u_log_span")
USER_FEATURES_FILE = "user_features.npz"

UserScheme = Literal["prefix", "loo", "full"]


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
    x[:, :4] = np.column_stack([np.ones_like(r), r, r * r, d])  # one pass over the rows
    for o, table in ((4, items.genres), (4 + 2 * ng, items.latent)):
        k = table.shape[1]
        x[:, o : o + k] = table[safe]
        if not known.all():
            x[~known, o : o + k] = 0.0
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
    """Float32 user features from raw ones: the scaled columns scaled (in float64), NaN -> 0."""
    out = raw.astype(np.float32)
    n = raw[:, 0]
    for name in USER_SCALED:
        j = transform.user_columns.index(name)
        out[:, j] = transform.scale(name, raw[:, j])
    j = transform.user_columns.index("u_last_year")
    out[:, j] = np.where(n > 0, out[:, j], 0.0)  # no history: neutral time
    return np.nan_to_num(out, copy=False, nan=0.0)


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


def fit_user_columns(train: pd.DataFrame, transform: FeatureTransform) -> None:
    """Fit the user columns and their scalers into `transform` (in place) on the train users'
    full-history values of the scaled columns — rating count, last rating year and span, read
    off per-user aggregates with `_finalize`'s formulas (no full feature pass)."""
    transform.user_columns = _user_column_names(transform)
    train = check_ratings(train)
    users = train.groupby("user_id", sort=True)["rating_ts"].agg(["size", "min", "max"])
    n = users["size"].to_numpy(np.float64)
    first_year = users["min"].to_numpy(np.float64) / SECONDS_PER_YEAR + 1970.0
    last_year = users["max"].to_numpy(np.float64) / SECONDS_PER_YEAR + 1970.0
    raw = {
        "u_log_count": np.log1p(n),
        "u_last_year": last_year,
        "u_log_span": np.log1p(np.maximum(last_year - first_year, 0.0) * 365.25),
    }
    for name in USER_SCALED:
        transform.scalers[name] = fit_scaler(raw[name])


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
    want = None if user_ids is None else np.asarray(user_ids, dtype=np.int64)
    if want is not None:  # only their rows: a user's features depend on their ratings alone
        ratings = ratings[np.isin(ratings["user_id"].to_numpy(np.int64), want)]
    users, raw = _user_raw_full(ratings, items, transform)
    feats = _scale_users(raw, transform)
    if want is None:
        return users, feats
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


def save_user_features(path: Path, user_ids: np.ndarray, matrix: np.ndarray) -> Path:
    """Write known users' ids and feature rows (npz, no pickle) to `path`, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, user_ids=user_ids, matrix=matrix)
    return path


def load_user_features(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(user ids, float32 feature rows) of a file written by `save_user_features`."""
    with np.load(path, allow_pickle=False) as users:
        return users["user_ids"], users["matrix"].astype(np.float32)
