"""Personalised top-10 latency over an ~80 k-title catalogue, against a full-catalogue MLP pass.

    .venv/bin/python bench/recommend_latency.py

Generates a mirror whose catalogue (MovieLens movies + IMDb titles passing the filters) has
about 80 k titles, trains the two-tower model (one epoch: latency does not depend on quality),
assembles a real serving bundle and loads it like the API does. Then, for random users with 3
ratings, times `Recommender.recommend` (user features + one user-tower pass + dot-product
retrieval over the item embeddings + fusion-head re-ranking of the candidates) against the
earlier project's method measured in the same run: predicting every catalogue title through
the full model for each request (`TrainedTwoTower.predict_from_ratings` over the catalogue,
then a full sort).
"""

import os

# One BLAS thread, as a serving worker should run (requests parallelise across threads; on 2
# shared cores multi-threaded BLAS stalls a matrix-vector product for 10+ ms under load).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender_lib.engine.recommender import Recommender
from recommender_lib.modeling.two_tower.params import TwoTowerParams
from recommender_lib.sources.sample_data import PROFILES, write_sample_mirror
from recommender_lib.warehouse.catalog import CatalogFilters, build_catalog
from recommender_lib.workflow.steps import connection, train_and_bundle
from tests.support.sample_warehouse import load_sample_warehouse


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def build_bundle(work: Path, imdb_titles: int, epochs: int) -> Path:
    profile = replace(PROFILES["demo"], name="bench80k", n_imdb_titles=imdb_titles)
    mirror = write_sample_mirror(work / "mirror", profile, seed=3)
    conn = load_sample_warehouse(mirror, work / "scratch")
    build_catalog(conn, CatalogFilters(min_votes=0))
    params = TwoTowerParams(epochs=epochs, patience=epochs)
    return train_and_bundle(connection(conn), params, work, {})[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--imdb-titles", type=int, default=800_000, help="rows of title.basics")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--baseline-requests", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--bundle", type=Path, help="time an existing bundle instead of building")
    parser.add_argument("--keep", type=Path, help="build the bundle in this folder and keep it")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        bundle = args.bundle or build_bundle(args.keep or Path(tmp), args.imdb_titles, args.epochs)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        rec = Recommender.load(bundle)
        load_s = time.perf_counter() - t
    n = len(rec.catalog)
    rng = np.random.default_rng(0)
    rated = np.flatnonzero(rec.catalog["ml_ratings"].to_numpy() > 0)
    users = [
        [(int(rec.embeddings.item_ids[r]), float(rng.integers(1, 11)) / 2) for r in picks]
        for picks in (rng.choice(rated, 3, replace=False) for _ in range(args.requests))
    ]
    for ratings in users[:10]:  # warm-up
        rec.recommend(ratings, 10)
    ours = []
    for ratings in users:
        t = time.perf_counter()
        rec.recommend(ratings, 10)
        ours.append(time.perf_counter() - t)

    all_ids = rec.embeddings.item_ids
    baseline = []
    for ratings in users[: args.baseline_requests]:
        frame = pd.DataFrame(ratings, columns=["movie_id", "rating"])
        t = time.perf_counter()
        stars = rec.model.predict_from_ratings(frame, all_ids)
        np.argsort(-stars)[:13]
        baseline.append(time.perf_counter() - t)

    p50, p99 = _percentiles(ours)
    b50, b99 = _percentiles(baseline)
    print(f"catalogue: {n:,} titles; bundle built in {build_s:.0f} s, loaded in {load_s:.1f} s")
    print("| method | requests | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    print(f"| two-tower retrieval + head re-rank (ours) | {len(ours)} | {p50:.2f} | {p99:.2f} |")
    print(
        f"| full model pass over the catalogue + sort | {len(baseline)} | {b50:.1f} | {b99:.1f} |"
    )
    print(f"speed-up at p50: {b50 / p50:.0f}x (same run)")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
