"""`app_feedback`: application feedback events copied incrementally from the feedback store, and
`training_ratings`, the ratings training reads (MovieLens ∪ application ratings).

A copy (`copy_feedback`) runs in this order:

1. Forget: rows of application users the store no longer knows (`store.users()`, a user
   forgotten through `DELETE /users/{user}`) are deleted from `app_feedback` (and from a kept
   `app_feedback__rejected`), so forgetting reaches the warehouse on the next copy.
2. Cursor: the largest `seq` in `app_feedback` (0 when empty); the store never reuses a `seq`.
3. Stage: every event after the cursor (`store.events_after(cursor, batch)`, batch by batch)
   goes into `app_feedback__staging`, with `training_user_id(app_user)`.
4. Gate: the blocking rules run on the staged rows — the pandera schema `APP_FEEDBACK_SCHEMA`
   (`pandera_schema`: types, ratings 0.5-5 in halves and no value on other types, `at` between
   1990 and now + 5 min, the id mapping), `unique_key` (event_id unique over the published rows
   and the staged rows together) and `known_titles` (every item_id is in `catalog`).
5. Append: when all pass, the staged rows are appended in one transaction; otherwise nothing is
   appended and they are kept as `app_feedback__rejected` for inspection (the next copy stages
   them again, so the step keeps failing until the store's bad rows are dealt with).

A re-run stages nothing that is already there (the cursor), so it adds nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import duckdb
import pandas as pd

from recommender_lib.sources.feedback.events import RATING, training_user_id
from recommender_lib.sources.feedback.store import StoredEvent
from recommender_lib.warehouse import quality
from recommender_lib.warehouse import tables as warehouse
from recommender_lib.warehouse.catalog import CATALOG
from recommender_lib.warehouse.gate import KEY_RULE, SCHEMA_RULE
from recommender_lib.warehouse.quality import QualityResult
from recommender_lib.warehouse.schemas import APP_FEEDBACK, APP_FEEDBACK_SCHEMA
from recommender_lib.warehouse.storage import transaction

__all__ = ["APP_FEEDBACK", "APP_FEEDBACK_KEY", "FEEDBACK_RULES", "KNOWN_TITLES_RULE",
           "TRAINING_RATINGS", "FeedbackCopy", "TrainingRatings", "build_training_ratings",
           "copy_feedback", "feedback_watermark"]  # fmt: skip

TRAINING_RATINGS = "training_ratings"
APP_FEEDBACK_KEY = ["event_id"]
KNOWN_TITLES_RULE = "known_titles"
FEEDBACK_RULES = (SCHEMA_RULE, KEY_RULE, KNOWN_TITLES_RULE)  # the blocking rules, in order
COPY_BATCH = 10_000  # events read from the store at a time
APP_FEEDBACK_COLUMNS = {
    "event_id": "VARCHAR",
    "app_user": "VARCHAR",
    "training_user_id": "BIGINT",
    "ref": "VARCHAR",
    "item_id": "BIGINT",
    "type": "VARCHAR",
    "value": "DOUBLE",
    "at": "TIMESTAMP",
    "received_at": "TIMESTAMP",
    "seq": "BIGINT",
}
_STORE_COLUMNS = ("seq", "event_id", "app_user", "ref", "item_id", "type", "value", "at",
                  "received_at")  # fmt: skip
_USERS_VIEW = "_app_feedback_users"
_EVENTS_VIEW = "_app_feedback_events"


class FeedbackSource(Protocol):
    """The read side of `FeedbackStore` a copy needs."""

    def users(self) -> set[str]: ...

    def events_after(self, seq: int, limit: int | None = None) -> list[StoredEvent]: ...


@dataclass(frozen=True)
class FeedbackCopy:
    """What one copy did: new rows by event type, cursor before and after, forgotten users."""

    copied: Mapping[str, int]
    previous_watermark: int
    watermark: int
    forgotten_users: int
    forgotten_rows: int
    total_rows: int
    checks: Mapping[str, QualityResult] = field(default_factory=dict)
    published: bool = True
    rejected_table: str | None = None

    @property
    def new_rows(self) -> int:
        return sum(self.copied.values())

    @property
    def failures(self) -> list[str]:
        return [f"{name}: {r.summary}" for name, r in self.checks.items() if not r.passed]


def _create(conn: duckdb.DuckDBPyConnection, table: str, *, replace: bool = False) -> None:
    columns = ", ".join(f'"{name}" {dtype}' for name, dtype in APP_FEEDBACK_COLUMNS.items())
    verb = "CREATE OR REPLACE TABLE" if replace else "CREATE TABLE IF NOT EXISTS"
    conn.execute(f'{verb} "{table}" ({columns})')


def feedback_watermark(conn: duckdb.DuckDBPyConnection) -> int:
    """The largest store `seq` in `app_feedback` (0 when the table is empty or missing)."""
    if not warehouse.table_exists(conn, APP_FEEDBACK):
        return 0
    rows = conn.execute(f"SELECT coalesce(max(seq), 0) FROM {APP_FEEDBACK}").fetchall()
    return int(rows[0][0])


def _forget(conn: duckdb.DuckDBPyConnection, users: set[str]) -> tuple[int, int]:
    """Delete the rows of users missing from `users`: (users removed, rows removed)."""
    frame = pd.DataFrame({"app_user": sorted(users)}, dtype=object)
    tables = [t for t in (APP_FEEDBACK, warehouse.rejected_table(APP_FEEDBACK))
              if warehouse.table_exists(conn, t)]  # fmt: skip
    gone = f"app_user NOT IN (SELECT app_user FROM {_USERS_VIEW})"
    conn.register(_USERS_VIEW, frame)
    try:
        found = conn.execute(
            f"SELECT count(DISTINCT app_user), count(*) FROM {APP_FEEDBACK} WHERE {gone}"
        ).fetchall()
        with transaction(conn):
            for table in tables:
                conn.execute(f'DELETE FROM "{table}" WHERE {gone}')
    finally:
        conn.unregister(_USERS_VIEW)
    return int(found[0][0]), int(found[0][1])


def _events_frame(events: list[StoredEvent]) -> pd.DataFrame:
    frame = pd.DataFrame([[getattr(e, c) for c in _STORE_COLUMNS] for e in events],
                         columns=list(_STORE_COLUMNS))  # fmt: skip
    frame["value"] = frame["value"].astype("float64")
    frame["training_user_id"] = [training_user_id(u) for u in frame["app_user"]]
    return frame


def _stage(
    conn: duckdb.DuckDBPyConnection, store: FeedbackSource, cursor: int, batch: int
) -> dict[str, int]:
    """Every store event after `cursor` into `app_feedback__staging`; rows per event type."""
    staging = warehouse.staging_table(APP_FEEDBACK)
    _create(conn, staging, replace=True)
    select = ", ".join(
        f'make_timestamp("{c}" * 1000000) AS "{c}"' if c in ("at", "received_at") else f'"{c}"'
        for c in APP_FEEDBACK_COLUMNS
    )
    while events := store.events_after(cursor, batch):
        conn.register(_EVENTS_VIEW, _events_frame(events))
        try:
            conn.execute(f'INSERT INTO "{staging}" SELECT {select} FROM {_EVENTS_VIEW}')
        finally:
            conn.unregister(_EVENTS_VIEW)
        cursor = events[-1].seq
    rows = conn.execute(f'SELECT type, count(*) FROM "{staging}" GROUP BY ALL').fetchall()
    return {str(t): int(n) for t, n in sorted(rows)}


def _known_titles(conn: duckdb.DuckDBPyConnection, staging: str) -> QualityResult:
    """Every staged item_id is a catalogue title."""
    if not warehouse.table_exists(conn, CATALOG):
        staged = warehouse.row_count(conn, staging)
        return QualityResult(
            staged == 0, f"{staging}: no {CATALOG} table to check {staged} titles against"
        )
    unknown = (f'SELECT item_id, ref, count(*) AS n FROM "{staging}" '
               f"WHERE item_id NOT IN (SELECT item_id FROM {CATALOG}) GROUP BY ALL")  # fmt: skip
    rows = conn.execute(f"SELECT * FROM ({unknown}) ORDER BY n DESC, item_id").fetchall()
    n = sum(int(r[2]) for r in rows)
    if not rows:
        return QualityResult(True, f"{staging}: every title is in {CATALOG}", {"unknown_rows": 0})
    cases = pd.DataFrame(rows[: quality.MAX_FAILURE_CASES], columns=["item_id", "ref", "rows"])
    return QualityResult(
        False,
        f"{staging}: {n} rows name {len(rows)} titles missing from {CATALOG}",
        {"unknown_rows": n, "unknown_titles": len(rows)},
        cases,
    )


def _check(conn: duckdb.DuckDBPyConnection) -> dict[str, QualityResult]:
    """The blocking rules on the staged rows (the key over published + staged rows)."""
    staging = warehouse.staging_table(APP_FEEDBACK)
    union = f"{APP_FEEDBACK}__with_staged"
    conn.execute(
        f'CREATE OR REPLACE TEMP VIEW "{union}" AS SELECT event_id FROM {APP_FEEDBACK} '
        f'UNION ALL SELECT event_id FROM "{staging}"'
    )
    try:
        key = quality.check_unique_keys(conn, union, APP_FEEDBACK_KEY)
    finally:
        conn.execute(f'DROP VIEW IF EXISTS "{union}"')
    return {
        SCHEMA_RULE: quality.validate_table(conn, staging, APP_FEEDBACK_SCHEMA),
        KEY_RULE: key,
        KNOWN_TITLES_RULE: _known_titles(conn, staging),
    }


def _append(conn: duckdb.DuckDBPyConnection) -> None:
    """Append the staged rows and drop the staging and a stale rejected table, atomically."""
    staging = warehouse.staging_table(APP_FEEDBACK)
    with transaction(conn):
        conn.execute(f'INSERT INTO {APP_FEEDBACK} SELECT * FROM "{staging}" ORDER BY seq')
        conn.execute(f'DROP TABLE "{staging}"')
        conn.execute(f'DROP TABLE IF EXISTS "{warehouse.rejected_table(APP_FEEDBACK)}"')


def copy_feedback(
    conn: duckdb.DuckDBPyConnection, store: FeedbackSource, *, batch: int = COPY_BATCH
) -> FeedbackCopy:
    """Forget removed users, then copy the store's new events through the gate (module doc).

    Nothing is appended when a rule fails: `published` is False and `rejected_table` names the
    table holding the staged rows. Store errors propagate with the table unchanged.
    """
    _create(conn, APP_FEEDBACK)
    forgotten_users, forgotten_rows = _forget(conn, store.users())
    cursor = feedback_watermark(conn)
    copied = _stage(conn, store, cursor, batch)
    checks = _check(conn)
    rejected = None
    if all(r.passed for r in checks.values()):
        _append(conn)
    else:
        staging = warehouse.staging_table(APP_FEEDBACK)
        rejected = warehouse.reject_staged(conn, APP_FEEDBACK)
        checks = {
            name: r if r.passed else _renamed(r, staging, rejected) for name, r in checks.items()
        }
    return FeedbackCopy(
        copied=copied,
        previous_watermark=cursor,
        watermark=feedback_watermark(conn),
        forgotten_users=forgotten_users,
        forgotten_rows=forgotten_rows,
        total_rows=warehouse.row_count(conn, APP_FEEDBACK),
        checks=checks,
        published=rejected is None,
        rejected_table=rejected,
    )


def _renamed(result: QualityResult, staging: str, rejected: str) -> QualityResult:
    return QualityResult(
        False,
        result.summary.replace(staging, rejected),
        {**result.details, "rejected_table": rejected},
        result.failure_cases,
    )


# ------------------------------------------------------------------------- training ratings


@dataclass(frozen=True)
class TrainingRatings:
    """Row counts of `training_ratings`: MovieLens rows, application rows and users."""

    movielens_rows: int
    app_rows: int
    app_users: int

    @property
    def rows(self) -> int:
        return self.movielens_rows + self.app_rows


def _app_ratings_sql() -> str:
    """Each application user's latest rating of each catalogue title, as training rows."""
    return f"""
        SELECT training_user_id AS user_id, item_id AS movie_id, value AS rating,
               CAST(epoch("at") AS BIGINT) AS rating_ts
        FROM {APP_FEEDBACK}
        WHERE type = '{RATING}' AND item_id IN (SELECT item_id FROM {CATALOG})
        QUALIFY row_number() OVER (
            PARTITION BY training_user_id, item_id ORDER BY "at" DESC, seq DESC) = 1
    """


