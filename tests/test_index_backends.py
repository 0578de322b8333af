"""Content index backends (`recommender_lib.index.backends`): exact search, the HNSW graph, its
recall check, exact filters over HNSW, persistence and the automatic choice by size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recommender_lib.index import backends, content_index
from recommender_lib.index.backends import (
    ExactBackend,
    HNSWBackend,
    HNSWParams,
    RecallTooLow,
    check_recall,
)
from recommender_lib.index.content_index import ContentIndex, SimilarityFilters

GENRES = ["Action", "Comedy", "Drama", "Horror"]


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, d: int = 16, clusters: int = 50, seed: int = 0) -> np.ndarray:
    """Unit vectors around `clusters` random centres (HNSW's hard case: tight neighbourhoods)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    return unit_rows(centres[rng.integers(0, clusters, n)] + 0.15 * rng.normal(size=(n, d)))


def metadata(ids: np.ndarray, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = ids.size
    return pd.DataFrame(
        {
            "item_id": ids,
            "title_type": rng.choice(["movie", "short"], n),
            "year": rng.integers(1950, 2025, n),
            "num_votes": rng.integers(0, 1000, n),
            "genres": [list(rng.choice(GENRES, rng.integers(1, 3), replace=False)) for _ in ids],
        }
    )


def build(n: int, *, approximate: bool | None, seed: int = 0, **kw: object) -> ContentIndex:
    ids = np.arange(1, n + 1, dtype=np.int64) * 7
    vectors = clustered(n, seed=seed)
    return ContentIndex.build(ids, vectors, metadata(ids, seed), approximate=approximate, **kw)


def test_exact_backend_equals_numpy_stable_sort() -> None:
    rng = np.random.default_rng(3)
    vectors = unit_rows(rng.normal(size=(5_000, 12)))
    vectors[100:140] = vectors[7]  # duplicates: ties must go to the lower row
    queries = np.vstack([vectors[[7, 3, 4_999]], unit_rows(rng.normal(size=(3, 12)))])
    scores, rows = ExactBackend(vectors).search(queries, 25)
    for r, q in enumerate(queries):
        want = vectors @ q
        order = np.argsort(-want, kind="stable")[:25]
        np.testing.assert_array_equal(rows[r], order)
        np.testing.assert_array_equal(scores[r], want[order])
    small_scores, small_rows = ExactBackend(vectors[:3]).search(queries[:1], 5)
    assert small_rows[0, 3:].tolist() == [-1, -1] and np.isneginf(small_scores[0, 3:]).all()


def test_hnsw_recall_on_20k_vectors_with_production_parameters() -> None:
    vectors = clustered(20_000, d=32, clusters=200, seed=1)
    graph = HNSWBackend.build(vectors)  # the production HNSWParams()
    recall = check_recall(ExactBackend(vectors), graph)
    assert recall >= backends.MIN_RECALL_AT_10
    assert graph.recall_at_10 == pytest.approx(recall)


def test_recall_check_fails_the_build_when_too_low() -> None:
    weak = HNSWParams(m=2, ef_construction=2, ef_search=1)
    with pytest.raises(RecallTooLow, match=r"recall@10 0\.\d+ .* below 0.98"):
        build(3_000, approximate=True, hnsw=weak)


def test_recall_check_widens_the_search_beam_before_failing(tmp_path: Path) -> None:
    """A beam too narrow for the catalogue is doubled until recall@10 reaches the gate; the
    graph keeps that efSearch, which the manifest records and a reload applies."""
    vectors = clustered(20_000, seed=4)
    graph = HNSWBackend.build(vectors, HNSWParams(ef_search=2))
    with pytest.raises(RecallTooLow, match=r"'ef_search': 2\}"):
        check_recall(ExactBackend(vectors), graph, max_ef_search=2)
    recall = check_recall(ExactBackend(vectors), graph)
    assert recall >= backends.MIN_RECALL_AT_10 and 2 < graph.params.ef_search <= 512
    assert graph.index.hnsw.efSearch == graph.params.ef_search
    graph.save(tmp_path)
    loaded = HNSWBackend.load(tmp_path, graph.describe(), 20_000, vectors.shape[1])
    assert loaded.index.hnsw.efSearch == graph.params.ef_search


def test_filters_stay_exact_with_hnsw() -> None:
    exact = build(4_000, approximate=False, seed=2)
    approx = build(4_000, approximate=True, seed=2)
    assert approx.approximate is not None and approx.approximate.recall_at_10 is not None
    filters = [
        None,
        SimilarityFilters(genres=frozenset({"Horror"})),
        SimilarityFilters(min_year=2000, title_types=frozenset({"movie"})),
        SimilarityFilters(min_votes=990),  # ~1% pass: over-fetch gives up, exact fallback
    ]
    agree = total = 0
    for item in exact.item_ids[::97]:
        for f in filters:
            keep = np.ones(len(exact), bool) if f is None else exact.mask(f)
            got = approx.similar(int(item), 10, f)
            want = exact.similar(int(item), 10, f)
            rows = [approx.position(i) for i, _ in got]
            assert keep[rows].all() and int(item) not in dict(got)
            assert len(got) == len(want) == 10
            assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
            agree += sum(i in dict(want) for i, _ in got)
            total += len(want)
    assert agree / total >= 0.98
    # where HNSW finds the exact neighbours the answers are the same, scores included
    item = int(exact.item_ids[0])
    f = SimilarityFilters(genres=frozenset({"Comedy"}))
    assert [i for i, _ in approx.similar(item, 5, f)] == [i for i, _ in exact.similar(item, 5, f)]
    np.testing.assert_allclose(
        [s for _, s in approx.similar(item, 5, f)], [s for _, s in exact.similar(item, 5, f)]
    )
    excluded = [i for i, _ in exact.similar(item, 3)]
    got = approx.query(exact.vectors[0], 10, exclude=excluded)
    assert not set(excluded) & set(dict(got)) and len(got) == 10


def test_save_load_round_trip_keeps_the_graph(tmp_path: Path) -> None:
    index = build(3_000, approximate=True, seed=4)
    paths = index.save(tmp_path / "a")
    assert paths["hnsw"].name == backends.HNSW_FILE
    meta = json.loads((tmp_path / "a" / content_index.META_FILE).read_text())
    assert meta["index"] == {
        "kind": "hnsw",
        **HNSWParams().to_dict(),
        "recall_at_10": index.approximate.recall_at_10 if index.approximate else None,
    }
    loaded = ContentIndex.load(tmp_path / "a")
    assert loaded.approximate is not None
    assert loaded.approximate.params == HNSWParams()
    assert loaded.approximate.recall_at_10 == meta["index"]["recall_at_10"]
    f = SimilarityFilters(genres=frozenset({"Drama"}))
    for item in index.item_ids[::301]:
        assert loaded.similar(int(item), 10, f) == index.similar(int(item), 10, f)
    # deterministic: the same input builds byte-identical files
    build(3_000, approximate=True, seed=4).save(tmp_path / "b")
    for name in (backends.HNSW_FILE, content_index.META_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    exact = build(50, approximate=None)
    exact.save(tmp_path / "c")
    assert not (tmp_path / "c" / backends.HNSW_FILE).exists()
    assert ContentIndex.load(tmp_path / "c").approximate is None


def test_load_rejects_a_graph_of_another_size(tmp_path: Path) -> None:
    build(2_000, approximate=True).save(tmp_path / "big")
    build(1_000, approximate=True).save(tmp_path / "small")
    (tmp_path / "small" / backends.HNSW_FILE).write_bytes(
        (tmp_path / "big" / backends.HNSW_FILE).read_bytes()
    )
    with pytest.raises(ValueError, match="not an HNSW index of"):
        ContentIndex.load(tmp_path / "small")


def test_automatic_choice_by_size_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(content_index, "APPROXIMATE_THRESHOLD", 1_000)
    assert build(1_000, approximate=None).approximate is None
    assert build(1_001, approximate=None).approximate is not None
    assert build(1_001, approximate=False).approximate is None
    assert build(500, approximate=True).approximate is not None
