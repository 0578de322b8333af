"""Approximate personalised retrieval: an HNSW graph for the ranking engine's retrieval score.

    retrieval(u, i) = u·v_i/τ + b_i + w(n)·log(1 + c_i)    (`recommender_lib.engine.ranking`)

is the inner product of the query [u/τ, 1/s_b, w/s_p] with the item [v_i, s_b·b_i, s_p·p_i]
(p_i = log(1 + c_i)). Items are not unit-norm, so maximum inner product is reduced to nearest
neighbour (Bachrach et al. 2014): each item gets one more coordinate sqrt(M² − ‖x_i‖²) (M the
largest item norm) and each query a 0 there; every stored vector then has norm M and the
inner-product order of the graph's metric is the L2 order. The scales s_b, s_p give the bias and
popularity columns the spread of one embedding dimension, so no column dominates the geometry of
the graph (a popularity column of 0-11 against unit embeddings leaves the taste dimensions
hardly navigable); they cancel in the inner product.

A graph walk finds the titles near the user's taste; titles in the top-10 mostly through their
popularity (a blockbuster far from the user's cluster) are another region it often misses
(recall@10 ~0.90 at 80 k synthetic titles with efSearch 64). So every search also proposes
the `head`: the titles in the top `HEAD_ROWS` by b_i + w·p_i for some w in `HEAD_WEIGHTS`
(precomputed, ~150 rows) — 0.98-0.99 with it (`bench/personal_retrieval.py`).

The graph only proposes candidates: the engine re-scores them exactly with `retrieval`, so the
order among candidates, ties and exclusions are the exact rule's. `check_personal_recall` gates
the build: recall@10 of that path against exact on seeded user queries, `RecallTooLow` below
`MIN_RECALL_AT_10`. The bundle (`recommender_lib.bundle.layout`) builds, checks and saves it
above `APPROXIMATE_THRESHOLD` titles; `Recommender.load` reads it back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recommender_lib.atomic import atomic_path, write_text_atomic
from recommender_lib.index.backends import (
    MAX_EF_SEARCH,
    MIN_RECALL_AT_10,
    OVERFETCH,
    RECALL_QUERIES,
    RECALL_SEED,
    TIE_TOLERANCE,
    ExactBackend,
    HNSWBackend,
    HNSWParams,
    RecallTooLow,
    filtered_candidates,
    top_k,
    widened_recall,
)
from recommender_lib.modeling.features.items import ItemFeatures

PERSONAL_META_FILE = "personal_index.json"
PERSONAL_INDEX_VERSION = 1
HEAD_FILE = "head.npy"
# efSearch 128 (content: 64): at 80 k synthetic titles 64 gave recall@10 0.980 with the head,
# too close to the gate; 128 gave 0.994 (`bench/personal_retrieval.py`, BENCHMARKS.md).
PERSONAL_HNSW = HNSWParams(ef_construction=64, ef_search=128)
EXTRA_COLUMNS = 3  # bias, popularity, MIPS padding
HEAD_ROWS = 64  # titles proposed per popularity weight, whatever the user
HEAD_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, np.inf)  # inf: by popularity alone


def item_log_popularity(items: ItemFeatures, item_ids: np.ndarray) -> np.ndarray:
    """log(1 + c_i) of each title's training ratings (0 for titles the model never saw),
    float32: the rule's popularity term."""
    idx = items.index_of(np.asarray(item_ids, dtype=np.int64))
    counts = np.where(idx >= 0, items.count[np.maximum(idx, 0)], 0)
    return np.log1p(counts).astype(np.float32)


