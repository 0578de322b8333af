"""IMDb title.akas: the generated dump, the `catalog_akas` load and gate, the raw asset."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from recommender_lib.sources import formats
from recommender_lib.sources.download import fetch_versioned
from recommender_lib.sources.integrity import IntegrityError, verify_gzip_tsv
from recommender_lib.sources.raw_store import current_version
from recommender_lib.sources.sample_data.akas import localize
from recommender_lib.warehouse import gate
from recommender_lib.warehouse import tables as warehouse
from recommender_lib.warehouse.akas import CATALOG_AKAS, load_catalog_akas
from tests.support.mirror_edit import copy_mirror
from tests.support.tiny_bundle import tiny_warehouse

HEADER = "\t".join(formats.IMDB_AKAS_COLUMNS)
SEP = formats.IMDB_ARRAY_SEPARATOR
N = formats.IMDB_NULL
GOOD_ROWS = [
    f"tt0114709\t1\tToy Story\t{N}\t{N}\toriginal\t{N}\t1",
    f'tt0114709\t2\t"Toy" Story\tUS\ten\timdbDisplay\t{N}\t0',
    f'tt0114709\t3\tThe Man Who Said "Stop\tGB\t{N}\t{N}\t{N}\t0',
    f"tt0114709\t4\tトイ・ストーリー\tJP\tja\timdbDisplay{SEP}tv\tliteral title{SEP}new title\t0",
    f"tt0114709\t5\tИстория игрушек\tSUHH\t{N}\t{N}\t{N}\t{N}",
    f"tt0000001\t1\tNot in the catalogue\t{N}\t{N}\toriginal\t{N}\t1",
    f"tt10872600\t1\tSpider-Man: No Way Home\t{N}\t{N}\toriginal\t{N}\t1",
    f"tt10872600\t2\tΟ Σπάιντερμαν\tGR\tel\talternative\t{N}\t0",
    f"tt10872600\t3\t蜘蛛侠：英雄无归\tCN\tcmn\tworking{SEP}\t{N}\t0",
    f"tt10872600\t4\tSpider-Man: No Way Home\tXWW\tqbn\t\t{N}\t0",
]
CATALOG_TCONSTS = ["tt0114709", "tt10872600"]
NON_LATIN = re.compile(r"[\u0370-\u03ff\u0400-\u04ff\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7af]")


def write_akas(path: Path, rows: list[str], header: str = HEADER) -> Path:
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        f.write("\n".join([header, *rows]) + "\n")
    return path


def warehouse_with_catalog(tconsts: list[str]) -> duckdb.DuckDBPyConnection:
    """A warehouse whose `catalog` holds these tconsts (plus a title without one)."""
    conn = warehouse.connect(":memory:")
    conn.execute("CREATE TABLE catalog (item_id BIGINT, tconst VARCHAR)")
    rows = [(i + 1, t) for i, t in enumerate(tconsts)] + [(-5, None)]
    conn.executemany("INSERT INTO catalog VALUES (?, ?)", rows)
    return conn


def rows_of(conn: duckdb.DuckDBPyConnection, table: str = CATALOG_AKAS) -> list[tuple]:
    return conn.execute(f'SELECT * FROM "{table}" ORDER BY tconst, ordering').fetchall()


def rules() -> gate.TableRules:
    return gate.TableRules.for_table(CATALOG_AKAS)


# ------------------------------------------------------------------------ the loader


def test_format_quirks_survive_the_load(tmp_path: Path) -> None:
    conn = warehouse_with_catalog(CATALOG_TCONSTS)
    path = write_akas(tmp_path / formats.IMDB_AKAS_FILE, GOOD_ROWS)
    gated = gate.load_gated(conn, load_catalog_akas, path, rules=rules(), source_version="v1")

    assert gated.published, gated.failures
    assert warehouse.table_schema(conn, CATALOG_AKAS) == {
        "tconst": "VARCHAR", "ordering": "INTEGER", "title": "VARCHAR", "region": "VARCHAR",
        "language": "VARCHAR", "types": "VARCHAR[]", "attributes": "VARCHAR[]",
        "is_original_title": "BOOLEAN",
    }  # fmt: skip
    assert rows_of(conn) == [
        ("tt0114709", 1, "Toy Story", None, None, ["original"], [], True),
        ("tt0114709", 2, '"Toy" Story', "US", "en", ["imdbDisplay"], [], False),
        ("tt0114709", 3, 'The Man Who Said "Stop', "GB", None, [], [], False),
        ("tt0114709", 4, "トイ・ストーリー", "JP", "ja", ["imdbDisplay", "tv"],
         ["literal title", "new title"], False),
        ("tt0114709", 5, "История игрушек", "SUHH", None, [], [], None),
        ("tt10872600", 1, "Spider-Man: No Way Home", None, None, ["original"], [], True),
        ("tt10872600", 2, "Ο Σπάιντερμαν", "GR", "el", ["alternative"], [], False),
        ("tt10872600", 3, "蜘蛛侠：英雄无归", "CN", "cmn", ["working"], [], False),
        ("tt10872600", 4, "Spider-Man: No Way Home", "XWW", "qbn", [], [], False),
    ]  # fmt: skip
    assert warehouse.source_versions(conn)[CATALOG_AKAS] == "v1"


def test_needs_the_catalog_and_the_file(tmp_path: Path) -> None:
    path = write_akas(tmp_path / formats.IMDB_AKAS_FILE, GOOD_ROWS)
    bare = warehouse.connect(":memory:")
    with pytest.raises(warehouse.WarehouseLoadError, match="`catalog` table does not exist"):
        load_catalog_akas(bare, path)
    assert not warehouse.table_exists(bare, CATALOG_AKAS)
    conn = warehouse_with_catalog(CATALOG_TCONSTS)
    with pytest.raises(warehouse.WarehouseLoadError, match="no akas file"):
        load_catalog_akas(conn, tmp_path / "missing.tsv.gz")


def test_malformed_lines_fail_the_load_and_keep_the_table(tmp_path: Path) -> None:
    conn = warehouse_with_catalog(CATALOG_TCONSTS)
    load_catalog_akas(conn, write_akas(tmp_path / "good.tsv.gz", GOOD_ROWS))
    before = rows_of(conn)
    broken = [*GOOD_ROWS, "tt0114709\t6\ttoo few columns", "tt0114709\tseven\tx\tUS\tN\tN\tN\t0"]
    with pytest.raises(warehouse.WarehouseLoadError, match="malformed source rows"):
        load_catalog_akas(conn, write_akas(tmp_path / "bad.tsv.gz", broken))
    assert rows_of(conn) == before


@pytest.mark.parametrize(
    ("bad_row", "failing"),
    [
        ("tt0114709\t2\tSame key twice\tFR\tfr\tN\tN\t0", {gate.SCHEMA_RULE, gate.KEY_RULE}),
        ("tt12\t1\tShort tconst\tFR\tfr\tN\tN\t0", {gate.SCHEMA_RULE}),
        ("tt0114709\t7\t\tFR\tfr\tN\tN\t0", {gate.SCHEMA_RULE}),  # empty title
        ("tt0114709\t0\tOrdering zero\tFR\tfr\tN\tN\t0", {gate.SCHEMA_RULE}),
        ("tt0114709\t8\tLower-case region\tusa\tfr\tN\tN\t0", {gate.SCHEMA_RULE}),
        ("tt0114709\t9\tUpper-case language\tFR\tFR\tN\tN\t0", {gate.SCHEMA_RULE}),
    ],
)
def test_gate_blocks_bad_rows_and_keeps_the_previous_table(
    tmp_path: Path, bad_row: str, failing: set[str]
) -> None:
    conn = warehouse_with_catalog([*CATALOG_TCONSTS, "tt12"])
    first = gate.load_gated(conn, load_catalog_akas, write_akas(tmp_path / "a.gz", GOOD_ROWS),
                            rules=rules())  # fmt: skip
    assert first.published
    serving = rows_of(conn)

    bad = write_akas(tmp_path / "b.gz", [*GOOD_ROWS, bad_row.replace("\tN", f"\t{N}")])
    gated = gate.load_gated(conn, load_catalog_akas, bad, rules=rules())

    assert not gated.published
    assert {name for name, r in gated.checks.items() if not r.passed} == failing
    assert rows_of(conn) == serving  # the previous load still serves
    assert gated.rejected_table == warehouse.rejected_table(CATALOG_AKAS)
    assert len(rows_of(conn, gated.rejected_table)) == len(serving) + 1
    assert warehouse.load_history(conn, CATALOG_AKAS) == [len(serving)]


# ------------------------------------------------------------------- the sample dump


@pytest.fixture(scope="module")
def sample_conn(sample_mirror, tmp_path_factory: pytest.TempPathFactory):
    conn = tiny_warehouse(sample_mirror, tmp_path_factory.mktemp("akas_wh"))
    yield conn
    conn.close()


def test_sample_akas_keep_only_catalogue_titles(sample_mirror, sample_conn) -> None:
    raw = pd.read_csv(sample_mirror.akas, sep="\t", quoting=3, na_values=N,
                      keep_default_na=False, dtype=str)  # fmt: skip
    catalog = {t for (t,) in sample_conn.execute("SELECT tconst FROM catalog").fetchall()}
    loaded = sample_conn.execute(f"SELECT tconst, title FROM {CATALOG_AKAS}").fetchall()
    titles = {t for t, _ in loaded}
    assert raw.titleId.nunique() > 2 * len(titles) > 0  # most titles are not in the catalogue
    assert titles <= catalog
    assert len(loaded) == raw.titleId.isin(catalog).sum()
    assert sorted(title for _, title in loaded) == sorted(raw.title[raw.titleId.isin(catalog)])
    gated = gate.load_gated(sample_conn, load_catalog_akas, sample_mirror.akas, rules=rules())
    assert gated.published, gated.failures


def test_sample_akas_cover_movielens_titles(sample_conn) -> None:
    counts = sample_conn.execute(
        f"""SELECT c.movie_id, count(a.tconst) FROM catalog c
            JOIN imdb_titles USING (tconst) LEFT JOIN {CATALOG_AKAS} a USING (tconst)
            WHERE c.movie_id IS NOT NULL GROUP BY 1"""
    ).fetchall()
    assert counts and min(n for _, n in counts) >= 2
    assert sum(n for _, n in counts) / len(counts) > 5


def test_sample_akas_look_like_the_dump(sample_mirror) -> None:
    with gzip.open(sample_mirror.akas, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    assert lines[0] == HEADER and lines[-1] == ""
    rows = [line.split("\t") for line in lines[1:-1]]
    assert all(len(r) == len(formats.IMDB_AKAS_COLUMNS) for r in rows)
    frame = pd.DataFrame(rows, columns=list(formats.IMDB_AKAS_COLUMNS))
    original = frame[frame.isOriginalTitle == "1"]
    assert (original.types == "original").all() and (original.region == N).all()
    assert original.titleId.is_unique and frame.titleId.isin(original.titleId).all()
    for column in ("region", "language", "types", "attributes", "isOriginalTitle"):
        assert (frame[column] == N).any(), column
    assert frame.types.str.contains(SEP).any() and frame.attributes.str.contains(SEP).any()
    assert set(frame.types[frame.types != N].str.split(SEP).explode()) <= set(
        formats.IMDB_AKAS_TYPES
    )
    assert frame.title.map(lambda t: bool(NON_LATIN.search(t))).sum() > 100
    assert frame.duplicated(["titleId", "title"]).any()  # one title in several regions
    assert (frame.titleId.str.len() == 10).any()  # 8-digit tconsts
    assert frame.title.str.contains('"').any()
    assert {"XWW", "SUHH", "JP", "RU"} <= set(frame.region)
    assert {"ja", "cmn", "yue", "qbn"} <= set(frame.language)


def test_localized_forms_are_deterministic() -> None:
    assert localize("The Dark Night", "fr") == "Le Sombre Nuit"
    assert localize("The Dark Night", "de") == "Der Dunkle Nacht"
    assert localize("Silent River", "ru") == "Тихий Река"
    assert localize("Golden City", "ja") == "黄金の・街"
    assert localize("Anna", "el") == "Αννα"
    assert all(NON_LATIN.search(localize("Max and Otto", lang)) for lang in ("ko", "cmn", "uk"))
    assert localize("Episode #2.3", "es") == "Episodio #2.3"


# --------------------------------------------------------------------- download, Dagster


def test_download_verifier_rejects_broken_akas(sample_mirror, tmp_path: Path) -> None:
    columns = formats.IMDB_HEADERS[formats.IMDB_AKAS_FILE]
    assert verify_gzip_tsv(sample_mirror.akas, columns) > 1000
    data = sample_mirror.akas.read_bytes()
    truncated = tmp_path / "truncated" / formats.IMDB_AKAS_FILE
    truncated.parent.mkdir()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(IntegrityError, match="truncated gzip stream"):
        verify_gzip_tsv(truncated, columns)
    corrupt = tmp_path / "corrupt.tsv.gz"
    middle = len(data) // 2
    corrupt.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64])
                        + data[middle + 64 :])  # fmt: skip
    with pytest.raises(IntegrityError):
        verify_gzip_tsv(corrupt, columns)
    drifted = write_akas(tmp_path / "drift.tsv.gz", GOOD_ROWS, HEADER.replace("types", "kinds"))
    with pytest.raises(IntegrityError, match=r"missing \['types'\]"):
        verify_gzip_tsv(drifted, columns)
    store = tmp_path / "store"
    with pytest.raises(IntegrityError):
        fetch_versioned(truncated.as_uri(), store, verify=lambda p: verify_gzip_tsv(p, columns))
    assert current_version(store) is None


def test_materialize_catalog_akas_and_keep_it_on_a_broken_dump(
    sample_mirror, tmp_path: Path, make_platform
) -> None:
    root = copy_mirror(sample_mirror.root, tmp_path / "mirror")
    platform = make_platform(root)
    instance = dg.DagsterInstance.ephemeral()
    result = platform.materialize(
        dg.AssetSelection.assets(CATALOG_AKAS).upstream(), instance=instance
    )
    assert result.success
    evaluations = {
        e.check_name: e.passed
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == CATALOG_AKAS
    }
    assert evaluations == {gate.SCHEMA_RULE: True, gate.KEY_RULE: True, gate.DRIFT_RULE: True}
    meta = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    assert meta[CATALOG_AKAS]["published"].value is True
    assert len(meta["imdb_title_akas"]["sha256"].value) == 64
    conn = warehouse.connect(platform.settings.warehouse_path, read_only=True)
    loaded = warehouse.row_count(conn, CATALOG_AKAS)
    unknown = conn.execute(
        f"SELECT count(*) FROM {CATALOG_AKAS} WHERE tconst NOT IN (SELECT tconst FROM catalog "
        "WHERE tconst IS NOT NULL)"
    ).fetchall()
    conn.close()
    assert loaded > 1000 and unknown == [(0,)]

    store = platform.settings.raw_dir / "imdb" / "title.akas"
    good = current_version(store)
    akas = root / "imdb" / formats.IMDB_AKAS_FILE
    akas.write_bytes(akas.read_bytes()[: akas.stat().st_size // 2])  # a truncated dump
    again = platform.materialize(
        dg.AssetSelection.assets("imdb_title_akas", CATALOG_AKAS), instance=instance
    )
    assert not again.success
    assert "imdb_title_akas" in {e.step_key for e in again.get_step_failure_events()}
    assert current_version(store) == good
    conn = warehouse.connect(platform.settings.warehouse_path, read_only=True)
    assert warehouse.row_count(conn, CATALOG_AKAS) == loaded
    conn.close()
