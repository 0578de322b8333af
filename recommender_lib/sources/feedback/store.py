"""`FeedbackStore`: the durable store of application feedback events (SQLAlchemy Core).

One implementation for the embedded default, an SQLite file in WAL mode
(`sqlite:///<data dir>/feedback/events.db`), and for Postgres (`postgresql+psycopg2://...`,
the docker-compose deployment). Not the DuckDB warehouse: that has one writer process, while
API workers write here concurrently; the `app_feedback` asset copies events into it.

Schema (created when missing; `CREATE ... IF NOT EXISTS`, so concurrent openers agree):

    feedback_events(
        seq          INTEGER/BIGINT PRIMARY KEY autoincrement  -- arrival order, the cursor
        event_id     TEXT UNIQUE NOT NULL     -- the application's id: idempotency key
        app_user     TEXT NOT NULL            -- the application's user id
        ref          TEXT NOT NULL            -- canonical title ref: tconst, else MovieLens id
        item_id      BIGINT NOT NULL          -- catalogue item id of the title
        type         TEXT NOT NULL            -- rating | watched | dismissed | impression
        value        REAL NULL                -- stars of a rating, else NULL
        at           BIGINT NOT NULL          -- when it happened, unix seconds
        received_at  BIGINT NOT NULL          -- when the store committed it, unix seconds
    )
    INDEX feedback_events_user_seq (app_user, seq)

Durability: `add` commits one transaction before it returns (SQLite: `synchronous=FULL` in WAL
mode, so a committed event survives a process or OS crash). Writers are serialised (SQLite's
write lock, plus an in-process lock so threads queue instead of busy-sleeping; a
transaction-scoped advisory lock on Postgres), so `seq` grows in commit order and
`events_after(seq)` never skips an event committed later with a smaller `seq`.
Forgetting a user deletes their rows; on SQLite `secure_delete` overwrites the freed pages and
the WAL is checkpointed, so no copy of them stays in the files.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.schema import CreateIndex, CreateTable

from recommender_lib.sources.feedback.events import FeedbackEvent

BUSY_TIMEOUT_MS = 30_000
_PG_WRITE_LOCK = 0x63696E65  # pg_advisory_xact_lock key serialising writers ("cine")

metadata = sa.MetaData()
events_table = sa.Table(
    "feedback_events",
    metadata,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),  # SQLite: the rowid alias
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("event_id", sa.Text, nullable=False, unique=True),
    sa.Column("app_user", sa.Text, nullable=False),
    sa.Column("ref", sa.Text, nullable=False),
    sa.Column("item_id", sa.BigInteger, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Column("received_at", sa.BigInteger, nullable=False),
    sqlite_autoincrement=True,  # never reuse a seq, even after the newest rows are forgotten
)
user_index = sa.Index("feedback_events_user_seq", events_table.c.app_user, events_table.c.seq)


@dataclass(frozen=True)
class StoredEvent(FeedbackEvent):
    """One row of `feedback_events`: the event, its place in arrival order and when it came
    (`received_at`: unix seconds)."""

    seq: int
    received_at: int


class FeedbackStoreError(RuntimeError):
    """The store could not be opened, read or written (the caller may retry)."""


def sqlite_url(path: Path | str) -> str:
    return f"sqlite:///{Path(path)}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=FULL",
        f"busy_timeout={BUSY_TIMEOUT_MS}",
        "secure_delete=ON",
        "foreign_keys=ON",
    ):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def _engine(url: str) -> Engine:
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise ValueError(f"not a database URL: {url!r}") from None
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True, future=True)
    database = parsed.database
    if not database or database == ":memory:":
        raise ValueError(f"the feedback store needs an SQLite file, not {url!r}")
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        parsed,
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
        future=True,
    )
    sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class FeedbackStore:
    """Feedback events in SQLite or Postgres; thread-safe (a connection pool), multi-process
    safe (the database's locking). `FeedbackStore.open(url)`; `close()` when done."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # SQLite has one writer at a time and its busy handler sleeps (up to 100 ms a try):
        # threads of this process queue on a lock instead, other processes on busy_timeout.
        self._writing: AbstractContextManager[Any] = (
            threading.Lock() if self.dialect == "sqlite" else nullcontext()
        )

    @classmethod
    def open(cls, url: str) -> FeedbackStore:
        """Open (creating the SQLite folder and the schema when missing)."""
        store = cls(_engine(url))
        try:
            with store.engine.begin() as conn:
                conn.execute(CreateTable(events_table, if_not_exists=True))
                conn.execute(CreateIndex(user_index, if_not_exists=True))
        except sa.exc.SQLAlchemyError as exc:
            store.close()
            raise FeedbackStoreError(f"cannot open the feedback store: {exc}") from exc
        return store

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------- writes
    def _insert(self) -> Any:
        if self.dialect == "postgresql":
            return postgresql.insert(events_table)
        if self.dialect == "sqlite":
            return sqlite.insert(events_table)
        raise FeedbackStoreError(f"unsupported database {self.dialect!r}")

    def _lock_writers(self, conn: Connection) -> None:
        """Postgres: one writer at a time, so seq order = commit order (SQLite: always)."""
        if self.dialect == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_WRITE_LOCK)))

    def add(self, events: Sequence[FeedbackEvent]) -> list[str]:
        """Store `events` in ONE committed transaction; per event "accepted", or "duplicate"
        when its `event_id` is stored already (or earlier in this batch)."""
        received = int(time.time())
        first: dict[str, int] = {}
        rows = []
        for i, e in enumerate(events):
            if e.event_id in first:
                continue
            first[e.event_id] = i
            rows.append({**e.__dict__, "received_at": received})
        inserted: set[str] = set()
        if rows:
            stmt = (
                self._insert()
                .on_conflict_do_nothing(index_elements=["event_id"])
                .returning(events_table.c.event_id)
            )
            try:
                with self._writing, self.engine.begin() as conn:
                    self._lock_writers(conn)
                    inserted = set(conn.execute(stmt, rows).scalars())
            except sa.exc.SQLAlchemyError as exc:
                raise FeedbackStoreError(f"feedback events not stored: {exc}") from exc
        return [
            "accepted" if first[e.event_id] == i and e.event_id in inserted else "duplicate"
            for i, e in enumerate(events)
        ]

    def forget(self, user: str) -> int:
        """Delete every event of `user`; the number deleted. Nothing else of them is kept."""
        table = events_table
        try:
            with self._writing, self.engine.begin() as conn:
                deleted = conn.execute(table.delete().where(table.c.app_user == user)).rowcount
            if self.dialect == "sqlite" and deleted:
                with self.engine.connect() as conn:  # copy the zeroed pages out of the WAL
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sa.exc.SQLAlchemyError as exc:
            raise FeedbackStoreError(f"user {user!r} not forgotten: {exc}") from exc
        return int(deleted)

    # ------------------------------------------------------------------------------ reads
    def _select(self, stmt: Any) -> list[Any]:
        try:
            with self.engine.connect() as conn:
                return list(conn.execute(stmt).all())
        except sa.exc.SQLAlchemyError as exc:
            raise FeedbackStoreError(f"feedback events not read: {exc}") from exc

    def _events(self, stmt: Any) -> list[StoredEvent]:
        return [StoredEvent(**row._mapping) for row in self._select(stmt)]

    def events_of(self, user: str, limit: int | None = None, offset: int = 0) -> list[StoredEvent]:
        """The events of `user`, in arrival (`seq`) order."""
        t = events_table
        stmt = sa.select(t).where(t.c.app_user == user).order_by(t.c.seq)
        return self._events(stmt.limit(limit).offset(offset or None))

    def events_after(self, seq: int, limit: int | None = None) -> list[StoredEvent]:
        """Events with `seq` > `seq`, in `seq` order (the warehouse copy's cursor)."""
        t = events_table
        return self._events(sa.select(t).where(t.c.seq > seq).order_by(t.c.seq).limit(limit))

    def iter_after(self, seq: int, batch: int = 10_000) -> Iterator[StoredEvent]:
        """Every event after `seq`, read `batch` rows at a time."""
        while chunk := self.events_after(seq, batch):
            yield from chunk
            seq = chunk[-1].seq

    def max_seq(self) -> int:
        """The last `seq` stored; 0 when empty."""
        return int(self._select(sa.select(sa.func.max(events_table.c.seq)))[0][0] or 0)

    def count_after(self, seq: int, type: str | None = None) -> int:
        """Events with `seq` > `seq` (of one `type` when given)."""
        t = events_table
        stmt = sa.select(sa.func.count()).select_from(t).where(t.c.seq > seq)
        if type is not None:
            stmt = stmt.where(t.c.type == type)
        return int(self._select(stmt)[0][0])

    def count_of(self, user: str) -> int:
        t = events_table
        stmt = sa.select(sa.func.count()).select_from(t).where(t.c.app_user == user)
        return int(self._select(stmt)[0][0])

    def users(self) -> set[str]:
        """Every application user with at least one stored event."""
        return {row[0] for row in self._select(sa.select(events_table.c.app_user).distinct())}
