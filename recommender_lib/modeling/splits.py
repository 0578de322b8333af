"""Rating splits for the two evaluation protocols of docs/architecture.md §6, computed inside
DuckDB.

One table, `rating_splits`, holds every rating once per protocol:

- **P1, per-user temporal holdout.** Each user's ratings are ordered by `(rating_ts, movie_id)`.
  The last `ceil(test_fraction * n)` go to `test`; of the `n_rest` left, the last
  `ceil(validation_fraction * n_rest)` go to `validation` when that still leaves at least one
  `train` row (otherwise none do); the rest are `train`. The published anchors (80,419 / 20,417
  on ml-latest-small) count `train` + `validation` together as "train": the validation slice is
  carved from the end of train for model selection only.
- **P2, cold start.** A seeded, row-order-independent choice of `cold_user_fraction` of the users
  (users ordered by `md5('<seed>:<user_id>')`, the first `ceil(fraction * n_users)` taken, never
  all of them) is held out entirely: all their ratings are split `cold`, with `reveal_rank`
  1..n in `(rating_ts, movie_id)` order. Every other user's ratings are split temporally into
  `train` / `validation` with the P1 validation rule applied to all of that user's ratings (P2 has
  no per-user test rows: the cold users are its test set).

How consumers read P2: for a reveal size `k`, the revealed history is `reveal_rank <= k`. Rows
with `reveal_rank > k` are the user's later ratings, but to compare k = 3, 5 and 10 on the SAME
rows, the scored set is `reveal_rank > max(reveal_k)` for every k (`cold_start_sets`); cold users
with `max(reveal_k)` ratings or fewer are therefore never scored (MovieLens users all have ≥ 20).

Fractions become row counts with `ceil(fraction * n - 1e-9)`, so decimal intent wins over binary
float artefacts (0.1 * 30 is 3.0000000000000004 in IEEE doubles, which would otherwise round to 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import pandas as pd

from recommender_lib.warehouse.storage import transaction

SPLITS_TABLE = "rating_splits"

P1 = "P1"
P2 = "P2"
PROTOCOL_SPLITS: dict[str, tuple[str, ...]] = {
    P1: ("train", "validation", "test"),
    P2: ("train", "validation", "cold"),
}
_EPS = 1e-9


@dataclass(frozen=True)
class SplitConfig:
    """Split parameters; the defaults are the protocol of docs/architecture.md §6."""

    test_fraction: float = 0.2
    validation_fraction: float = 0.1
    cold_user_fraction: float = 0.2
    reveal_k: tuple[int, ...] = (3, 5, 10)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must be in [0, 1), got {self.validation_fraction}"
            )
        if not 0.0 <= self.cold_user_fraction < 1.0:
            raise ValueError(f"cold_user_fraction must be in [0, 1), got {self.cold_user_fraction}")
        if not self.reveal_k or any(int(k) != k or k < 1 for k in self.reveal_k):
            raise ValueError(f"reveal_k must be positive integers, got {self.reveal_k}")
        if int(self.seed) != self.seed:
            raise ValueError(f"seed must be an integer, got {self.seed!r}")

    @property
    def max_reveal_k(self) -> int:
        """Cold-start rows after this rank are the scored set for every k."""
        return max(self.reveal_k)


def _share(fraction: float, n: str) -> str:
    """SQL for `ceil(fraction * n)` as BIGINT, robust to float artefacts."""
    return f"CAST(ceil(CAST({n} AS DOUBLE) * {float(fraction)!r} - {_EPS!r}) AS BIGINT)"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _splits_sql(config: SplitConfig, ratings_table: str) -> str:
    seed = int(config.seed)
    val_all = _share(config.validation_fraction, "n")
    val_rest = _share(config.validation_fraction, "n - n_test")
    return f"""
        WITH ranked AS (
            SELECT user_id, movie_id, rating, rating_ts,
                   row_number() OVER (PARTITION BY user_id ORDER BY rating_ts, movie_id) AS pos,
                   count(*) OVER (PARTITION BY user_id) AS n
            FROM {_quote(ratings_table)}
        ),
        users AS (
            SELECT user_id,
                   row_number() OVER (ORDER BY md5('{seed}:' || CAST(user_id AS VARCHAR)),
                                      user_id) AS draw,
                   count(*) OVER () AS n_users
            FROM (SELECT DISTINCT user_id FROM ranked)
        ),
        cold_users AS (
            SELECT user_id FROM users
            WHERE draw <= least({_share(config.cold_user_fraction, "n_users")}, n_users - 1)
        ),
        sized AS (
            SELECT r.*, c.user_id IS NOT NULL AS is_cold,
                   {_share(config.test_fraction, "r.n")} AS n_test
            FROM ranked r LEFT JOIN cold_users c USING (user_id)
        ),
        counted AS (
            SELECT *,
                   CASE WHEN n - n_test - {val_rest} >= 1 THEN {val_rest} ELSE 0 END AS n_val_p1,
                   CASE WHEN n - {val_all} >= 1 THEN {val_all} ELSE 0 END AS n_val_p2
            FROM sized
        )
        SELECT user_id, movie_id, rating, rating_ts, '{P1}' AS protocol,
               CASE WHEN pos > n - n_test THEN 'test'
                    WHEN pos > n - n_test - n_val_p1 THEN 'validation'
                    ELSE 'train' END AS split,
               CAST(NULL AS INTEGER) AS reveal_rank
        FROM counted
        UNION ALL
        SELECT user_id, movie_id, rating, rating_ts, '{P2}' AS protocol,
               CASE WHEN is_cold THEN 'cold'
                    WHEN pos > n - n_val_p2 THEN 'validation'
                    ELSE 'train' END AS split,
               CASE WHEN is_cold THEN CAST(pos AS INTEGER) END AS reveal_rank
        FROM counted
    """


def build_splits(
    conn: duckdb.DuckDBPyConnection,
    config: SplitConfig = SplitConfig(),
    ratings_table: str = "movielens_ratings",
) -> dict[str, int]:
    """Replace `rating_splits` with both protocols' splits of `ratings_table`, atomically.

    Returns row counts keyed `"<protocol>/<split>"` (every key present, zeros included). The
    table is not sorted (sorting 2 x 25M rows by string keys tripled the build time on ml-25m
    sized input); `load_split` orders what it reads.
    """
    with transaction(conn):
        conn.execute(
            f"CREATE OR REPLACE TABLE {SPLITS_TABLE} AS {_splits_sql(config, ratings_table)}"
        )
        counts = split_counts(conn)
    return counts


def split_counts(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Row counts of `rating_splits` per `"<protocol>/<split>"`."""
    rows = conn.execute(
        f"SELECT protocol, split, count(*) FROM {SPLITS_TABLE} GROUP BY ALL"
    ).fetchall()
    found = {f"{p}/{s}": int(n) for p, s, n in rows}
    expected = {f"{p}/{s}": 0 for p, splits in PROTOCOL_SPLITS.items() for s in splits}
    return expected | found


