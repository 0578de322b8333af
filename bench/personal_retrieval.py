"""Personalised top-10 retrieval: `RankingEngine.rank` exact vs through its HNSW graph vs FAISS.

    OPENBLAS_NUM_THREADS=1 nice -n 5 .venv/bin/python bench/personal_retrieval.py

Synthetic catalogues shaped like the trained 80 k bundle of `bench/recommend_latency.py`: 48-d
unit item vectors around 200 taste clusters, ranking biases N(0, 0.55), training counts with
~75 % zeros and a heavy tail (max in the thousands), τ = 0.1. Users are unit vectors near a
cluster (the mean of three items of one cluster plus noise) with 3 rated titles excluded and
the rule w(n) = pop_weight + cold_pop_weight·10/(n + 10) at a random n (pop 0.5, cold 1.5).

For each size in --sizes, on the same users in the same run (rotated blocks, as in
`bench/content_latency.py`), it times one user's `rank(k=10)` (the rule `retrieval`; the
fusion head is a linear stand-in, the same fixed cost in every engine method):

* exact: every row scored (`RankingEngine` without a graph, the path below 200 k titles);
* approximate: the same engine with `PersonalIndex` (HNSW candidates re-scored exactly);
* FAISS exact: `IndexFlatIP.search` of the augmented query over the augmented items (raw
  retrieval only, no exclusions, no re-score, no stars);
* FAISS HNSW raw: the same graph searched directly (no exclusions, re-score or stars);

plus recall@10 of the approximate engine against the exact one (tie-aware) and the build time
and recall check of the graph (`check_personal_recall`, as the bundle runs it).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from content_latency import timed_ms_rotated

from recommender_lib.engine.ranking import RankingEngine
from recommender_lib.index.backends import HNSWParams
from recommender_lib.index.personal import PERSONAL_HNSW, PersonalIndex, check_personal_recall
from recommender_lib.modeling.two_tower.ranking_rule import RankingRule

DIM, TAU, CLUSTERS = 48, 0.1, 200
RULE = RankingRule(pop_weight=0.5, cold_pop_weight=1.5)


class LinearHead:
    """Stand-in towers: the feature row's columns 1.. are u; stars = baseline + u·v."""

    temperature = TAU
    transform = SimpleNamespace(global_mean=3.0, user_bias_column=0)

    def user_embeddings(self, user_x: np.ndarray) -> np.ndarray:
        return np.asarray(user_x[:, 1:], dtype=np.float32)

    def head_predict(self, u: np.ndarray, v: np.ndarray, base: np.ndarray) -> np.ndarray:
        return np.asarray(base, np.float64) + (u * v).sum(axis=1)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def catalogue(n: int, seed: int) -> tuple[RankingEngine, np.ndarray]:
    """The exact engine over n synthetic titles, and each title's cluster."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(CLUSTERS, DIM)))
    cluster = rng.integers(0, CLUSTERS, n)
    vectors = unit(centres[cluster] + rng.normal(scale=0.12, size=(n, DIM)))
    counts = np.where(rng.random(n) < 0.75, 0, np.floor(rng.pareto(1.1, n) * 2))
    engine = RankingEngine(
        item_ids=np.arange(1, n + 1, dtype=np.int64),
        vectors=vectors,
        biases=rng.normal(scale=0.55, size=n).astype(np.float32),
        log_popularity=np.log1p(np.minimum(counts, 50_000)).astype(np.float32),
        item_bias=rng.normal(scale=0.3, size=n),
        model=LinearHead(),  # type: ignore[arg-type]
        rule=RULE,
    )
    return engine, cluster


def users(engine: RankingEngine, cluster: np.ndarray, count: int, seed: int):
    """(feature rows, n ratings, excluded rows) of `count` users with 3 rated titles each."""
    rng = np.random.default_rng(seed)
    by_cluster = np.argsort(cluster, kind="stable")
    starts = np.searchsorted(cluster[by_cluster], np.arange(CLUSTERS + 1))
    x = np.zeros((count, DIM + 1), dtype=np.float32)
    rated = []
    for r in range(count):
        c = rng.integers(0, CLUSTERS)
        picks = by_cluster[rng.integers(starts[c], starts[c + 1], 3)]
        x[r, 1:] = unit(engine.vectors[picks].mean(0, keepdims=True) + rng.normal(0, 0.1, DIM))[0]
        rated.append(picks)
    n = rng.integers(0, 200, count)
    return x, n, rated


def recall(exact: RankingEngine, approx: RankingEngine, x, n, rated, k: int) -> float:
    """Mean recall@k of the approximate engine (a row scoring within 1e-5 of the exact k-th
    best counts), with the same exclusions."""
    want = exact.rank(x, n, k, excluded=rated)
    got = approx.rank(x, n, k, excluded=rated)
    u, w = exact.user_vectors(x), RULE.popularity_weight(n).astype(np.float32)
    hits = 0
    for r in range(len(x)):
        scores = exact.vectors[got.rows[r]] @ u[r] / np.float32(TAU)
        scores += exact.biases[got.rows[r]] + w[r] * exact.log_popularity[got.rows[r]]
        hits += int((scores >= want.scores[r, k - 1] - 1e-5).sum())
    return hits / (k * len(x))


def measure(size: int, args: argparse.Namespace) -> list[str]:
    exact, cluster = catalogue(size, args.seed)
    params = HNSWParams(args.m, args.ef_construction, args.ef_search)
    started = time.perf_counter()
    graph = PersonalIndex.build(exact.vectors, exact.biases, exact.log_popularity, params)
    build_s = time.perf_counter() - started
    count = args.queries + args.warmup
    x, n, rated = users(exact, cluster, count, args.seed + 1)
    u, w = exact.user_vectors(x), RULE.popularity_weight(n)
    queries = graph.augmentation.queries(u, TAU, w)
    check = check_personal_recall(
        graph, exact.vectors, exact.biases, exact.log_popularity, queries[:500], minimum=0.0
    )
    approx = replace(exact, approximate=graph)
    flat = faiss.IndexFlatIP(queries.shape[1])
    flat.add(graph.augmentation.items(exact.vectors, exact.biases, exact.log_popularity))
    graph.graph.index.hnsw.efSearch = params.ef_search

    def one(engine: RankingEngine) -> Callable[[int], object]:
        return lambda i: engine.rank(x[i : i + 1], n[i : i + 1], args.k, excluded=[rated[i]])

    times = timed_ms_rotated(
        {
            "`RankingEngine.rank` exact (every row scored)": one(exact),
            "`RankingEngine.rank` approximate (HNSW + exact re-score)": one(approx),
            "FAISS `IndexFlatIP` on the augmented vectors (raw)": lambda i: flat.search(
                queries[i : i + 1], args.k
            ),
            "FAISS HNSW raw (same graph, k = efSearch)": lambda i: graph.graph.index.search(
                queries[i : i + 1], params.ef_search
            ),
        },
        np.arange(count),
        args.warmup,
        args.blocks,
    )
    r10 = recall(exact, approx, x, n, rated, args.k)
    rows = []
    for name, ms in times.items():
        p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
        extra = ""
        if "approximate" in name:
            extra = f" | {r10:.4f} | {build_s:.0f} s (check {check:.4f})"
        rows.append(f"| {size:,} | {name} | {p50:.3f} | {p99:.3f}{extra or ' | | '} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[80_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    defaults = PERSONAL_HNSW
    parser.add_argument("--m", type=int, default=defaults.m)
    parser.add_argument("--ef-construction", type=int, default=defaults.ef_construction)
    parser.add_argument("--ef-search", type=int, default=defaults.ef_search)
    args = parser.parse_args()
    print(
        f"HNSW {HNSWParams(args.m, args.ef_construction, args.ef_search)}; load {os.getloadavg()}"
    )
    print("| titles | method | p50 ms | p99 ms | recall@10 | graph build |")
    print("|---:|---|---:|---:|---:|---|")
    for size in args.sizes:
        for row in measure(size, args):
            print(row, flush=True)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
