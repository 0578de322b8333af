"""Content similarity latency: exact top-k with `ContentIndex` vs the earlier sklearn method.

    .venv/bin/python bench/content_latency.py

Synthetic catalogues of n titles with d = 32 content dims (20 genre-like 0/1 columns, 1-3 per
title with skewed popularity, plus 12 gaussian numerics) and realistic metadata. For each size
in --sizes it times, on the same random queries in the same run (after a warm-up):

* `ContentIndex.similar(item, k)` (no filters) and with a genre + year filter;
* the earlier project's method: `cosine_similarity(matrix[i:i+1], matrix)` on the un-normalised
  matrix, a full `np.argsort` of the row, top-k excluding the query.

Methods are timed interleaved, query by query, so they share the background load. Then the
unfiltered `similar` p50 over --scaling-sizes and, interpolated between them, the catalogue
size at which exact brute force passes --budget-ms (where an ANN index such as HNSW would
start to pay off). Prints markdown tables and the process's peak RSS.

BLAS runs single-threaded by default (--blas-threads 1), for both methods: one query is
memory-bound, serving parallelises across requests, and on a busy 2-core box a 2-thread gemv
stalls for whole scheduler slices (8-16 ms) waiting for its second thread.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.metrics.pairwise import cosine_similarity
from threadpoolctl import threadpool_info, threadpool_limits

from recommender_lib.index.content_index import ContentIndex, SimilarityFilters

GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western", "Biography",
)  # fmt: skip
TITLE_TYPES = ("movie", "tvSeries", "tvMovie", "short", "tvMiniSeries", "video")
FILTERS = SimilarityFilters(genres=frozenset({"Comedy", "Drama"}), min_year=1990)
N_NUMERIC = 12


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def catalogue(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Random item ids, an (n, 32) float32 content matrix and matching metadata."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, len(GENRES) + 1) ** 0.8
    keys = np.log(popularity) + rng.gumbel(size=(n, len(GENRES)))  # Gumbel top-k sampling
    ranks = np.argsort(np.argsort(-keys, axis=1), axis=1)
    counts = rng.integers(1, 4, size=n)
    genre_hot = ranks < counts[:, None]
    matrix = np.hstack([genre_hot, rng.normal(size=(n, N_NUMERIC))]).astype(np.float32)

    ids = np.arange(1, n + 1, dtype=np.int64)
    imdb_only = rng.random(n) < 0.3
    ids[imdb_only] = -(10_000_000 + ids[imdb_only])  # IMDb-only titles have negative ids
    _, cols = np.nonzero(genre_hot)
    genres = np.split(np.asarray(GENRES, dtype=object)[cols], np.cumsum(counts)[:-1])
    year = pd.array(rng.integers(1920, 2025, size=n), dtype="Int64")
    year[rng.random(n) < 0.05] = pd.NA
    votes = pd.array(rng.lognormal(5.0, 2.0, size=n).astype(np.int64), dtype="Int64")
    votes[rng.random(n) < 0.1] = pd.NA
    metadata = pd.DataFrame(
        {
            "item_id": ids,
            "title_type": rng.choice(TITLE_TYPES, size=n, p=[0.5, 0.15, 0.1, 0.1, 0.05, 0.1]),
            "year": year,
            "num_votes": votes,
            "genres": genres,
        }
    )
    return ids, matrix, metadata


def baseline_top_k(matrix: np.ndarray, i: int, k: int) -> list[int]:
    """The earlier project's method: sklearn cosine row, full argsort, drop the query."""
    row = cosine_similarity(matrix[i : i + 1], matrix)[0]
    order = np.argsort(row)[::-1]
    return [int(j) for j in order[: k + 1] if j != i][:k]


def timed_ms(
    methods: dict[str, Callable[[int], object]], queries: np.ndarray, warmup: int
) -> dict[str, np.ndarray]:
    """Per-query latency (ms) of each method, interleaved query by query so that every method
    sees the same background load; the first `warmup` queries are run untimed."""
    for i in queries[:warmup]:
        for fn in methods.values():
            fn(int(i))
    timed = queries[warmup:]
    out = {name: np.empty(timed.size) for name in methods}
    for n, i in enumerate(timed):
        for name, fn in methods.items():
            started = time.perf_counter()
            fn(int(i))
            out[name][n] = (time.perf_counter() - started) * 1e3
    return out


