"""Rating splits: P1 temporal holdout and P2 cold start, computed in DuckDB, without leakage."""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from recommender_lib.modeling import splits
from recommender_lib.modeling.splits import SplitConfig, build_splits, cold_start_sets, load_split
from recommender_lib.warehouse import tables as warehouse


def _ceil(fraction: float, n: int) -> int:
    return math.ceil(fraction * n - 1e-9)


def _conn_with(
    ratings: pd.DataFrame, table: str = "movielens_ratings"
) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect(":memory:")
    conn.register("frame", ratings)
    conn.execute(
        f"""CREATE TABLE {table} AS SELECT CAST(user_id AS INTEGER) AS user_id,
            CAST(movie_id AS INTEGER) AS movie_id, CAST(rating AS DOUBLE) AS rating,
            CAST(rating_ts AS BIGINT) AS rating_ts FROM frame"""
    )
    conn.unregister("frame")
    return conn


def _random_ratings(n_users: int = 60, seed: int = 1) -> pd.DataFrame:
    """Users with 1..40 ratings, timestamps drawn from a small range so ties are common."""
    rng = np.random.default_rng(seed)
    frames = []
    for user in range(1, n_users + 1):
        n = int(rng.integers(1, 41))
        frames.append(
            pd.DataFrame(
                {
                    "user_id": user,
                    "movie_id": rng.choice(500, size=n, replace=False) + 1,
                    "rating": rng.integers(1, 11, size=n) / 2,
                    "rating_ts": rng.integers(1_000, 1_010, size=n),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _table(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return conn.execute(f"SELECT * FROM {splits.SPLITS_TABLE}").df()


def _assert_no_temporal_leak(table: pd.DataFrame) -> None:
    """Every P1 test rating comes after all of its user's train/validation ratings
    (timestamp, ties broken by movie_id), and validation after train likewise."""
    p1 = table[table["protocol"] == "P1"]
    key = p1["rating_ts"].astype("int64") * 10_000_000 + p1["movie_id"].astype("int64")
    p1 = p1.assign(key=key)
    first = p1.groupby(["user_id", "split"])["key"].min().unstack()
    last = p1.groupby(["user_id", "split"])["key"].max().unstack()
    for earlier, later in [("train", "validation"), ("train", "test"), ("validation", "test")]:
        if earlier in last and later in first:
            both = last[earlier].notna() & first[later].notna()
            assert (last.loc[both, earlier] < first.loc[both, later]).all(), (earlier, later)


def test_p1_counts_follow_the_ceil_rules() -> None:
    sizes = {1: 1, 2: 2, 5: 5, 10: 10, 38: 38}  # user_id -> number of ratings
    rows = [
        (user, movie, 3.0, 1_000 + movie) for user, n in sizes.items() for movie in range(1, n + 1)
    ]
    conn = _conn_with(pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "rating_ts"]))
    build_splits(conn)
    got = (
        _table(conn)
        .query("protocol == 'P1'")
        .groupby(["user_id", "split"])
        .size()
        .unstack(fill_value=0)
    )
    # n=1:  test ceil(0.2)=1, nothing left.
    # n=2:  test ceil(0.4)=1; rest 1, validation ceil(0.1)=1 would leave no train -> 0.
    # n=5:  test ceil(1.0)=1; rest 4, validation ceil(0.4)=1, train 3.
    # n=10: test 2; rest 8, validation ceil(0.8)=1, train 7.
    # n=38: test ceil(7.6)=8; rest 30, validation ceil(3.0)=3 (not 4: 0.1*30 is 3.0000000000000004
    #       in doubles), train 27.
    expected = {1: (0, 0, 1), 2: (1, 0, 1), 5: (3, 1, 1), 10: (7, 1, 2), 38: (27, 3, 8)}
    for user, (train, validation, test) in expected.items():
        assert got.loc[user, "train"] == train
        assert got.loc[user, "validation"] == validation
        assert got.loc[user, "test"] == test


def test_p1_ties_in_time_are_broken_by_movie_id() -> None:
    # One user, ten ratings all at the same second: the highest two movie ids are the test rows.
    ratings = pd.DataFrame(
        {"user_id": 7, "movie_id": [50, 3, 41, 9, 27, 14, 38, 2, 33, 20], "rating": 4.0,
         "rating_ts": 1_500_000_000}
    )  # fmt: skip
    conn = _conn_with(ratings)
    build_splits(conn)
    assert sorted(load_split(conn, "P1", "test")["movie_id"]) == [41, 50]
    assert list(load_split(conn, "P1", "validation")["movie_id"]) == [38]


def test_no_leakage_and_full_coverage_on_random_ratings() -> None:
    ratings = _random_ratings()
    conn = _conn_with(ratings.sample(frac=1.0, random_state=3))  # row order must not matter
    counts = build_splits(conn)
    table = _table(conn)
    _assert_no_temporal_leak(table)
    for protocol in ("P1", "P2"):
        part = table[table["protocol"] == protocol]
        # every rating exactly once per protocol
        assert len(part) == len(ratings)
        assert not part.duplicated(["user_id", "movie_id"]).any()
    assert sum(counts.values()) == 2 * len(ratings)
    assert counts["P1/test"] == sum(_ceil(0.2, n) for n in ratings.groupby("user_id").size())


def _cold_users(conn: duckdb.DuckDBPyConnection) -> set[int]:
    return set(load_split(conn, "P2", "cold")["user_id"])


def test_p2_holds_cold_users_out_entirely() -> None:
    ratings = _random_ratings(n_users=60)
    conn = _conn_with(ratings)
    build_splits(conn)
    cold = load_split(conn, "P2", "cold")
    warm = load_split(conn, "P2", "train+validation")
    cold_users = set(cold["user_id"])
    assert len(cold_users) == 12  # ceil(0.2 * 60)
    assert cold_users.isdisjoint(warm["user_id"])
    assert len(cold) + len(warm) == len(ratings)
    assert len(cold) == int(ratings["user_id"].isin(cold_users).sum())
    # reveal_rank is 1..n in (rating_ts, movie_id) order for every cold user
    for _, rows in cold.groupby("user_id"):
        ordered = rows.sort_values(["rating_ts", "movie_id"])
        assert list(ordered["reveal_rank"]) == list(range(1, len(rows) + 1))
    # warm users: the last ceil(0.1 * n) of ALL their ratings are validation (if train remains)
    val = load_split(conn, "P2", "validation").groupby("user_id").size()
    for user, n in ratings[~ratings["user_id"].isin(cold_users)].groupby("user_id").size().items():
        expected = _ceil(0.1, n) if n - _ceil(0.1, n) >= 1 else 0
        assert val.get(user, 0) == expected


def test_p2_cold_users_are_seeded_and_row_order_independent() -> None:
    ratings = _random_ratings(n_users=80)
    first = _conn_with(ratings)
    build_splits(first, SplitConfig(seed=5))
    shuffled = _conn_with(ratings.sample(frac=1.0, random_state=11))
    build_splits(shuffled, SplitConfig(seed=5))
    assert _cold_users(first) == _cold_users(shuffled)
    other = _conn_with(ratings)
    build_splits(other, SplitConfig(seed=6))
    assert _cold_users(other) != _cold_users(first)
    assert len(_cold_users(other)) == len(_cold_users(first)) == 16


def test_cold_user_share_never_takes_every_user() -> None:
    ratings = _random_ratings(n_users=2)
    conn = _conn_with(ratings)
    build_splits(conn, SplitConfig(cold_user_fraction=0.9))  # ceil(1.8) = 2, capped at 1
    assert len(_cold_users(conn)) == 1


def test_cold_start_sets_score_the_same_rows_for_every_k() -> None:
    cold = pd.DataFrame(
        {"user_id": 1, "movie_id": range(100, 115), "rating": 3.0, "rating_ts": range(15),
         "reveal_rank": range(1, 16)}
    )  # fmt: skip
    scored_rows = []
    for k in (3, 5, 10):
        revealed, scored = cold_start_sets(cold, k)
        assert list(revealed["reveal_rank"]) == list(range(1, k + 1))
        scored_rows.append(list(scored["movie_id"]))
    assert scored_rows[0] == scored_rows[1] == scored_rows[2] == list(range(110, 115))
    with pytest.raises(ValueError):
        cold_start_sets(cold, 11)
    with pytest.raises(ValueError):
        cold_start_sets(cold.drop(columns="reveal_rank"), 3)


def test_load_split_validates_names_and_returns_typed_columns() -> None:
    conn = _conn_with(_random_ratings(n_users=10))
    build_splits(conn)
    cold = load_split(conn, "p2", "cold")
    assert list(cold.columns) == ["user_id", "movie_id", "rating", "rating_ts", "reveal_rank"]
    train = load_split(conn, "P1", ["train", "validation"])
    assert list(train.columns) == ["user_id", "movie_id", "rating", "rating_ts"]
    assert len(train) == len(load_split(conn, "P1", "train+validation"))
    with pytest.raises(ValueError, match="unknown protocol"):
        load_split(conn, "P3", "train")
    with pytest.raises(ValueError, match="unknown split"):
        load_split(conn, "P1", "cold")


def test_failed_build_keeps_the_previous_table() -> None:
    conn = _conn_with(_random_ratings(n_users=10))
    before = build_splits(conn)
    with pytest.raises(duckdb.Error):
        build_splits(conn, ratings_table="no_such_table")
    assert splits.split_counts(conn) == before


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        SplitConfig(test_fraction=0.0)
    with pytest.raises(ValueError):
        SplitConfig(cold_user_fraction=1.0)
    with pytest.raises(ValueError):
        SplitConfig(reveal_k=(0, 3))
    assert SplitConfig().max_reveal_k == 10


@pytest.mark.shared_data
def test_real_movielens_matches_the_design_anchors(shared_movielens: Path) -> None:
    conn = warehouse.connect(":memory:")
    warehouse.load_movielens_ratings(conn, shared_movielens / "ml-latest-small")
    counts = build_splits(conn)
    # docs/architecture.md §6: 80,419 train (validation carved from it) / 20,417 test.
    assert counts["P1/train"] + counts["P1/validation"] == 80_419
    assert counts["P1/test"] == 20_417
    assert counts["P2/train"] + counts["P2/validation"] + counts["P2/cold"] == 100_836
    assert len(_cold_users(conn)) == 122  # ceil(0.2 * 610)
    _assert_no_temporal_leak(_table(conn))
