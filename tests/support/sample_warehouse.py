"""An in-memory warehouse loaded from a generated sample mirror, with the evaluation splits."""

from pathlib import Path

import duckdb

from recommender_lib.modeling.splits import build_splits
from recommender_lib.sources.integrity import extract_zip
from recommender_lib.warehouse import tables as warehouse


def load_sample_warehouse(mirror, scratch: Path) -> duckdb.DuckDBPyConnection:
    """Every warehouse table of `mirror` (a `SampleMirror`) plus `rating_splits`, in memory."""
    release = extract_zip(mirror.movielens_zip, scratch) / "ml-latest-small"
    conn = warehouse.connect(":memory:")
    warehouse.load_movielens_release(conn, release)
    warehouse.load_imdb_titles(conn, mirror.basics, mirror.ratings)
    build_splits(conn)
    return conn