def pct(ms: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def measure(n: int, args: argparse.Namespace, compare: bool) -> tuple[float, list[str]]:
    """Unfiltered `similar` p50 at size n, plus the comparison table rows when `compare`."""
    ids, matrix, metadata = catalogue(n, args.seed)
    started = time.perf_counter()
    index = ContentIndex.build(ids, matrix, metadata)
    build_s = time.perf_counter() - started
    rng = np.random.default_rng(args.seed + n)
    queries = rng.choice(n, size=args.queries + args.warmup, replace=False)
    kept = int(index.mask(FILTERS).sum())
    methods: dict[str, Callable[[int], object]] = {
        "ContentIndex.similar": lambda i: index.similar(int(ids[i]), args.k)
    }
    if compare:
        methods[f"similar + genre/year filter ({kept / n:.0%} pass)"] = lambda i: index.similar(
            int(ids[i]), args.k, FILTERS
        )
        methods["baseline (sklearn + argsort)"] = lambda i: baseline_top_k(matrix, i, args.k)
    ms = timed_ms(methods, queries, args.warmup)
    ours = pct(ms["ContentIndex.similar"])
    print(f"n={n:>9,}: build {build_s:5.1f} s, similar p50/p99 {ours[0]:.2f}/{ours[1]:.2f} ms, "
          f"peak RSS {peak_rss_mb():,.0f} MB", flush=True)  # fmt: skip
    if not compare:
        return ours[0], []
    checked = queries[: min(50, queries.size)]
    same = np.mean(
        [
            [index.position(j) for j, _ in index.similar(int(ids[i]), args.k)]
            == baseline_top_k(matrix, int(i), args.k)
            for i in checked
        ]
    )
    print(f"  top-{args.k} identical to the baseline's on {same:.0%} of {checked.size} checked")
    base_p50 = pct(ms["baseline (sklearn + argsort)"])[0]
    rows = []
    for name in sorted(ms, key=lambda name: not name.startswith("baseline")):
        p50, p99 = pct(ms[name])
        rows.append(f"| {n:,} | {name} | {p50:.2f} | {p99:.2f} | {base_p50 / p50:.1f}× |")
    return ours[0], rows


def crossover(sizes: np.ndarray, p50s: np.ndarray, budget_ms: float) -> str:
    """Catalogue size where p50 passes the budget, interpolated between measured sizes."""
    above = np.flatnonzero(p50s > budget_ms)
    if above.size and above[0] == 0:
        return f"already above {budget_ms:g} ms at the smallest size, {int(sizes[0]):,}"
    j = int(above[0]) if above.size else sizes.size - 1  # else extrapolate the last segment
    (n0, n1), (t0, t1) = sizes[j - 1 : j + 1], p50s[j - 1 : j + 1]
    if t1 <= t0:
        return f"not reached up to {int(sizes[-1]):,} titles"
    at = n0 + (budget_ms - t0) * (n1 - n0) / (t1 - t0)
    how = "interpolated" if above.size else "extrapolated"
    return f"≈ {at:,.0f} titles ({how} between {int(n0):,} and {int(n1):,})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[80_000, 1_000_000])
    parser.add_argument(
        "--scaling-sizes", type=int, nargs="+", default=[80_000, 250_000, 500_000, 1_000_000]
    )
    parser.add_argument("--queries", type=int, default=200, help="timed queries per size")
    parser.add_argument("--warmup", type=int, default=10, help="untimed queries first")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--budget-ms", type=float, default=5.0, help="interactive budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--blas-threads", type=int, default=1,
        help="BLAS threads for every method (0 = library default; >1 stalls on a busy box)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.blas_threads > 0:
        threadpool_limits(limits=args.blas_threads)
    blas = sorted({(i["internal_api"], i["num_threads"]) for i in threadpool_info()})
    print(f"# k={args.k}, {args.queries} queries (+{args.warmup} warm-up), BLAS {blas}, "
          f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.2f}\n")  # fmt: skip

    comparison: list[str] = []
    scaling: dict[int, float] = {}
    for n in sorted(set(args.sizes) | set(args.scaling_sizes)):
        scaling[n], rows = measure(n, args, compare=n in args.sizes)
        comparison += rows

    print("\n| titles | method | p50 ms | p99 ms | speed-up vs baseline p50 (same run) |")
    print("|---:|---|---:|---:|---:|")
    print("\n".join(comparison))
    sizes = np.array(sorted(scaling), dtype=float)
    p50s = np.array([scaling[int(n)] for n in sizes])
    print("\n| titles | brute-force `similar` p50 ms | ms per 1M titles |")
    print("|---:|---:|---:|")
    for n, p50 in zip(sizes, p50s, strict=True):
        print(f"| {int(n):,} | {p50:.2f} | {p50 / n * 1e6:.1f} |")
    if sizes.size >= 2:
        where = crossover(sizes, p50s, args.budget_ms)
        print(f"\nbrute force passes {args.budget_ms:g} ms p50 at {where}")
    print(f"peak RSS {peak_rss_mb():,.0f} MB, load avg at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
