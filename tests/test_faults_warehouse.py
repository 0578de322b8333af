"""Issue 12, fault 4: warehouse loads never destroy the last good table.

A release that fails a blocking check leaves the previous table serving and its own rows in
`<table>__rejected`; a corrupt or truncated warehouse file fails in seconds with a classified,
non-retried error, and the `rebuild_warehouse` job restores the warehouse from the raw store with
the broken file kept aside.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from orchestration.jobs import ingest_job
from recommender_lib.warehouse import gate, storage
from recommender_lib.warehouse import tables as warehouse
from tests.support.mirror_edit import copy_mirror, edit_gzip_lines, replace_field
from tests.support.platform import Platform

FEATURE_TABLES = ("imdb_titles", "movielens_ratings", "movielens_movies", "movie_links",
                  "catalog", "rating_splits")  # fmt: skip


def _rows(path: Path, table: str) -> list[tuple]:
    conn = warehouse.connect(path, read_only=True)
    try:
        return conn.execute(f'SELECT * FROM "{table}" ORDER BY ALL').fetchall()
    finally:
        conn.close()


def _imdb_loads(path: Path) -> list[tuple]:
    return [row for row in _rows(path, warehouse.LOAD_HISTORY) if row[0] == "imdb_titles"]


def _failed_checks(result: dg.ExecuteInProcessResult) -> set[tuple[str, str]]:
    return {
        (e.asset_key.to_user_string(), e.check_name)
        for e in result.get_asset_check_evaluations()
        if not e.passed
    }


def _bad_imdb_rating(root: Path) -> None:
    """The next IMDb dump rates its first title 11.5 stars (the schema allows 1-10)."""
    edit_gzip_lines(
        root / "imdb" / "title.ratings.tsv.gz",
        lambda lines: [lines[0], replace_field(lines[1], "\t", 1, "11.5"), *lines[2:]],
    )


# --- (a) a release that fails a blocking check --------------------------------------------------


def test_failing_release_keeps_previous_imdb_titles(
    sample_mirror, tmp_path: Path, make_platform
) -> None:
    root = copy_mirror(sample_mirror.root, tmp_path / "mirror")
    platform: Platform = make_platform(root)
    instance = dg.DagsterInstance.ephemeral()
    assert platform.materialize(ingest_job.selection, instance=instance).success
    db = platform.settings.warehouse_path
    good_rows = _rows(db, "imdb_titles")
    good_loads = _imdb_loads(db)

    _bad_imdb_rating(root)
    result = platform.materialize(ingest_job.selection, instance=instance)

    assert not result.success
    assert _failed_checks(result) == {("imdb_titles", "pandera_schema")}
    assert "imdb_titles" in {e.step_key for e in result.get_step_failure_events()}
    # The previous rows still serve, unchanged, and no load of the bad release was recorded.
    assert _rows(db, "imdb_titles") == good_rows
    assert _imdb_loads(db) == good_loads
    # The rejected rows are inspectable under the name the metadata gives.
    meta = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }["imdb_titles"]
    assert meta["published"].value is False
    rejected = meta["rejected_table"].value
    assert rejected == "imdb_titles__rejected"
    assert meta["serving_row_count"].value == len(good_rows)
    check = next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "pandera_schema"
    )
    assert check.metadata["rejected_table"].value == rejected
    assert "11.5" in str(check.metadata["failure_cases"].value)
    bad = _rows(db, rejected)
    assert len(bad) == len(good_rows) and any(row[9] == 11.5 for row in bad)

    # The next good dump publishes again and drops the stale rejected rows.
    good_dump = sample_mirror.root / "imdb" / "title.ratings.tsv.gz"
    (root / "imdb" / "title.ratings.tsv.gz").write_bytes(good_dump.read_bytes())
    assert platform.materialize(ingest_job.selection, instance=instance).success
    assert _rows(db, "imdb_titles") == good_rows
    conn = warehouse.connect(db, read_only=True)
    assert not warehouse.table_exists(conn, rejected)
    conn.close()


def test_gate_rejects_without_touching_the_published_table(sample_mirror, tmp_path: Path) -> None:
    """The library alone: duplicate keys and drift refuse a staged load like a schema failure."""
    conn = warehouse.connect(tmp_path / "w.duckdb")
    rules = gate.TableRules.for_table(warehouse.IMDB_TITLES)
    first = gate.load_gated(
        conn, warehouse.load_imdb_titles, sample_mirror.basics, sample_mirror.ratings, rules=rules
    )
    assert first.published and all(r.passed for r in first.checks.values())
    before = conn.execute("SELECT * FROM imdb_titles ORDER BY ALL").fetchall()

    # A strict drift rule (any growth refused) and a release rating one title twice.
    dup = tmp_path / "title.ratings.tsv.gz"
    dup.write_bytes(sample_mirror.ratings.read_bytes())
    edit_gzip_lines(dup, lambda lines: [*lines, lines[1]])
    strict = gate.TableRules.for_table(warehouse.IMDB_TITLES, max_growth=0.0)
    second = gate.load_gated(
        conn, warehouse.load_imdb_titles, sample_mirror.basics, dup, rules=strict
    )

    assert not second.published and second.rejected_table == "imdb_titles__rejected"
    failing = {name for name, r in second.checks.items() if not r.passed}
    assert failing == {"pandera_schema", "unique_key", "row_count_drift"}
    assert all(second.checks[n].details["rejected_table"] == "imdb_titles__rejected"
               for n in failing)  # fmt: skip
    assert "__staging" not in second.checks["unique_key"].summary
    assert conn.execute("SELECT * FROM imdb_titles ORDER BY ALL").fetchall() == before
    assert warehouse.row_count(conn, "imdb_titles__rejected") == len(before) + 1
    assert not warehouse.table_exists(conn, "imdb_titles__staging")
    assert warehouse.load_history(conn, "imdb_titles", limit=5) == [len(before)]


def test_load_error_keeps_table_and_ungated_replace_still_publishes(
    sample_mirror, tmp_path: Path
) -> None:
    conn = warehouse.connect(tmp_path / "w.duckdb")
    loaded = warehouse.load_imdb_titles(conn, sample_mirror.basics, sample_mirror.ratings)
    assert loaded.row_count == warehouse.row_count(conn, "imdb_titles") > 0
    assert not warehouse.table_exists(conn, "imdb_titles__staging")
    with pytest.raises(warehouse.WarehouseLoadError):
        gate.load_gated(
            conn, warehouse.load_imdb_titles, tmp_path / "missing.tsv.gz", sample_mirror.ratings,
            rules=gate.TableRules.for_table(warehouse.IMDB_TITLES),
        )  # fmt: skip
    assert warehouse.row_count(conn, "imdb_titles") == loaded.row_count


# --- (b) a corrupt or truncated warehouse file --------------------------------------------------


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a database, " * (path.stat().st_size // 16))


@pytest.mark.parametrize(
    ("damage", "kinds"),
    [(_truncate, {"truncated"}), (_garbage, {"not_a_database"})],
)
def test_open_classifies_a_broken_file_at_once(
    sample_mirror, tmp_path: Path, damage, kinds: set[str]
) -> None:
    db = tmp_path / "w.duckdb"
    conn = warehouse.connect(db)
    warehouse.load_imdb_titles(conn, sample_mirror.basics, sample_mirror.ratings)
    conn.execute(
        "CREATE TABLE padding AS SELECT range AS i, md5(range::VARCHAR) FROM range(300000)"
    )
    conn.close()
    damage(db)

    started = time.monotonic()
    with pytest.raises(storage.WarehouseUnreadableError) as caught:
        warehouse.connect(db)
    assert time.monotonic() - started < 2.0
    assert caught.value.kind in kinds and "make rebuild-warehouse" in str(caught.value)
    assert isinstance(storage.unreadable(db), storage.WarehouseUnreadableError)

    moved = storage.set_aside(db)
    assert moved is not None and moved.name.startswith("w.duckdb.broken-") and not db.exists()
    assert storage.unreadable(db) is None  # nothing there: a run creates a new file


def test_a_lock_held_elsewhere_is_not_classified_as_broken(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    warehouse.connect(db).close()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb, sys; c = duckdb.connect({str(db)!r}); print('held', flush=True); "
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(duckdb.IOException) as caught:
            storage.open_warehouse(db)
        assert not isinstance(caught.value, storage.WarehouseUnreadableError)
        assert storage.is_lock_conflict(caught.value)
        assert storage.unreadable(db) is None  # busy, not broken: never moved aside
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


@pytest.mark.parametrize("damage", [_truncate, _garbage])
def test_broken_warehouse_fails_fast_then_rebuild_restores_it(
    sample_mirror, tmp_path: Path, make_platform, damage
) -> None:
    platform: Platform = make_platform(sample_mirror.root)
    instance = dg.DagsterInstance.ephemeral()
    rebuild = platform.defs.resolve_job_def("rebuild_warehouse")
    assert platform.materialize(ingest_job.selection, instance=instance).success
    assert rebuild.execute_in_process(instance=instance).success  # features on a good file
    db = platform.settings.warehouse_path
    good = {t: _rows(db, t) for t in FEATURE_TABLES}
    damage(db)
    broken_bytes = db.read_bytes()

    started = time.monotonic()
    result = platform.materialize(ingest_job.selection, instance=instance)
    elapsed = time.monotonic() - started
    assert not result.success
    failures = result.get_step_failure_events()
    assert {e.step_key for e in failures} == {
        "imdb_titles", "movielens_ratings", "movielens_movies", "movie_links"
    }  # fmt: skip
    for event in failures:
        error = event.step_failure_data.error
        assert error is not None and "unreadable" in error.message
        assert "make rebuild-warehouse" in error.message
    assert not any(e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY for e in result.all_events)
    assert elapsed < 60, f"a broken file must fail in seconds, took {elapsed:.0f} s"

    rebuilt = rebuild.execute_in_process(instance=instance)

    assert rebuilt.success
    aside = sorted(db.parent.glob(f"{db.name}.broken-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == broken_bytes  # kept, not deleted
    assert storage.unreadable(db) is None
    for table, rows in good.items():
        assert _rows(db, table) == rows, table
    assert {e.asset_key.to_user_string() for e in rebuilt.get_asset_materialization_events()} >= {
        *FEATURE_TABLES, "content_features", "item_features"
    }  # fmt: skip


def test_storage_cli_checks_and_sets_aside(tmp_path: Path, capsys) -> None:
    db = tmp_path / "w.duckdb"
    assert storage.main(["check", str(db)]) == 0
    db.write_bytes(b"garbage" * 1000)
    assert storage.main(["check", str(db)]) == 1
    assert "not_a_database" in capsys.readouterr().out
    assert storage.main(["set-aside", str(db)]) == 0
    assert not db.exists() and len(list(tmp_path.glob("w.duckdb.broken-*"))) == 1