def build_training_ratings(conn: duckdb.DuckDBPyConnection) -> TrainingRatings:
    """(Re)create the view `training_ratings (user_id, movie_id, rating, rating_ts)`.

    It is `movielens_ratings` ∪ the latest rating per (application user, title) in
    `app_feedback`, the user mapped to `training_user_id(app_user)` (2**60 + 56 bits of its
    sha256, above every MovieLens id) and the title to its catalogue item id (MovieLens id, or
    the negative id of an IMDb-only title). Without application ratings (or without the
    `app_feedback` table) it is exactly `movielens_ratings`' four columns, so the splits of a
    platform without feedback are unchanged.
    """
    base = f"SELECT user_id, movie_id, rating, rating_ts FROM {warehouse.MOVIELENS_RATINGS}"
    app_rows, app_users = 0, 0
    if warehouse.table_exists(conn, APP_FEEDBACK) and warehouse.table_exists(conn, CATALOG):
        counted = conn.execute(
            f"SELECT count(*), count(DISTINCT user_id) FROM ({_app_ratings_sql()})"
        ).fetchall()
        app_rows, app_users = int(counted[0][0]), int(counted[0][1])
    select = f"{base} UNION ALL {_app_ratings_sql()}" if app_rows else base
    conn.execute(f"CREATE OR REPLACE VIEW {TRAINING_RATINGS} AS {select}")
    movielens = warehouse.row_count(conn, warehouse.MOVIELENS_RATINGS)
    return TrainingRatings(movielens, app_rows, app_users)
