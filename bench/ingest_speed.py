"""Ingest throughput at full IMDb scale: verified fetch, DuckDB load and pandera checks.

    .venv/bin/python -m recommender_lib.sources.sample_data --profile full --out /tmp/full
    .venv/bin/python bench/ingest_speed.py --mirror /tmp/full

Times each stage of the raw -> warehouse path (the same library calls the assets make) on a
scratch data dir, and reports rows, seconds, rows/s and the process's peak RSS.
"""

import argparse
import resource
import tempfile
import time
from pathlib import Path

from recommender_lib.sources.download import fetch_versioned
from recommender_lib.sources.formats import IMDB_BASICS_FILE, IMDB_HEADERS, IMDB_RATINGS_FILE
from recommender_lib.sources.integrity import verify_gzip_tsv, verify_movielens_zip
from recommender_lib.warehouse import quality
from recommender_lib.warehouse import tables as warehouse
from recommender_lib.warehouse.schemas import WAREHOUSE_SCHEMAS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mirror", type=Path, required=True, help="a sample mirror folder")
    args = parser.parse_args()
    rows: list[tuple[str, int, float]] = []

    def timed(stage: str, fn, count=lambda result: 0):
        started = time.perf_counter()
        result = fn()
        rows.append((stage, count(result), time.perf_counter() - started))
        return result

    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch)
        fetched = {}
        for name in (IMDB_BASICS_FILE, IMDB_RATINGS_FILE):
            url = (args.mirror / "imdb" / name).resolve().as_uri()
            fetched[name] = timed(
                f"fetch + verify {name}",
                lambda u=url, n=name: fetch_versioned(
                    u, raw / n, verify=lambda p, n=n: verify_gzip_tsv(p, IMDB_HEADERS[n])
                ),
            )
        zip_url = (args.mirror / "movielens" / "ml-latest-small.zip").resolve().as_uri()
        release = timed(
            "fetch + verify + extract MovieLens zip",
            lambda: fetch_versioned(
                zip_url, raw / "ml", verify=verify_movielens_zip, md5_url=zip_url + ".md5",
                extract_zip=True,
            ),
        )  # fmt: skip
        conn = warehouse.connect(raw / "warehouse.duckdb")
        count = lambda r: r.row_count  # noqa: E731
        basics, ratings = fetched[IMDB_BASICS_FILE].path, fetched[IMDB_RATINGS_FILE].path
        timed("load imdb_titles", lambda: warehouse.load_imdb_titles(conn, basics, ratings), count)
        for load in (warehouse.load_movielens_ratings, warehouse.load_movielens_movies,
                     warehouse.load_movie_links):  # fmt: skip
            timed(f"load {load.__name__.removeprefix('load_')}",
                  lambda f=load: f(conn, release.extracted_dir), count)  # fmt: skip
        for table, schema in WAREHOUSE_SCHEMAS.items():
            timed(f"pandera check {table}", lambda t=table, s=schema: quality.validate_table(
                conn, t, s), lambda r: int(r.details["rows_checked"]))  # fmt: skip
        conn.close()

    print("| stage | rows | seconds | rows/s |\n|---|---:|---:|---:|")
    for stage, n, seconds in rows:
        rate = f"{n / seconds:,.0f}" if n else ""
        print(f"| {stage} | {n:,} | {seconds:.1f} | {rate} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {peak:,.0f} MB")


if __name__ == "__main__":
    main()
