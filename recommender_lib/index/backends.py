"""Search backends of the content index: exact top-k and an HNSW graph (faiss), plus the recall
check that gates the approximate one.

Both answer `search(queries, k) -> (scores, positions)` over L2-normalised float32 rows (inner
product = cosine): float32 (q, k) scores best first and int64 (q, k) row positions, padded with
-inf / -1 where fewer than k rows exist.

* `ExactBackend`: one BLAS matrix-vector product per query and `top_k` (a sampled threshold,
  argpartition, then a sort of the k best by (-score, position)); on one core it is as fast as
  faiss's `IndexFlatIP` at 80 k-1 M x 32 dims and, unlike a heap, its ties are deterministic.
* `HNSWBackend`: faiss `IndexHNSWFlat(d, M, METRIC_INNER_PRODUCT)`, built single-threaded so
  the graph (and the saved file) depends only on the vectors and the parameters.

`ContentIndex` uses HNSW above `APPROXIMATE_THRESHOLD` titles; `check_recall` measures its
recall@10 against exact on a seeded sample of catalogue titles, doubling efSearch (the query-time
beam) up to `MAX_EF_SEARCH` while it is short (`widened_recall`), and raises `RecallTooLow`
below `MIN_RECALL_AT_10`.
`recommender_lib.index.personal` builds the same graph over augmented item vectors for
personalised retrieval (its own recall check, same gate); both over-fetch and filter through
`filtered_candidates`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from recommender_lib.atomic import atomic_path

APPROXIMATE_THRESHOLD = 200_000  # more titles than this -> HNSW (ContentIndex.build default)
MIN_RECALL_AT_10 = 0.98  # the build fails below this recall@10 of HNSW against exact
MAX_EF_SEARCH = 512  # the recall checks double efSearch up to this before failing the build
RECALL_QUERIES = 500  # catalogue titles sampled for the recall check
RECALL_SEED = 0
HNSW_FILE = "hnsw.faiss"
OVERFETCH = 2  # HNSW candidates fetched per wanted result, scaled by 1 / share passing filters
MAX_FETCH = 2048  # beyond this many HNSW candidates the exact masked search is cheaper
TIE_TOLERANCE = 1e-6  # a returned title scoring within this of the exact k-th best is a hit


class RecallTooLow(ValueError):
    """The approximate index misses too many exact neighbours (the build must fail)."""


# ------------------------------------------------------------------------------------- top-k


def _check_k(k: int) -> int:
    k = operator.index(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return k


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the k highest scores, best first, ties by ascending index.

    Equals `np.argsort(-scores, kind="stable")[:k]` exactly (scores must not be NaN). On long
    arrays a strided sample first gives a threshold `t` (its k-th best value): at least k rows
    score >= t, so those rows hold the whole answer, boundary ties included, and only they
    (about sqrt(n * k), ascending) go to `_top_k_exact`. -inf marks rows left out; they come
    last, by index, and only when fewer than k rows are finite.
    """
    k = _check_k(k)
    n = scores.shape[0]
    stride = math.isqrt(n // k)
    if k < n and stride >= 4:
        sample = scores[::stride]
        threshold = np.partition(sample, sample.size - k)[sample.size - k]
        # At a -inf threshold (mostly -inf, e.g. filtered out) keep the finite rows instead:
        # argpartition degrades on arrays that are mostly one value.
        rows = np.flatnonzero(scores > threshold if threshold == -np.inf else scores >= threshold)
        if rows.size <= n // 2:  # else (heavy ties at the threshold) the filter saves nothing
            best = rows[_top_k_exact(scores[rows], k)]
            if best.size < k:  # fewer than k finite rows: the first -inf rows complete them
                best = np.concatenate([best, np.flatnonzero(scores == -np.inf)[: k - best.size]])
            return best
    return _top_k_exact(scores, k)


def _top_k_exact(scores: np.ndarray, k: int) -> np.ndarray:
    """`top_k` without the sample: argpartition for the k-th best score, then every row
    strictly above it plus the lowest-index rows tied with it, sorted by (-score, index).

    O(n) in general; numpy's introselect slows (towards a full sort) when most scores are one
    value, e.g. mostly -inf.
    """
    n = scores.shape[0]
    if k >= n:
        return np.argsort(-scores, kind="stable")
    best = np.argpartition(scores, n - k)[n - k :]
    kth = scores[best].min()
    above = best[scores[best] > kth]  # every row above the k-th best is among the k best
    tied = np.flatnonzero(scores == kth)[: k - above.size]
    candidates = np.concatenate([above, tied])
    order = np.lexsort((candidates, -scores[candidates]))
    return candidates[order]


def _as_queries(queries: Any, dim: int) -> np.ndarray:
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must have shape (q, {dim}), got {q.shape}")
    return q


def _padded(n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.full((n_queries, k), -np.inf, dtype=np.float32),
        np.full((n_queries, k), -1, dtype=np.int64),
    )


# ------------------------------------------------------------------------------------ exact


class ExactBackend:
    """Exact inner-product top-k over `vectors` (float32, (n, d)); ties go to the lower row."""

    kind = "exact"

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions) of each query's k best rows, best first (see module doc)."""
        k = _check_k(k)
        q = _as_queries(queries, self.vectors.shape[1])
        scores_out, rows_out = _padded(q.shape[0], k)
        if self.vectors.shape[0] == 0:
            return scores_out, rows_out
        for r, vector in enumerate(q):
            scores = self.vectors @ vector
            best = top_k(scores, k)
            scores_out[r, : best.size], rows_out[r, : best.size] = scores[best], best
        return scores_out, rows_out