def _normalize(protocol: str, split: str | Sequence[str]) -> tuple[str, list[str]]:
    proto = protocol.upper()
    if proto not in PROTOCOL_SPLITS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {list(PROTOCOL_SPLITS)}")
    names = split.split("+") if isinstance(split, str) else list(split)
    names = [s.strip().lower() for s in names]
    unknown = [s for s in names if s not in PROTOCOL_SPLITS[proto]]
    if unknown or not names:
        raise ValueError(
            f"unknown split(s) {unknown or split!r} for {proto}; "
            f"expected {PROTOCOL_SPLITS[proto]} (join several with '+')"
        )
    return proto, names


def load_split(
    conn: duckdb.DuckDBPyConnection, protocol: str, split: str | Sequence[str]
) -> pd.DataFrame:
    """Rows of one split (or several: `"train+validation"` or a list) as a DataFrame.

    Columns `user_id, movie_id, rating, rating_ts`, plus `reveal_rank` when the P2 `cold` split
    is asked for (alone: the other splits have no rank). Ordered by user, then time, then movie.
    """
    proto, names = _normalize(protocol, split)
    columns = "user_id, movie_id, rating, rating_ts"
    if names == ["cold"]:
        columns += ", reveal_rank"
    placeholders = ", ".join("?" for _ in names)
    return conn.execute(
        f"SELECT {columns} FROM {SPLITS_TABLE} WHERE protocol = ? AND split IN ({placeholders}) "
        "ORDER BY user_id, rating_ts, movie_id",
        [proto, *names],
    ).df()


def cold_start_sets(
    df: pd.DataFrame, k: int, scored_after: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(revealed, scored) rows of the P2 `cold` split for reveal size `k`.

    revealed: `reveal_rank <= k` (what the model may know about the user);
    scored: `reveal_rank > scored_after`, where `scored_after` defaults to
    `max(SplitConfig().reveal_k)`, so every k is scored on the same rows.
    """
    scored_after = SplitConfig().max_reveal_k if scored_after is None else int(scored_after)
    if not 1 <= k <= scored_after:
        raise ValueError(f"k must be in [1, {scored_after}], got {k}")
    if "reveal_rank" not in df.columns:
        raise ValueError("cold_start_sets needs the P2 'cold' split with its reveal_rank column")
    revealed = df[df["reveal_rank"] <= k].reset_index(drop=True)
    scored = df[df["reveal_rank"] > scored_after].reset_index(drop=True)
    return revealed, scored


RELEASE_SPLITS = "train+validation+test"  # every rating of the release


def release_ratings(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every rating of the release, ordered by user, time, movie."""
    return load_split(conn, P1, RELEASE_SPLITS)
