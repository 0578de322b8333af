"""Content similarity latency: `ContentIndex` (exact and HNSW) vs FAISS, hnswlib and the earlier
sklearn method.

    .venv/bin/python bench/content_latency.py

Synthetic catalogues of n titles with d = 32 content dims (20 genre-like 0/1 columns, 1-3 per
title with skewed popularity, plus 12 gaussian numerics) and realistic metadata. For each size
in --sizes it times, on the same random queries in the same run (after a warm-up):

* `ContentIndex.similar(item, k)` (no filters) and with a genre + year filter;
* the earlier project's method: `cosine_similarity(matrix[i:i+1], matrix)` on the un-normalised
  matrix, a full `np.argsort` of the row, top-k excluding the query.

Index backends, for each size in --sizes (same queries, same run, top-k of `similar` = k + 1
results less the query): `ContentIndex.similar` exact, FAISS `IndexFlatIP.search` directly,
`ContentIndex.similar` on its HNSW graph (`ContentIndex.build(approximate=True)`, production
`HNSWParams`), the same faiss graph searched raw, and hnswlib (same M / ef; only if importable:
it is no project dependency, `uv pip install hnswlib==0.8.0`), each with p50/p99, recall@10
against exact (tie-aware, as the build's check) and build time; then raw faiss HNSW at other
efSearch values (how the production value was chosen). Backends are timed in rotated blocks
(`timed_ms_rotated`): interleaving them query by query let a graph search run right after
another one had warmed the caches for the same query, or right after an exact scan evicted them.

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
from collections.abc import Callable, Mapping
from typing import Any

import faiss
import numpy as np
import pandas as pd
from sklearn.metrics.pairwise import cosine_similarity
from threadpoolctl import threadpool_info, threadpool_limits

from recommender_lib.index.backends import TIE_TOLERANCE, HNSWParams
from recommender_lib.index.content_index import ContentIndex, SimilarityFilters

try:
    import hnswlib  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # optional: compared only where installed
    hnswlib = None

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
    methods: Mapping[str, Callable[[int], object]], queries: np.ndarray, warmup: int
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


def timed_ms_rotated(
    methods: Mapping[str, Callable[[int], object]], queries: np.ndarray, warmup: int, blocks: int
) -> dict[str, np.ndarray]:
    """Like `timed_ms`, but in rounds: each round every method runs a block of queries back to
    back, method j on block (round + j) mod blocks, so that no method runs a query right after
    another method warmed the caches for it (or right after a 128 MB exact scan evicted them),
    while all still share the background load round by round."""
    for i in queries[:warmup]:
        for fn in methods.values():
            fn(int(i))
    chunks = np.array_split(queries[warmup:], blocks)
    out: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(blocks):
        for j, (name, fn) in enumerate(methods.items()):
            for i in chunks[(r + j) % blocks]:
                started = time.perf_counter()
                fn(int(i))
                out[name].append((time.perf_counter() - started) * 1e3)
    return {name: np.asarray(ms) for name, ms in out.items()}


def pct(ms: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def measure(n: int, args: argparse.Namespace, compare: bool) -> tuple[float, list[str]]:
    """Unfiltered `similar` p50 at size n, plus the comparison table rows when `compare`."""
    ids, matrix, metadata = catalogue(n, args.seed)
    started = time.perf_counter()
    index = ContentIndex.build(ids, matrix, metadata, approximate=False)
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


Positions = Callable[[int], list[int]]  # catalogue row -> its k neighbours' rows, best first


def tie_aware_recall(index: ContentIndex, rows: np.ndarray, method: Positions, k: int) -> float:
    """Recall@k of `method` against exact `similar`: a returned row is a hit when it scores at
    least the exact k-th best (less `TIE_TOLERANCE`), as in the build's recall check."""
    hits = 0
    for i in rows:
        kth = index.similar(int(index.item_ids[i]), k)[-1][1]
        found = np.asarray(method(int(i))[:k], dtype=np.int64)
        hits += int((index.vectors[found] @ index.vectors[i] >= kth - TIE_TOLERANCE).sum())
    return hits / (k * rows.size)