# ------------------------------------------------------------------------------------- HNSW


@dataclass(frozen=True)
class HNSWParams:
    """Graph degree and beam widths, chosen with `bench/content_latency.py` (1 M x 32 dims, one
    core): efSearch 48 gave recall@10 0.985-0.993, too close to the 0.98 gate; 64 gives ~0.99
    at ~0.3 ms a raw search; 96 gives 0.995 at ~0.45 ms. efConstruction 128: on the generated
    whole-IMDb content vectors (1.48 M titles, genre clusters) a graph built with 64 reached
    recall@10 0.938 at efSearch 64 and 0.975 at 512; with 128, 0.958 and 0.987 (M 48 did no
    better), so the check widens efSearch to 256 there (BENCHMARKS.md)."""

    m: int = 32
    ef_construction: int = 128
    ef_search: int = 64

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if operator.index(value) < 1:
                raise ValueError(f"HNSW {name} must be >= 1, got {value}")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@contextmanager
def _faiss_threads(n: int) -> Iterator[None]:
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class HNSWBackend:
    """Approximate inner-product top-k through a faiss HNSW graph over the same rows."""

    kind = "hnsw"

    def __init__(self, index: Any, params: HNSWParams, recall_at_10: float | None = None):
        index.hnsw.efSearch = params.ef_search
        self.index, self.params, self.recall_at_10 = index, params, recall_at_10

    @classmethod
    def build(cls, vectors: np.ndarray, params: HNSWParams | None = None) -> HNSWBackend:
        """Insert every row, one thread (deterministic graph: faiss draws levels from a fixed
        seed, and single-threaded insertion order is the row order)."""
        params = params or HNSWParams()
        index = faiss.IndexHNSWFlat(vectors.shape[1], params.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        with _faiss_threads(1):
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return cls(index, params)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def set_ef_search(self, ef_search: int) -> None:
        """The search beam (efSearch): a query-time setting, the graph is unchanged."""
        self.params = replace(self.params, ef_search=ef_search)
        self.index.hnsw.efSearch = self.params.ef_search

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions), best first by faiss's scores; -1 / -inf where none found."""
        k = _check_k(k)
        q = _as_queries(queries, self.index.d)
        if len(self) == 0:
            return _padded(q.shape[0], k)
        scores, rows = self.index.search(q, k)
        scores[rows < 0] = -np.inf
        return scores, rows.astype(np.int64)

    def save(self, directory: Path) -> Path:
        """`hnsw.faiss` in `directory`, written atomically."""
        path = Path(directory) / HNSW_FILE
        with atomic_path(path) as tmp:
            faiss.write_index(self.index, str(tmp))
        return path

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], n: int, dim: int) -> HNSWBackend:
        """Read `hnsw.faiss`; `meta` is the `index` entry `describe` wrote."""
        index: Any = faiss.read_index(str(Path(directory) / HNSW_FILE))
        if not hasattr(index, "hnsw") or (index.ntotal, index.d) != (n, dim):
            raise ValueError(f"{HNSW_FILE} is not an HNSW index of ({n}, {dim}) vectors")
        params = HNSWParams(**{name: int(meta[name]) for name in HNSWParams().to_dict()})
        if index.hnsw.efConstruction != params.ef_construction:
            raise ValueError(f"{HNSW_FILE} efConstruction disagrees with the JSON manifest")
        return cls(index, params, meta.get("recall_at_10"))

    def describe(self) -> dict[str, Any]:
        """The JSON manifest entry: kind, parameters, measured recall."""
        return {"kind": self.kind, **self.params.to_dict(), "recall_at_10": self.recall_at_10}


