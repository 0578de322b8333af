"""The Dagster layer: definitions load, raw -> warehouse materializes, checks gate downstream."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from orchestration.assets.warehouse import warehouse_assets
from orchestration.jobs import ingest_job
from recommender_lib.sources.raw_store import current_version
from recommender_lib.warehouse import tables as warehouse
from tests.support.http_mirror import HttpMirror
from tests.support.mirror_edit import copy_mirror, edit_gzip_lines, edit_zip_member, replace_field
from tests.support.platform import Platform

WAREHOUSE_TABLES = [a.key.to_user_string() for a in warehouse_assets]


@dg.asset(deps=warehouse_assets)
def downstream_probe() -> None:
    """Stands for the feature assets: it must not run when a blocking check fails."""


def _materialize(platform: Platform, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """The ingest job's assets and checks, plus the downstream probe."""
    return platform.materialize(
        ingest_job.selection | dg.AssetSelection.assets(downstream_probe),
        extra_assets=[downstream_probe],
        instance=instance,
    )


def _failed_checks(result: dg.ExecuteInProcessResult) -> set[tuple[str, str]]:
    return {
        (e.asset_key.to_user_string(), e.check_name)
        for e in result.get_asset_check_evaluations()
        if not e.passed
    }


def _materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_definitions_load() -> None:
    from orchestration.definitions import defs

    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    raw = {"imdb_title_basics", "imdb_title_ratings", "imdb_title_akas", "movielens_release"}
    later = {"catalog", "catalog_akas", "content_features", "rating_splits", "item_features",
             "user_features",
             "two_tower_model", "model_evaluation", "production_model", "item_embeddings",
             "content_index",
             "model_version", "champion", "tmdb_posters", "app_feedback"}  # fmt: skip
    assert keys == raw | set(WAREHOUSE_TABLES) | later
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name in {"raw", "warehouse", "features", "enrichment", "model",
                                   "registry"}, key  # fmt: skip
        assert node.kinds, key
        assert node.description, key
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    for table in WAREHOUSE_TABLES:
        for name in ("pandera_schema", "unique_key", "row_count_drift"):
            assert (table, name) in checks
    assert ("movie_links", "imdb_link_coverage") in checks
    for name in ("pandera_schema", "unique_key", "row_count_drift"):
        assert ("catalog", name) in checks
        assert ("catalog_akas", name) in checks
    assert ("content_features", "content_vectors_complete") in checks
    assert {
        ("model_evaluation", "predictions_in_range"),
        ("model_evaluation", "beats_baselines"),
    } <= checks
    assert {("model_version", "serves_sane_answers"),
            ("model_version", "not_worse_than_champion")} <= checks  # fmt: skip
    assert {s.name for s in defs.sensors} == {
        "imdb_dump_sensor",
        "movielens_release_sensor",
        "feedback_sensor",
        "mlflow_failed_run_sensor",
        "mlflow_canceled_run_sensor",
    }
    for job in ("ingest", "retrain", "full_refresh"):
        assert defs.resolve_job_def(job) is not None


def test_materialize_raw_to_warehouse_over_http(sample_mirror, make_platform) -> None:
    instance = dg.DagsterInstance.ephemeral()
    with HttpMirror(sample_mirror.root) as mirror:
        platform = make_platform(mirror)
        result = _materialize(platform, instance)
        assert result.success
        assert _failed_checks(result) == set()
        assert _materialized(result) >= {*WAREHOUSE_TABLES, "downstream_probe"}

        metadata = {
            e.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events()
        }
        assert metadata["imdb_titles"]["dagster/row_count"].value > 0
        assert metadata["movielens_ratings"]["dagster/column_schema"].value.columns
        assert metadata["movie_links"]["preview"].value.startswith("| movie_id")
        assert len(metadata["movielens_release"]["sha256"].value) == 64
        assert metadata["movielens_release"]["md5_verified"].value is True

        # A second run finds every source unchanged (conditional requests) and keeps versions.
        again = _materialize(platform, instance)
        assert again.success
        meta2 = {
            e.asset_key.to_user_string(): e.materialization.metadata
            for e in again.get_asset_materialization_events()
        }
        for raw in ("imdb_title_basics", "imdb_title_ratings", "movielens_release"):
            assert meta2[raw]["changed"].value is False
            assert meta2[raw]["dump_version"].value == metadata[raw]["dump_version"].value


