"""A local MLflow store that moved with its data dir: detect it, and rewrite its paths.

A local (SQLite) MLflow store records absolute artifact locations: the experiment's artifact root,
each run's artifact URI, each model version's source. A data dir copied or moved elsewhere still
points there, so new runs would write into — and versions would load from — the old place.
`moved_from` tells the platform's experiment root from the one expected under the current data
dir; `relocate_store` rewrites every recorded path from the old data dir to the new one, in one
transaction, after keeping a copy of the database (`python -m recommender_lib.registry relocate`).
"""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from recommender_lib.config import Settings

ARTIFACTS_SUBDIR = Path("mlflow") / "artifacts"  # the experiment's artifact root in the data dir
_SQLITE = "sqlite:///"


class MovedStoreError(RuntimeError):
    """The MLflow store records artifact paths under another data dir."""


def artifact_root(settings: Settings) -> Path:
    """Where a local store keeps its artifacts: inside the data dir."""
    return settings.data_dir / ARTIFACTS_SUBDIR


def store_path(tracking_uri: str) -> Path | None:
    """The SQLite file of a local tracking URI, None for a server or another backend."""
    return Path(tracking_uri.removeprefix(_SQLITE)) if tracking_uri.startswith(_SQLITE) else None


def moved_from(recorded_location: str, expected_root: Path) -> Path | None:
    """The data dir an experiment's artifact location was created under, when it is not the data
    dir of `expected_root`; None when it matches or was not made by the platform."""
    expected = expected_root.resolve().as_uri()
    suffix = "/" + ARTIFACTS_SUBDIR.as_posix()
    if recorded_location.rstrip("/") == expected or not recorded_location.startswith("file://"):
        return None
    if not recorded_location.rstrip("/").endswith(suffix):
        return None
    old_root = Path(recorded_location.removeprefix("file://").rstrip("/"))
    return old_root.parent.parent


def moved_store_message(tracking_uri: str, old_dir: Path, new_dir: Path) -> str:
    return (
        f"the MLflow store {tracking_uri} records its artifacts under {old_dir}, but the data dir "
        f"is now {new_dir} (it was moved or copied). Run `python -m recommender_lib.registry "
        f"relocate --from {old_dir}` to rewrite the store's paths, or set MLFLOW_TRACKING_URI / "
        f"CINE_DATA_DIR back to the original data dir."
    )


def _text_columns(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return [
        (table, col[1])
        for table in tables
        for col in conn.execute(f'PRAGMA table_info("{table}")').fetchall()
        if str(col[2]).upper().split("(")[0] in {"TEXT", "VARCHAR", "CHAR", "CLOB", ""}
    ]


def relocate_store(tracking_uri: str, old_dir: Path, new_dir: Path) -> dict[str, int]:
    """Rewrite every path of `old_dir` (plain and as a file URI) to `new_dir` in a local store.

    Keeps a timestamped copy of the database beside it first; all updates run in one
    transaction. Returns the rows changed per `table.column`.
    """
    db = store_path(tracking_uri)
    if db is None:
        raise MovedStoreError(f"{tracking_uri} is not a local SQLite store: nothing to relocate")
    if not db.is_file():
        raise MovedStoreError(f"no MLflow database at {db}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    shutil.copy2(db, db.with_name(f"{db.name}.before-relocate-{stamp}"))
    old, new = Path(old_dir).resolve(), Path(new_dir).resolve()
    # Paths inside the data dir, so with a separator after it: /data2 never matches /data.
    pairs = [(old.as_uri() + "/", new.as_uri() + "/"), (f"{old}/", f"{new}/")]
    changed: dict[str, int] = {}
    with closing(sqlite3.connect(db)) as conn, conn:
        for table, column in _text_columns(conn):
            for before, after in pairs:
                cur = conn.execute(
                    f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                    f'WHERE instr("{column}", ?) > 0',
                    (before, after, before),
                )
                if cur.rowcount > 0:
                    key = f"{table}.{column}"
                    changed[key] = changed.get(key, 0) + cur.rowcount
    return changed
