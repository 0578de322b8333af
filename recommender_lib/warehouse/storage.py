"""The warehouse file: open it with a fast, classified error, and move a broken file aside.

DuckDB reports a file that is not a database, is truncated or cannot be read as an `IOException`,
the same class as a lock held by another process. Only the lock is worth waiting for; the others
are permanent and become `WarehouseUnreadableError`, which names the remedy: rebuild the warehouse
from the raw store (`make rebuild-warehouse` or the `rebuild_warehouse` job, docs/architecture.md
§4.5). A rebuild moves the broken file aside (kept, timestamped) and never deletes it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

REBUILD_HINT = (
    "rebuild it from the raw store with `make rebuild-warehouse` (or launch the "
    "`rebuild_warehouse` job): the broken file is moved aside, not deleted"
)
_LOCK_MARKERS = ("could not set lock", "conflicting lock")
_KINDS = (  # (kind, markers in DuckDB's message), first match wins
    ("not_a_database", ("not a valid duckdb database file",)),
    ("truncated", ("could not read enough bytes", "could not read all bytes")),
    ("corrupt", ("corrupt", "checksum", "invalid block")),
    ("incompatible", ("version", "serialized")),
)


class WarehouseUnreadableError(RuntimeError):
    """The warehouse file cannot be opened or is incomplete: permanent, a retry cannot fix it."""

    def __init__(self, path: Path | str, kind: str, detail: str) -> None:
        self.path, self.kind, self.detail = Path(path), kind, detail
        super().__init__(f"warehouse {self.path} is unreadable ({kind}): {detail}; {REBUILD_HINT}")


def is_lock_conflict(exc: BaseException) -> bool:
    """Another process holds the file: transient, worth waiting for."""
    return any(m in str(exc).lower() for m in _LOCK_MARKERS)


def classify_open_error(path: Path | str, exc: duckdb.Error) -> WarehouseUnreadableError | None:
    """The permanent error `exc` means for the file at `path`, or None for a lock conflict."""
    if is_lock_conflict(exc):
        return None
    message = str(exc).lower()
    kind = next((k for k, markers in _KINDS if any(m in message for m in markers)), "io_error")
    return WarehouseUnreadableError(path, kind, str(exc))


def check_complete(conn: duckdb.DuckDBPyConnection, path: Path | str) -> None:
    """Raise `WarehouseUnreadableError` when the file is shorter than its blocks in use.

    Free blocks at the end may be cut off by DuckDB itself, so only used blocks count: the file
    must hold at least `used_blocks` full blocks (a lower bound; the header comes on top).
    """
    if str(path) == ":memory:":
        return
    rows = conn.execute("SELECT used_blocks, block_size FROM pragma_database_size()").fetchall()
    needed = int(rows[0][0]) * int(rows[0][1]) if rows else 0
    size = os.path.getsize(path)
    if size < needed:
        raise WarehouseUnreadableError(
            path, "truncated", f"{size} bytes on disk, its blocks in use need at least {needed}"
        )


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """One DuckDB transaction: committed when the block ends, rolled back on any error."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def open_warehouse(
    path: Path | str, *, read_only: bool = False, config: dict[str, Any] | None = None
) -> duckdb.DuckDBPyConnection:
    """Connect once, without retries: a permanent failure raises `WarehouseUnreadableError`.

    A lock conflict is re-raised as DuckDB's own `IOException` for the caller to wait on.
    """
    if str(path) != ":memory:" and not read_only:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = duckdb.connect(str(path), read_only=read_only, config=config or {})
    except duckdb.Error as exc:
        error = classify_open_error(path, exc)
        if error is None:
            raise
        raise error from exc
    try:
        check_complete(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def unreadable(path: Path | str) -> WarehouseUnreadableError | None:
    """Why the file at `path` cannot serve as the warehouse, or None (missing files are fine)."""
    if not Path(path).exists():
        return None
    try:
        open_warehouse(path, read_only=True).close()
    except WarehouseUnreadableError as exc:
        return exc
    except duckdb.Error as exc:
        if not is_lock_conflict(exc):
            raise
    return None


def set_aside(path: Path | str, now: datetime | None = None) -> Path | None:
    """Rename the file (and its `.wal`) to `<name>.broken-<UTC time>`; None when there is none."""
    path = Path(path)
    if not path.exists():
        return None
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    target = path.with_name(f"{path.name}.broken-{stamp}")
    wal = path.with_name(path.name + ".wal")
    if wal.exists():
        wal.rename(target.with_name(target.name + ".wal"))
    path.rename(target)
    return target


def set_aside_if_unreadable(path: Path | str) -> tuple[Path, WarehouseUnreadableError] | None:
    """Move an unreadable warehouse file aside; (where it went, why) or None when it is fine."""
    error = unreadable(path)
    if error is None:
        return None
    moved = set_aside(path)
    return (moved, error) if moved else None


def main(argv: list[str] | None = None) -> int:
    """`python -m recommender_lib.warehouse.storage {check,set-aside} PATH`."""
    parser = argparse.ArgumentParser(prog="python -m recommender_lib.warehouse.storage")
    parser.add_argument("action", choices=["check", "set-aside"])
    parser.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    if args.action == "check":
        error = unreadable(args.path)
        state = "readable" if args.path.exists() else "absent (a run creates it)"
        print(error if error else f"{args.path}: {state}")
        return 1 if error else 0
    moved = set_aside(args.path)
    print(f"{args.path} moved to {moved}" if moved else f"{args.path}: absent, nothing to move")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