def filtered_candidates(
    graph: HNSWBackend,
    q: np.ndarray,
    k: int,
    keep: np.ndarray | None,
    excluded: np.ndarray,
    *,
    kept: int | None = None,
    min_fetch: int = 0,
) -> np.ndarray | None:
    """HNSW candidate rows (graph order) for query `q` among rows passing `keep` (None: all)
    and not `excluded`: fetch k + excluded (times `OVERFETCH` / the share `keep` passes, at
    least `min_fetch`), filter exactly, widen x4 until k survive. None when that needs more
    than `MAX_FETCH` candidates or fewer than k rows are eligible: search exactly instead.
    `kept`: `keep.sum()` when the caller already has it."""
    n = len(graph)
    excluded = np.unique(excluded)
    if keep is None:  # only the excluded rows can fall out: no over-fetch
        eligible, fetch = n - excluded.size, k + excluded.size
    else:
        kept = int(keep.sum()) if kept is None else kept
        eligible = kept - int(keep[excluded].sum())
        fetch = math.ceil((k + excluded.size) * OVERFETCH * n / max(eligible, 1))
    if eligible < k:
        return None
    fetch = max(fetch, min_fetch)
    while fetch <= MAX_FETCH:
        rows = graph.search(q[None, :], min(fetch, n))[1][0]
        found = rows >= 0
        for row in excluded if excluded.size <= 8 else ():  # np.isin costs ~20 us a call
            found &= rows != row
        rows = rows[found if excluded.size <= 8 else found & ~np.isin(rows, excluded)]
        if keep is not None:
            rows = rows[keep[rows]]
        if rows.size >= k or fetch >= n:
            return rows if rows.size >= k else None
        fetch *= 4
    return None


def filtered_search(
    graph: HNSWBackend,
    vectors: np.ndarray,
    q: np.ndarray,
    k: int,
    keep: np.ndarray | None,
    excluded: np.ndarray,
) -> tuple[np.ndarray, np.ndarray] | None:
    """HNSW top-k of unit vector `q` among rows passing `keep` (None: all) and not `excluded`:
    `filtered_candidates`, re-scored with `vectors` and ordered by (-score, row) like the
    exact search. None when the caller should search exactly (see `filtered_candidates`).
    """
    rows = filtered_candidates(graph, q, k, keep, excluded)
    if rows is None:
        return None
    scores = vectors[rows] @ q
    best = np.lexsort((rows, -scores))[:k]
    return scores[best], rows[best]


# ----------------------------------------------------------------------------- recall check


def recall_at_k(
    exact: ExactBackend, approximate: HNSWBackend, rows: np.ndarray, k: int = 10
) -> float:
    """Mean recall@k of `approximate` for catalogue rows used as `similar` queries (the row
    itself left out). A returned row counts as a hit when its exact score reaches the exact
    k-th best, so equal-score titles swapped at the boundary are no miss."""
    queries = exact.vectors[rows]
    want_scores, _ = exact.search(queries, k + 1)
    _, got = approximate.search(queries, k + 1)
    hits = possible = 0
    for r, row in enumerate(rows):
        truth = want_scores[r][np.isfinite(want_scores[r])]
        wanted = min(k, truth.size - 1)  # the query itself is one of the rows
        if wanted < 1:
            continue
        kth = np.sort(truth)[::-1][wanted]  # exact k-th best of the others (self scores top)
        found = got[r][(got[r] >= 0) & (got[r] != row)][:wanted]
        hits += int((exact.vectors[found] @ queries[r] >= kth - TIE_TOLERANCE).sum())
        possible += wanted
    return hits / possible if possible else 1.0


def widened_recall(
    graph: HNSWBackend, measure: Callable[[], float], minimum: float, max_ef_search: int
) -> float:
    """`measure()` (a recall of `graph`), efSearch doubled while it is below `minimum` and
    efSearch below `max_ef_search`: a larger catalogue or a denser region needs a wider beam,
    not another graph. The graph keeps the efSearch of the last measurement (the manifest
    records it with the recall)."""
    recall = measure()
    while recall < minimum and graph.params.ef_search < max_ef_search:
        graph.set_ef_search(min(2 * graph.params.ef_search, max_ef_search))
        recall = measure()
    return recall


def check_recall(
    exact: ExactBackend,
    approximate: HNSWBackend,
    *,
    queries: int = RECALL_QUERIES,
    seed: int = RECALL_SEED,
    minimum: float = MIN_RECALL_AT_10,
    max_ef_search: int = MAX_EF_SEARCH,
) -> float:
    """Recall@10 on `queries` seeded random titles, efSearch widened up to `max_ef_search`
    (`widened_recall`); stored on `approximate` and returned, or `RecallTooLow` below
    `minimum`."""
    n = exact.vectors.shape[0]
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(queries, n), replace=False))
    nonzero = rows[exact.vectors[rows].any(axis=1)]  # zero titles have no neighbours
    recall = widened_recall(
        approximate,
        lambda: recall_at_k(exact, approximate, nonzero, 10),
        minimum,
        max_ef_search,
    )
    if recall < minimum:
        raise RecallTooLow(
            f"HNSW recall@10 {recall:.4f} on {nonzero.size} seeded queries is below {minimum} "
            f"(params {approximate.params.to_dict()}): raise ef_search / m, or build exact"
        )
    approximate.recall_at_10 = round(recall, 6)
    return recall