@dataclass(frozen=True)
class Augmentation:
    """Column scales of the augmented vectors (they cancel in the inner product)."""

    bias_scale: float
    pop_scale: float

    @classmethod
    def fit(cls, vectors: np.ndarray, biases: np.ndarray, log_pop: np.ndarray) -> Augmentation:
        """Scales giving the bias and popularity columns the RMS spread of one embedding dim."""
        spread = float(np.sqrt(np.mean(np.var(vectors, axis=0)))) if vectors.size else 1.0
        spread = spread if spread > 0 else 1.0

        def scale(column: np.ndarray) -> float:
            std = float(np.std(column)) if column.size else 0.0
            return spread / std if std > 0 else 1.0

        return cls(scale(biases), scale(log_pop))

    def items(self, vectors: np.ndarray, biases: np.ndarray, log_pop: np.ndarray) -> np.ndarray:
        """(n, d + 3) float32 stored vectors, every row of the same norm."""
        x = np.empty((vectors.shape[0], vectors.shape[1] + EXTRA_COLUMNS), dtype=np.float32)
        x[:, : vectors.shape[1]] = vectors
        x[:, -3] = biases * np.float32(self.bias_scale)
        x[:, -2] = log_pop * np.float32(self.pop_scale)
        x[:, -1] = 0.0
        sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)
        x[:, -1] = np.sqrt(np.maximum(sq.max(initial=0.0) - sq, 0.0))
        return x

    def queries(self, u: np.ndarray, temperature: float, w: np.ndarray) -> np.ndarray:
        """(m, d + 3) float32 queries of user vectors `u` with popularity weights `w`."""
        u = np.atleast_2d(np.asarray(u, dtype=np.float32))
        q = np.zeros((u.shape[0], u.shape[1] + EXTRA_COLUMNS), dtype=np.float32)
        q[:, : u.shape[1]] = u / np.float32(temperature)
        q[:, -3] = 1.0 / self.bias_scale
        q[:, -2] = np.asarray(w, dtype=np.float32) / np.float32(self.pop_scale)
        return q


def popular_head(biases: np.ndarray, log_pop: np.ndarray, rows: int = HEAD_ROWS) -> np.ndarray:
    """Sorted rows in the top `rows` by b_i + w·p_i for some w of `HEAD_WEIGHTS`."""
    if biases.size == 0:
        return np.zeros(0, dtype=np.int64)
    keys = [log_pop if np.isinf(w) else biases + np.float32(w) * log_pop for w in HEAD_WEIGHTS]
    return np.unique(np.concatenate([top_k(key, rows) for key in keys])).astype(np.int64)