def timed_build(build: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    return build(), time.perf_counter() - started


def without(rows: Any, i: int, k: int) -> list[int]:
    """The first k rows other than the query's own."""
    return [int(r) for r in rows if r != i and r >= 0][:k]


Timed = Callable[[int], object]  # catalogue row -> the backend's own answer (what is timed)


def backend_methods(
    n: int, args: argparse.Namespace
) -> tuple[ContentIndex, ContentIndex, dict[str, tuple[Timed, Positions]], dict[str, str]]:
    """The exact index and every backend at size n: name -> (timed call, positions for the
    recall, converted outside the timing), name -> build time."""
    ids, matrix, metadata = catalogue(n, args.seed)
    exact, exact_s = timed_build(
        lambda: ContentIndex.build(ids, matrix, metadata, approximate=False)
    )
    approx, approx_s = timed_build(
        lambda: ContentIndex.build(ids, matrix, metadata, approximate=True)
    )
    assert isinstance(exact, ContentIndex) and isinstance(approx, ContentIndex)
    assert approx.approximate is not None
    vectors, k, params = exact.vectors, args.k, approx.approximate.params
    flat = faiss.IndexFlatIP(vectors.shape[1])
    _, flat_s = timed_build(lambda: flat.add(vectors))
    graph = approx.approximate.index

    def ours(
        index: ContentIndex, filters: SimilarityFilters | None = None
    ) -> tuple[Timed, Positions]:
        def timed(i: int) -> object:
            return index.similar(int(ids[i]), k, filters)

        return timed, lambda i: [index.position(j) for j, _ in index.similar(int(ids[i]), k)]

    def raw(search: Callable[[int], Any]) -> tuple[Timed, Positions]:
        return search, lambda i: without(search(i), i, k)

    methods = {
        "ContentIndex exact": ours(exact),
        "FAISS IndexFlatIP": raw(lambda i: flat.search(vectors[i : i + 1], k + 1)[1][0]),
        "ContentIndex HNSW": ours(approx),
        "ContentIndex HNSW + genre/year filter": ours(approx, FILTERS),
        "faiss HNSW raw (same graph)": raw(lambda i: graph.search(vectors[i : i + 1], k + 1)[1][0]),
    }
    builds = {
        "ContentIndex exact": f"{exact_s:.1f} s",
        "FAISS IndexFlatIP": f"{flat_s:.2f} s",
        "ContentIndex HNSW": f"{approx_s:.1f} s (1 thread, incl. recall check "
        f"{approx.approximate.recall_at_10:.4f})",
    }
    if hnswlib is not None:
        other = hnswlib.Index(space="ip", dim=vectors.shape[1])
        other.init_index(max_elements=n, M=params.m, ef_construction=params.ef_construction)
        _, other_s = timed_build(lambda: other.add_items(vectors, num_threads=args.hnswlib_threads))
        other.set_ef(params.ef_search)
        other.set_num_threads(1)
        methods["hnswlib (same M/ef)"] = raw(lambda i: other.knn_query(vectors[i], k + 1)[0][0])
        builds["hnswlib (same M/ef)"] = f"{other_s:.1f} s ({args.hnswlib_threads} thread(s))"
    return exact, approx, methods, builds


def compare_backends(n: int, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Table rows: p50/p99, recall@k vs exact and build time of each backend at size n; and
    the efSearch sweep at the largest size."""
    exact, approx, methods, builds = backend_methods(n, args)
    rng = np.random.default_rng(args.seed + n)
    queries = rng.choice(n, size=args.queries + args.warmup, replace=False)
    timed = {name: fn for name, (fn, _) in methods.items()}
    ms = timed_ms_rotated(timed, queries, args.warmup, blocks=10)
    checked = queries[args.warmup :]
    faiss_p50 = pct(ms["FAISS IndexFlatIP"])[0]
    rows = []
    for name, (_, positions) in methods.items():
        p50, p99 = pct(ms[name])
        recall = (
            "" if "filter" in name else f"{tie_aware_recall(exact, checked, positions, args.k):.4f}"
        )
        rows.append(f"| {n:,} | {name} | {p50:.3f} | {p99:.3f} | {p50 / faiss_p50:.2f} | "
                    f"{recall} | {builds.get(name, '')} |")  # fmt: skip
    print(f"n={n:>9,}: backends compared, peak RSS {peak_rss_mb():,.0f} MB", flush=True)
    sweep = ef_sweep(exact, approx, queries, args) if n == max(args.sizes) else []
    return rows, sweep


def ef_sweep(
    exact: ContentIndex, approx: ContentIndex, queries: np.ndarray, args: argparse.Namespace
) -> list[str]:
    """Raw faiss HNSW (production M, efConstruction) at several efSearch values."""
    assert approx.approximate is not None
    graph, vectors, k, n = approx.approximate.index, approx.vectors, args.k, len(approx)
    rows = []
    for ef in args.ef_sweep:
        graph.hnsw.efSearch = ef
        method: Positions = lambda i: without(graph.search(vectors[i : i + 1], k + 1)[1][0], i, k)  # noqa: E731
        p50, p99 = pct(timed_ms_rotated({"raw": method}, queries, args.warmup, 1)["raw"])
        recall = tie_aware_recall(exact, queries[args.warmup :], method, k)
        rows.append(f"| {n:,} | {ef} | {p50:.3f} | {p99:.3f} | {recall:.4f} |")
    graph.hnsw.efSearch = approx.approximate.params.ef_search
    return rows


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
    parser.add_argument("--hnswlib-threads", type=int, default=1, help="hnswlib build threads")
    parser.add_argument(
        "--ef-sweep", type=int, nargs="*", default=[16, 32, 48, 64, 96],
        help="efSearch values for raw faiss HNSW at the largest of --sizes (none: skip)",
    )  # fmt: skip
    parser.add_argument(
        "--blas-threads", type=int, default=1,
        help="BLAS threads for every method (0 = library default; >1 stalls on a busy box)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.blas_threads > 0:
        threadpool_limits(limits=args.blas_threads)
        faiss.omp_set_num_threads(args.blas_threads)
    blas = sorted({(i["internal_api"], i["num_threads"]) for i in threadpool_info()})
    print(f"# k={args.k}, {args.queries} queries (+{args.warmup} warm-up), BLAS {blas}, "
          f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.2f}\n")  # fmt: skip

    comparison: list[str] = []
    scaling: dict[int, float] = {}
    for n in sorted(set(args.sizes) | set(args.scaling_sizes)):
        scaling[n], rows = measure(n, args, compare=n in args.sizes)
        comparison += rows

    backends: list[str] = []
    sweep: list[str] = []
    for n in sorted(args.sizes):
        rows, at_n = compare_backends(n, args)
        backends, sweep = backends + rows, sweep + at_n

    print("\n| titles | method | p50 ms | p99 ms | speed-up vs baseline p50 (same run) |")
    print("|---:|---|---:|---:|---:|")
    print("\n".join(comparison))
    print(f"\n| titles | backend (k={args.k}) | p50 ms | p99 ms | p50 / FAISS exact p50 | "
          f"recall@{args.k} vs exact | build |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---|")
    print("\n".join(backends))
    if sweep:
        print(f"\n| titles | raw faiss HNSW efSearch (M={HNSWParams().m}, efConstruction="
              f"{HNSWParams().ef_construction}) | p50 ms | p99 ms | recall@{args.k} |")  # fmt: skip
        print("|---:|---:|---:|---:|---:|")
        print("\n".join(sweep))
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