# One crafted defect per warehouse table, delivered through the raw files.
def _bad_imdb_rating(root: Path) -> None:
    edit_gzip_lines(
        root / "imdb" / "title.ratings.tsv.gz",
        lambda lines: [lines[0], replace_field(lines[1], "\t", 1, "11.5"), *lines[2:]],
    )


def _bad_movielens_rating(root: Path) -> None:
    edit_zip_member(
        root / "movielens" / "ml-latest-small.zip",
        "ratings.csv",
        lambda lines: [lines[0], replace_field(lines[1], ",", 2, "7.0"), *lines[2:]],
    )


def _duplicated_movie(root: Path) -> None:
    edit_zip_member(
        root / "movielens" / "ml-latest-small.zip", "movies.csv", lambda ls: [*ls, ls[1]]
    )


def _bad_link(root: Path) -> None:
    edit_zip_member(
        root / "movielens" / "ml-latest-small.zip",
        "links.csv",
        lambda lines: [lines[0], replace_field(lines[1], ",", 2, "-5"), *lines[2:]],
    )


@pytest.mark.parametrize(
    ("craft", "table", "failing"),
    [
        (_bad_imdb_rating, "imdb_titles", {"pandera_schema"}),
        (_bad_movielens_rating, "movielens_ratings", {"pandera_schema"}),
        (_duplicated_movie, "movielens_movies", {"pandera_schema", "unique_key"}),
        (_bad_link, "movie_links", {"pandera_schema"}),
    ],
)
def test_failing_check_blocks_downstream(
    sample_mirror, tmp_path: Path, make_platform, craft, table: str, failing: set[str]
) -> None:
    root = copy_mirror(sample_mirror.root, tmp_path / "mirror")
    craft(root)
    result = _materialize(make_platform(root), dg.DagsterInstance.ephemeral())

    assert _failed_checks(result) == {(table, name) for name in failing}
    assert table in _materialized(result)  # the table loaded; its check failed
    assert "downstream_probe" not in _materialized(result)
    assert not result.success


def test_row_count_drift_blocks_downstream(sample_mirror, tmp_path: Path, make_platform) -> None:
    root = copy_mirror(sample_mirror.root, tmp_path / "mirror")
    platform = make_platform(root)
    instance = dg.DagsterInstance.ephemeral()
    assert _materialize(platform, instance).success
    good = current_version(platform.settings.raw_dir / "movielens")

    # The next release lost 70 % of its ratings: every row is valid, the count is not.
    edit_zip_member(
        root / "movielens" / "ml-latest-small.zip",
        "ratings.csv",
        lambda lines: lines[: 1 + (len(lines) - 1) * 3 // 10],
    )
    result = _materialize(platform, instance)

    assert _failed_checks(result) == {("movielens_ratings", "row_count_drift")}
    assert "downstream_probe" not in _materialized(result)
    newer = current_version(platform.settings.raw_dir / "movielens")
    assert newer.version != good.version and good.path.exists()  # the old release is kept


def test_corrupt_download_fails_the_raw_asset_and_keeps_previous(
    sample_mirror, tmp_path: Path, make_platform
) -> None:
    root = copy_mirror(sample_mirror.root, tmp_path / "mirror")
    platform = make_platform(root)
    instance = dg.DagsterInstance.ephemeral()
    assert _materialize(platform, instance).success
    store = platform.settings.raw_dir / "imdb" / "title.basics"
    good = current_version(store)

    basics = root / "imdb" / "title.basics.tsv.gz"
    basics.write_bytes(basics.read_bytes()[: basics.stat().st_size // 2])  # truncated dump
    result = _materialize(platform, instance)

    assert not result.success
    assert "imdb_title_basics" in {e.step_key for e in result.get_step_failure_events()}
    assert "imdb_titles" not in _materialized(result)
    assert current_version(store) == good and good.path.exists()
    conn = warehouse.connect(platform.settings.warehouse_path, read_only=True)
    assert warehouse.row_count(conn, "imdb_titles") > 0  # the previous table still stands