@dataclass
class PersonalIndex:
    """The HNSW graph over augmented item vectors, the scales its queries need and the
    popular `head` rows every search also proposes."""

    graph: HNSWBackend
    augmentation: Augmentation
    head: np.ndarray  # int64, sorted

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        biases: np.ndarray,
        log_pop: np.ndarray,
        params: HNSWParams | None = None,
    ) -> PersonalIndex:
        """Insert every catalogue row (row i = engine row i); single-threaded, deterministic."""
        vectors = np.asarray(vectors, dtype=np.float32)
        biases, log_pop = np.asarray(biases, np.float32), np.asarray(log_pop, np.float32)
        if biases.shape != (vectors.shape[0],) or log_pop.shape != biases.shape:
            raise ValueError("vectors, biases and log popularity must describe the same rows")
        augmentation = Augmentation.fit(vectors, biases, log_pop)
        items = augmentation.items(vectors, biases, log_pop)
        graph = HNSWBackend.build(items, params or PERSONAL_HNSW)
        return cls(graph, augmentation, popular_head(biases, log_pop))

    def __len__(self) -> int:
        return len(self.graph)

    @property
    def dim(self) -> int:
        """Embedding dimension of the user and item vectors (without the extra columns)."""
        return int(self.graph.index.d) - EXTRA_COLUMNS

    def candidates(
        self,
        query: np.ndarray,
        width: int,
        keep: np.ndarray | None,
        excluded: np.ndarray,
        kept: int | None = None,
    ) -> np.ndarray | None:
        """Candidate rows for one augmented `query`, each passing `keep` and not `excluded`:
        the graph's (at least `width`; its best efSearch or `OVERFETCH` x `width` at least)
        and the `head`'s; or None: rank exactly instead."""
        least = max(self.graph.params.ef_search, OVERFETCH * width)
        graph = self.graph
        rows = filtered_candidates(graph, query, width, keep, excluded, kept=kept, min_fetch=least)
        if rows is None or self.head.size == 0:
            return rows
        head = self.head if keep is None else self.head[keep[self.head]]
        if excluded.size:
            head = head[~np.isin(head, excluded)]
        return np.union1d(rows, head)

    def save(self, directory: Path | str) -> dict[str, Path]:
        """`hnsw.faiss` + `personal_index.json` in `directory` (created), each atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "version": PERSONAL_INDEX_VERSION,
            "n_items": len(self),
            "dim": self.dim,
            "augmentation": asdict(self.augmentation),
            "index": self.graph.describe(),
        }
        paths = {"hnsw": self.graph.save(directory), "meta": directory / PERSONAL_META_FILE}
        paths["head"] = directory / HEAD_FILE
        with atomic_path(paths["head"]) as tmp, open(tmp, "wb") as f:
            np.save(f, self.head, allow_pickle=False)
        write_text_atomic(paths["meta"], json.dumps(meta, indent=2) + "\n")
        return paths

    @classmethod
    def load(cls, directory: Path | str, n_items: int, dim: int) -> PersonalIndex:
        """Read what `save` wrote; refuses a graph of other rows or dimensions."""
        directory = Path(directory)
        meta = json.loads((directory / PERSONAL_META_FILE).read_text(encoding="utf-8"))
        if meta.get("version") != PERSONAL_INDEX_VERSION:
            raise ValueError(f"unsupported personal index version {meta.get('version')!r}")
        if (meta["n_items"], meta["dim"]) != (n_items, dim):
            raise ValueError(
                f"personal index covers ({meta['n_items']}, {meta['dim']}) vectors, "
                f"the catalogue ({n_items}, {dim})"
            )
        graph = HNSWBackend.load(directory, meta["index"], n_items, dim + EXTRA_COLUMNS)
        head = np.load(directory / HEAD_FILE, allow_pickle=False).astype(np.int64)
        if head.size and (head.min() < 0 or head.max() >= n_items):
            raise ValueError(f"{HEAD_FILE} holds rows outside the {n_items} catalogue rows")
        return cls(graph, Augmentation(**meta["augmentation"]), head)

    def describe(self) -> dict[str, Any]:
        """The manifest entry: approximate, HNSW parameters, measured recall@10."""
        return {"approximate": True, **self.graph.describe(), "head_rows": int(self.head.size)}


def check_personal_recall(
    index: PersonalIndex,
    vectors: np.ndarray,
    biases: np.ndarray,
    log_pop: np.ndarray,
    queries: np.ndarray,
    *,
    k: int = 10,
    minimum: float = MIN_RECALL_AT_10,
    max_ef_search: int = MAX_EF_SEARCH,
) -> float:
    """Recall@k of the engine's approximate path (graph candidates re-scored exactly, no
    exclusions) against exact top-k for augmented `queries` (`Augmentation.queries` of
    seeded users), efSearch widened up to `max_ef_search` (`widened_recall`); a candidate
    scoring within the tie tolerance of the exact k-th best is a hit. Stored on the graph
    and returned; `RecallTooLow` below `minimum`."""
    items = index.augmentation.items(
        np.asarray(vectors, np.float32), np.asarray(biases, np.float32), log_pop
    )
    want, _ = ExactBackend(items).search(queries, k)
    no_exclusions = np.zeros(0, dtype=np.int64)

    def measure() -> float:
        hits = possible = 0
        for q, truth in zip(queries, want, strict=True):
            wanted = int(np.isfinite(truth).sum())
            rows = index.candidates(q, wanted, None, no_exclusions) if wanted else None
            if rows is None:  # no filters here: a graph that cannot return k rows is broken
                possible += wanted
                continue
            scores = items[rows] @ q
            got = scores[np.lexsort((rows, -scores))[:wanted]]
            kth = float(truth[wanted - 1])
            hits += int((got >= kth - TIE_TOLERANCE * max(1.0, abs(kth))).sum())
            possible += wanted
        return hits / possible if possible else 1.0

    recall = widened_recall(index.graph, measure, minimum, max_ef_search)
    if recall < minimum:
        raise RecallTooLow(
            f"personal HNSW recall@{k} {recall:.4f} on {len(queries)} seeded user queries is "
            f"below {minimum} (params {index.graph.params.to_dict()}): raise ef_search / m, "
            "or build exact"
        )
    index.graph.recall_at_10 = round(recall, 6)
    return recall


def recall_sample(
    n_users: int, queries: int = RECALL_QUERIES, seed: int = RECALL_SEED
) -> np.ndarray:
    """Sorted seeded sample of user positions for the recall check."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_users, size=min(queries, n_users), replace=False))
