"""Ingest throughput at full IMDb scale: verified fetch, DuckDB load and pandera checks.

    .venv/bin/python -m recommender_lib.sources.sample_data --profile full --out /tmp/full
    .venv/bin/python bench/ingest_speed.py --mirror /tmp/full [--akas-only]

Times each stage of the raw -> warehouse path (the same library calls the assets make) on a
scratch data dir, and reports rows, seconds, rows/s and the process's peak RSS. The akas stages
build the catalogue exactly as the `catalog` asset does (default `CatalogFilters`) and then load
`catalog_akas` from the whole title.akas dump, keeping the catalogue's titles. `--akas-only`
skips what the akas load does not need (the MovieLens ratings and the other tables' checks).
"""

import argparse
import resource
import tempfile
import time
from pathlib import Path

from recommender_lib.sources.download import fetch_versioned
from recommender_lib.sources.formats import (
    IMDB_AKAS_FILE,
    IMDB_BASICS_FILE,
    IMDB_HEADERS,
    IMDB_RATINGS_FILE,
    MOVIELENS_DEFAULT_ZIP,
)
from recommender_lib.sources.integrity import verify_gzip_tsv, verify_movielens_zip
from recommender_lib.warehouse import quality
from recommender_lib.warehouse import tables as warehouse
from recommender_lib.warehouse.akas import CATALOG_AKAS, load_catalog_akas
from recommender_lib.warehouse.catalog import CatalogFilters, build_catalog
from recommender_lib.warehouse.schemas import WAREHOUSE_SCHEMAS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mirror", type=Path, required=True, help="a sample mirror folder")
    parser.add_argument("--akas-only", action="store_true", help="only what catalog_akas needs")
    args = parser.parse_args()
    rows: list[tuple[str, int, float]] = []
    count = lambda r: r.row_count  # noqa: E731
    checked = lambda r: int(r.details["rows_checked"])  # noqa: E731

    def timed(stage: str, fn, count=lambda result: 0):
        started = time.perf_counter()
        result = fn()
        rows.append((stage, count(result), time.perf_counter() - started))
        return result

    wall = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch)
        fetched = {}
        for name in (IMDB_BASICS_FILE, IMDB_RATINGS_FILE, IMDB_AKAS_FILE):
            url = (args.mirror / "imdb" / name).resolve().as_uri()
            fetched[name] = timed(
                f"fetch + verify {name}",
                lambda u=url, n=name: fetch_versioned(
                    u, raw / n, verify=lambda p, n=n: verify_gzip_tsv(p, IMDB_HEADERS[n])
                ),
            )
        zip_url = (args.mirror / "movielens" / MOVIELENS_DEFAULT_ZIP).resolve().as_uri()
        release = timed(
            "fetch + verify + extract MovieLens zip",
            lambda: fetch_versioned(
                zip_url, raw / "ml", verify=verify_movielens_zip, md5_url=zip_url + ".md5",
                extract_zip=True,
            ),
        )  # fmt: skip
        conn = warehouse.connect(raw / "warehouse.duckdb")
        basics, ratings = fetched[IMDB_BASICS_FILE].path, fetched[IMDB_RATINGS_FILE].path
        timed("load imdb_titles", lambda: warehouse.load_imdb_titles(conn, basics, ratings), count)
        loads = [warehouse.load_movielens_movies, warehouse.load_movie_links]
        if not args.akas_only:
            loads.insert(0, warehouse.load_movielens_ratings)
        for load in loads:
            timed(f"load {load.table}", lambda f=load: f(conn, release.extracted_dir), count)
        timed("build catalog", lambda: build_catalog(conn, CatalogFilters()), count)
        akas = fetched[IMDB_AKAS_FILE].path
        timed(f"load {CATALOG_AKAS}", lambda: load_catalog_akas(conn, akas), count)
        checks = [CATALOG_AKAS] if args.akas_only else list(WAREHOUSE_SCHEMAS)
        for table in checks:
            timed(f"pandera check {table}", lambda t=table: quality.validate_table(
                conn, t, WAREHOUSE_SCHEMAS[t]), checked)  # fmt: skip
        conn.close()
    wall = time.perf_counter() - wall

    print("| stage | rows | seconds | rows/s |\n|---|---:|---:|---:|")
    for stage, n, seconds in rows:
        rate = f"{n / seconds:,.0f}" if n else ""
        print(f"| {stage} | {f'{n:,}' if n else ''} | {seconds:.1f} | {rate} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {peak:,.0f} MB; {wall:.0f} s wall in all")


if __name__ == "__main__":
    main()
