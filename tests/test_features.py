"""Model features: train-only, one code path for training and serving, every title covered."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from recommender_lib.modeling.features import users as feature_users
from recommender_lib.modeling.features.fit import fit_feature_transform, fit_features
from recommender_lib.modeling.features.items import (
    ItemFeatures,
    build_item_features,
    training_item_rows,
    unknown_item_row,
)
from recommender_lib.modeling.features.transform import FeatureTransform, fit_scaler
from recommender_lib.modeling.features.users import (
    empty_user_features,
    training_user_features,
    user_feature_matrix,
    user_features_from_ratings,
    user_row_chunks,
)
from recommender_lib.modeling.splits import P1, load_split
from recommender_lib.modeling.two_tower.params import TwoTowerParams
from recommender_lib.sources.formats import IMDB_BASICS_COLUMNS, IMDB_RATINGS_COLUMNS
from recommender_lib.warehouse import tables as warehouse
from recommender_lib.warehouse.catalog import (
    CATALOG,
    CatalogFilters,
    build_catalog,
    imdb_only_item_id,
)
from tests.support.sample_warehouse import load_sample_warehouse

SMALL = {"latent_dim": 4}


@pytest.fixture(scope="module")
def sample_conn(sample_mirror, tmp_path_factory) -> duckdb.DuckDBPyConnection:
    """The small generated mirror loaded into an in-memory warehouse, with the P1/P2 splits."""
    return load_sample_warehouse(sample_mirror, tmp_path_factory.mktemp("ml"))


@pytest.fixture(scope="module")
def fitted(sample_conn):
    train = load_split(sample_conn, P1, "train")
    transform = fit_feature_transform(sample_conn, train, **SMALL)
    items = build_item_features(sample_conn, train, transform)
    return train, transform, items


def test_features_come_from_train_alone(sample_conn, fitted) -> None:
    train, transform, items = fitted
    conn = sample_conn.cursor()
    # Add rows to the warehouse that are not in train (test rows, a brand-new user).
    # The warehouse already holds the validation/test rows; add a brand-new user on top.
    conn.execute(
        "INSERT INTO movielens_ratings SELECT 999999, movie_id, 0.5, 1600000000, "
        "make_timestamp(1600000000::BIGINT * 1000000) FROM movielens_movies LIMIT 50"
    )
    try:
        again = fit_feature_transform(conn, train, **SMALL)
        items2 = build_item_features(conn, train, again)
    finally:
        conn.execute("DELETE FROM movielens_ratings WHERE user_id = 999999")
    assert again.to_json() == transform.to_json()
    np.testing.assert_array_equal(items2.matrix, items.matrix)
    np.testing.assert_array_equal(items2.latent, items.latent)
    # ...while the train split itself does matter.
    fewer = build_item_features(sample_conn, train.iloc[: len(train) // 2], transform)
    assert not np.array_equal(fewer.matrix, items.matrix)


def test_statistics_match_train(fitted) -> None:
    train, transform, items = fitted
    assert transform.global_mean == pytest.approx(train["rating"].mean())
    counts = train.groupby("movie_id").size()
    idx = items.index_of(counts.index.to_numpy())
    np.testing.assert_array_equal(items.count[idx], counts.to_numpy())
    sums = train.groupby("movie_id")["rating"].sum()
    expected_bias = (sums - counts * transform.global_mean) / (counts + transform.item_lambda)
    np.testing.assert_allclose(items.bias[idx], expected_bias.to_numpy(), atol=1e-9)


def test_every_catalogue_title_has_a_row(sample_conn, fitted) -> None:
    train, transform, items = fitted
    n_movies = sample_conn.execute("SELECT count(*) FROM movielens_movies").fetchone()[0]
    assert len(items) == n_movies
    assert np.isfinite(items.matrix).all()
    unrated = ~np.isin(items.item_ids, train["movie_id"].unique())
    assert unrated.any()
    col = transform.item_columns.index
    assert (items.matrix[unrated, col("ml_unrated")] == 1).all()
    assert (items.matrix[~unrated, col("ml_unrated")] == 0).all()
    assert (items.latent[unrated] == 0).all()
    assert (items.bias[unrated] == 0).all()
    # IMDb features exist for linked titles in the generated mirror, missing for the others.
    imdb_missing = items.matrix[:, col("imdb_missing")]
    assert 0 < imdb_missing.mean() < 1
    assert (items.matrix[imdb_missing == 1, col("imdb_rating")] == 0).all()


def test_serving_vector_equals_training_vector(fitted) -> None:
    train, transform, items = fitted
    user = int(train["user_id"].value_counts().index[0])
    mine = train[train["user_id"] == user].sort_values(["rating_ts", "movie_id"])
    served = user_features_from_ratings(mine[["movie_id", "rating", "rating_ts"]], items, transform)
    users, matrix = user_feature_matrix(train, items, transform)
    np.testing.assert_array_equal(served, matrix[np.searchsorted(users, user)])
    full = training_user_features(train, items, transform, "full")
    rows = np.flatnonzero(train["user_id"].to_numpy() == user)
    np.testing.assert_array_equal(full[rows], np.tile(served, (len(rows), 1)))
    # prefix: the features of each rating come from the ratings before it, nothing else.
    prefix = training_user_features(train, items, transform, "prefix")
    loo = training_user_features(train, items, transform, "loo")
    for p in (0, 1, 2, len(mine) // 2, len(mine) - 1):
        row = mine.index[p]
        before = user_features_from_ratings(mine.iloc[:p], items, transform)
        np.testing.assert_allclose(prefix[row], before, atol=1e-5)
        others = user_features_from_ratings(mine.drop(index=row), items, transform)
        np.testing.assert_allclose(loo[row], others, atol=1e-5)
    # input order does not matter
    shuffled = mine.sample(frac=1.0, random_state=1)
    np.testing.assert_array_equal(user_features_from_ratings(shuffled, items, transform), served)


def test_prefix_features_never_see_the_target(fitted) -> None:
    train, transform, items = fitted
    changed = train.copy()
    rows = changed.groupby("user_id").tail(1).index  # every user's latest rating
    changed.loc[rows, "rating"] = np.where(changed.loc[rows, "rating"] > 3, 0.5, 5.0)
    a = training_user_features(train, items, transform, "prefix")
    b = training_user_features(changed, items, transform, "prefix")
    np.testing.assert_array_equal(a[rows], b[rows])


def test_user_row_chunks_hold_whole_users() -> None:
    users = np.random.default_rng(0).integers(0, 40, size=1_000)
    chunks = user_row_chunks(users, 100)
    np.testing.assert_array_equal(np.sort(np.concatenate(chunks)), np.arange(len(users)))
    assert len(chunks) > 5
    owners = [set(users[c].tolist()) for c in chunks]
    assert all(not (a & b) for i, a in enumerate(owners) for b in owners[i + 1 :])
    assert all(len(c) < 100 + np.bincount(users).max() for c in chunks)
    only = user_row_chunks(users, len(users))
    assert len(only) == 1 and (only[0] == np.arange(len(users))).all()


def test_chunked_and_blocked_user_features_are_exact(fitted, monkeypatch) -> None:
    """Per-user chunks (streamed training) and row blocks give the unchunked values, bit for bit."""
    train, transform, items = fitted
    whole = {s: training_user_features(train, items, transform, s) for s in ("prefix", "loo")}
    users, served = user_feature_matrix(train, items, transform)
    chunks = user_row_chunks(train["user_id"].to_numpy(), 1_500)
    assert len(chunks) > 2
    for rows in chunks:
        part = training_user_features(train.iloc[rows], items, transform, "prefix")
        np.testing.assert_array_equal(part, whole["prefix"][rows])
    monkeypatch.setattr(feature_users, "FEATURE_BLOCK_ROWS", 1_000)
    monkeypatch.setattr(feature_users, "USER_CHUNK_ROWS", 1_500)
    for scheme, expected in whole.items():
        got = training_user_features(train, items, transform, scheme)  # type: ignore[arg-type]
        np.testing.assert_array_equal(got, expected)
    users_c, served_c = user_feature_matrix(train, items, transform)
    np.testing.assert_array_equal(users_c, users)
    np.testing.assert_array_equal(served_c, served)


def test_cold_start_vectors(fitted) -> None:
    train, transform, items = fitted
    empty = user_features_from_ratings(train.iloc[:0], items, transform)
    np.testing.assert_array_equal(empty, empty_user_features(transform))
    assert empty.shape == (len(transform.user_columns),)
    movie = int(items.item_ids[0])
    one = user_features_from_ratings(
        pd.DataFrame({"movie_id": [movie], "rating": [5.0], "rating_ts": [1_500_000_000]}),
        items,
        transform,
    )
    assert np.isfinite(one).all() and not np.array_equal(one, empty)
    assert one[transform.user_columns.index("u_bias")] > 0
    unknown = user_features_from_ratings(
        pd.DataFrame({"movie_id": [-42], "rating": [4.0], "rating_ts": [1_500_000_000]}),
        items,
        transform,
    )
    assert np.isfinite(unknown).all()
    # with user_ids, users without ratings get the empty vector
    _, matrix = user_feature_matrix(train, items, transform, np.array([-1, 10**9]))
    np.testing.assert_array_equal(matrix, np.tile(empty, (2, 1)))


def test_training_item_rows_leave_the_target_out(fitted) -> None:
    train, transform, items = fitted
    rows = training_item_rows(train, items, transform)
    col = transform.item_columns.index
    idx = items.index_of(train["movie_id"].to_numpy())
    n = items.count[idx] - 1.0
    expected = transform.scale("ml_log_count", np.log1p(n))
    np.testing.assert_allclose(rows[:, col("ml_log_count")], expected, atol=1e-5)
    s = items.rating_sum[idx] - train["rating"].to_numpy()
    bias = (s - n * transform.global_mean) / (n + transform.item_lambda)
    np.testing.assert_allclose(rows[:, col("ml_bias")], bias, atol=1e-5)
    genres = [col(f"genre:{g}") for g in transform.genres]
    np.testing.assert_array_equal(rows[:, genres], items.matrix[idx][:, genres])


def test_transform_json_round_trip(fitted, tmp_path: Path) -> None:
    train, transform, items = fitted
    text = transform.to_json()
    json.loads(text)  # plain JSON
    back = FeatureTransform.from_json(text)
    assert back == transform
    np.testing.assert_array_equal(
        user_feature_matrix(train, items, back)[1],
        user_feature_matrix(train, items, transform)[1],
    )
    items.to_npz(tmp_path / "items.npz")
    loaded = ItemFeatures.from_npz(tmp_path / "items.npz")
    for name in ItemFeatures.ARRAYS:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(items, name))
    with pytest.raises(ValueError, match="version"):
        FeatureTransform.from_json(text.replace('"version": 1', '"version": 99'))


def _tsv_gz(path: Path, header: tuple[str, ...], rows: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        f.write("\t".join(header) + "\n" + "\n".join(rows) + "\n")
    return path


def test_unknown_genres_missing_imdb_and_imdb_only_titles(tmp_path: Path) -> None:
    ml = tmp_path / "ml"
    ml.mkdir()
    (ml / "movies.csv").write_text(
        "movieId,title,genres\n1,Known (1995),Comedy|Superhero\n2,No Genres,(no genres listed)\n"
        "3,Unlinked (2001),Drama\n"
    )
    (ml / "links.csv").write_text("movieId,imdbId,tmdbId\n1,0000001,\n2,0000002,5\n3,0000404,\n")
    (ml / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,1000000000\n1,2,3.0,1000000100\n"
        "2,1,5.0,1000000200\n"
    )
    basics = _tsv_gz(tmp_path / "b.tsv.gz", IMDB_BASICS_COLUMNS, [
        "tt0000001\tmovie\tKnown\tKnown\t0\t1995\t\\N\t\\N\tComedy",
        "tt0000002\tmovie\tNo Genres\tNo Genres\t0\t\\N\t\\N\t95\tFamily,Biography",
        "tt0000007\tmovie\tIMDb only\tIMDb only\t0\t2010\t\\N\t120\tFamily,Game-Show",
        "tt0000008\ttvEpisode\tEpisode\tEpisode\t0\t2010\t\\N\t20\tDrama",
    ])  # fmt: skip
    ratings = _tsv_gz(tmp_path / "r.tsv.gz", IMDB_RATINGS_COLUMNS, [
        "tt0000001\t7.0\t1000", "tt0000002\t6.0\t50", "tt0000007\t8.0\t5000",
        "tt0000008\t9.0\t9000",
    ])  # fmt: skip
    conn = warehouse.connect(":memory:")
    warehouse.load_movielens_release(conn, ml)
    train = conn.execute("SELECT * FROM movielens_ratings").df()
    # Without IMDb at all (as on real MovieLens here): indicators, no failure.
    t0 = fit_feature_transform(conn, train, latent_dim=2)
    i0 = build_item_features(conn, train, t0)
    assert (i0.matrix[:, t0.item_columns.index("imdb_missing")] == 1).all()
    assert np.isfinite(i0.matrix).all()

    warehouse.load_imdb_titles(conn, basics, ratings)
    t = fit_feature_transform(conn, train, latent_dim=2)
    build_catalog(conn, CatalogFilters(title_types=("movie", "tvMovie"), min_votes=100))
    items = build_item_features(conn, train, t, catalog_table=CATALOG)
    col = t.item_columns.index
    row = {int(i): items.matrix[j] for j, i in enumerate(items.item_ids)}
    assert set(row) == {1, 2, 3, imdb_only_item_id("tt0000007")}  # no episodes
    known, no_genre, unlinked = row[1], row[2], row[3]
    imdb_only = row[imdb_only_item_id("tt0000007")]
    assert known[col("genre:Comedy")] == 1 and known[col("genre_other")] == 1  # "Superhero"
    assert known[col("runtime_missing")] == 1 and known[col("imdb_missing")] == 0
    # no MovieLens genres -> IMDb genres mapped (Family -> Children, Biography -> Drama)
    assert no_genre[col("genre:Children")] == 1 and no_genre[col("genre:Drama")] == 1
    assert no_genre[col("year_missing")] == 1 and no_genre[col("runtime_missing")] == 0
    assert unlinked[col("imdb_missing")] == 1 and unlinked[col("genre:Drama")] == 1
    assert imdb_only[col("genre:Children")] == 1 and imdb_only[col("genre_other")] == 1
    assert imdb_only[col("ml_unrated")] == 1 and imdb_only[col("imdb_missing")] == 0
    assert np.isfinite(items.matrix).all()
    unknown = unknown_item_row(t)
    assert unknown[col("ml_unrated")] == 1 and unknown[col("genre_none")] == 1


def test_user_scalers_come_from_the_full_history_features(fitted) -> None:
    """The scaled user columns are fitted from per-user aggregates; they equal the columns of
    the full-history feature rows (`_finalize`), so no full feature pass is needed to fit."""
    train, transform, items = fitted
    _, raw = feature_users._user_raw_full(train, items, transform)
    for name in feature_users.USER_SCALED:
        column = raw[:, transform.user_columns.index(name)]
        assert transform.scalers[name] == pytest.approx(fit_scaler(column), rel=1e-12)


def test_fit_features_builds_the_item_table_once(sample_conn, fitted) -> None:
    """`fit_features` returns the item features `build_item_features` gives for its transform."""
    train, _, _ = fitted
    conn = sample_conn.cursor()
    transform, items = fit_features(conn, train, TwoTowerParams(latent_dim=4))
    rebuilt = build_item_features(conn, train, transform)
    for name in ItemFeatures.ARRAYS:
        np.testing.assert_array_equal(getattr(items, name), getattr(rebuilt, name))
