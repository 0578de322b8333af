"""Approximate personalised retrieval: the HNSW path of `RankingEngine.rank` against exact.

Forced at small sizes (the production threshold is 200 k titles): the graph proposes candidates,
the engine re-scores them exactly, so on easy data the lists equal the exact ones; exclusions and
filters stay exact (falling back to the exact path when the graph cannot serve them); the build's
recall gate refuses a bad graph. A bundle built with the graph serves through it after a reload:
`check_bundle_with_graph`, run by tests/test_recommender.py on its trained tiny bundle.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from recommender_lib.bundle.format import read_manifest
from recommender_lib.bundle.layout import (
    AKAS_FILE,
    CATALOG_FILE,
    CONTENT_DIR,
    EMBEDDINGS_FILE,
    MODEL_DIR,
    PERSONAL_DIR,
    USER_FEATURES_PATH,
    USER_HISTORY_FILE,
    assemble_bundle,
)
from recommender_lib.engine.ranking import Ranked, RankingEngine
from recommender_lib.engine.recommender import Recommender
from recommender_lib.index.backends import HNSWParams, RecallTooLow
from recommender_lib.index.personal import PersonalIndex, check_personal_recall
from recommender_lib.index.top_k import PAD
from recommender_lib.modeling.two_tower.ranking_rule import RankingRule

DIM = 8


class LinearTowers:
    """u = the feature row's columns 1..DIM; stars = baseline + u·v (like the fusion head)."""

    temperature = 0.2
    transform = SimpleNamespace(global_mean=3.0, user_bias_column=0)

    def user_embeddings(self, user_x: np.ndarray) -> np.ndarray:
        return np.asarray(user_x[:, 1 : DIM + 1], dtype=np.float32)

    def head_predict(self, u: np.ndarray, v: np.ndarray, base: np.ndarray) -> np.ndarray:
        return np.asarray(base, np.float64) + (u * v).sum(axis=1)


def make_engine(n_items: int = 3000, seed: int = 0) -> RankingEngine:
    """Clustered unit item vectors with biases and popularity: easy data for a graph."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, DIM))
    v = centres[rng.integers(0, 20, n_items)] + 0.4 * rng.normal(size=(n_items, DIM))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    counts = rng.integers(0, 200, n_items)
    return RankingEngine(
        item_ids=np.arange(1, n_items + 1, dtype=np.int64),
        vectors=v.astype(np.float32),
        biases=rng.normal(scale=0.5, size=n_items).astype(np.float32),
        log_popularity=np.log1p(counts).astype(np.float32),
        item_bias=rng.normal(scale=0.3, size=n_items),
        model=LinearTowers(),  # type: ignore[arg-type]
        rule=RankingRule(pop_weight=0.2, cold_pop_weight=1.0),
    )


def with_graph(engine: RankingEngine, params: HNSWParams | None = None) -> RankingEngine:
    """`engine` with a personal graph; by default one wide enough (efSearch 256 of 3000 rows)
    that its candidates hold every exact window: the lists must then equal exact ones."""
    params = params or HNSWParams(ef_search=256)
    graph = PersonalIndex.build(engine.vectors, engine.biases, engine.log_popularity, params)
    return replace(engine, approximate=graph)


def users(n: int = 40, seed: int = 1) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, DIM + 1)).astype(np.float32)
    x[:, 1:] /= np.linalg.norm(x[:, 1:], axis=1, keepdims=True)
    return x


def assert_same(got: Ranked, want: Ranked) -> None:
    np.testing.assert_array_equal(got.rows, want.rows)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.stars, want.stars, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def engines() -> tuple[RankingEngine, RankingEngine]:
    exact = make_engine()
    return exact, with_graph(exact)


@pytest.mark.parametrize(
    "rule",
    [
        RankingRule(pop_weight=0.2, cold_pop_weight=1.0),
        RankingRule(kind="stars_in_window", pop_weight=0.5, window=50),
        RankingRule(kind="blend", cold_pop_weight=2.0, window=40, star_weight=0.5),
    ],
    ids=["retrieval", "stars_in_window", "blend"],
)
def test_approximate_ranking_equals_exact_on_easy_data(engines, rule: RankingRule) -> None:
    exact, approx = engines
    ux, n = users(), np.arange(40) % 25
    assert_same(approx.rank(ux, n, 10, rule=rule), exact.rank(ux, n, 10, rule=rule))


def test_exclusions_and_filters_stay_exact(engines) -> None:
    exact, approx = engines
    ux, n = users(12, seed=2), np.full(12, 3)
    u = exact.user_vectors(ux)
    plain = exact.rank(ux, n, 10)
    excluded = [plain.rows[r, :5] for r in range(12)]  # their five best titles were rated
    allowed = np.random.default_rng(3).random(len(exact)) < 0.3
    for kwargs in (
        {"excluded": excluded},
        {"excluded": excluded, "allowed": allowed},
        {"excluded": np.isin(np.arange(len(exact)), plain.rows[:, :5])[None, :].repeat(12, 0)},
    ):
        got, want = approx.rank(ux, n, 10, u=u, **kwargs), exact.rank(ux, n, 10, u=u, **kwargs)
        assert_same(got, want)
    got = approx.rank(ux, n, 10, excluded=excluded, allowed=allowed)
    for r in range(12):
        assert not set(got.rows[r].tolist()) & set(excluded[r].tolist())
        assert allowed[got.rows[r]].all()


def test_narrow_filters_fall_back_to_the_exact_path(engines) -> None:
    exact, approx = engines
    ux, n = users(5, seed=4), np.full(5, 1)
    allowed = np.zeros(len(exact), dtype=bool)
    allowed[::400] = True  # 8 titles pass: more than MAX_FETCH candidates would be needed
    got = approx.rank(ux, n, 10, allowed=allowed)
    assert_same(got, exact.rank(ux, n, 10, allowed=allowed))
    assert (got.rows[:, 8:] == PAD).all() and allowed[got.rows[:, :8]].all()


def test_the_recall_gate_refuses_a_bad_graph() -> None:
    rng = np.random.default_rng(5)
    n, d = 4000, 48  # isotropic high-dimensional vectors: the hardest case for a graph
    v = rng.normal(size=(n, d)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    b, pop = np.zeros(n, np.float32), np.zeros(n, np.float32)
    bad = PersonalIndex.build(v, b, pop, HNSWParams(m=2, ef_construction=1, ef_search=1))
    queries = bad.augmentation.queries(rng.normal(size=(100, d)), 0.1, np.zeros(100))
    with pytest.raises(RecallTooLow, match=r"below 0\.98"):
        check_personal_recall(bad, v, b, pop, queries)
    good = PersonalIndex.build(v[:500], b[:500], pop[:500], HNSWParams(ef_search=64))
    assert check_personal_recall(good, v[:500], b[:500], pop[:500], queries) >= 0.98
    assert good.graph.recall_at_10 is not None and good.graph.recall_at_10 >= 0.98


def test_a_graph_of_other_rows_is_refused(engines, tmp_path: Path) -> None:
    exact, approx = engines
    assert approx.approximate is not None
    approx.approximate.save(tmp_path / "p")
    loaded = PersonalIndex.load(tmp_path / "p", len(exact), DIM)
    assert len(loaded) == len(exact) and loaded.augmentation == approx.approximate.augmentation
    with pytest.raises(ValueError, match="covers"):
        PersonalIndex.load(tmp_path / "p", len(exact) - 1, DIM)
    with pytest.raises(ValueError, match="rows"):
        replace(exact, approximate=with_graph(make_engine(100)).approximate)


def _rebundle(bundle: Path, destination: Path) -> Path:
    """The same bundle parts assembled again, with the personal graph forced."""
    with np.load(bundle / USER_HISTORY_FILE) as hist:
        users_of = np.repeat(hist["user_ids"], np.diff(hist["offsets"]))
        history = pd.DataFrame(
            {
                "user_id": users_of,
                "movie_id": hist["item_ids"],
                "rating": hist["ratings"],
                "rating_ts": hist["rating_ts"],
            }
        )
    manifest = read_manifest(bundle)
    keep = {k: manifest[k] for k in ("model", "content_index", "metrics", "source_versions")}
    return assemble_bundle(
        destination,
        model_dir=bundle / MODEL_DIR,
        embeddings_path=bundle / EMBEDDINGS_FILE,
        content_dir=bundle / CONTENT_DIR,
        catalog=pd.read_parquet(bundle / CATALOG_FILE),
        user_features_path=bundle / USER_FEATURES_PATH,
        user_history=history,
        akas=pd.read_parquet(bundle / AKAS_FILE),
        manifest=keep,
        approximate=True,
    )


def check_bundle_with_graph(bundle: Path, exact: Recommender, workdir: Path) -> None:
    """The parts of an exact `bundle` assembled again with the graph forced: the manifest and
    the graph's JSON carry its recall, `Recommender.load` reads the saved graph back, and the
    answers equal the exact bundle's. Run by tests/test_recommender.py on its tiny bundle
    (one trained bundle for both files)."""
    assert read_manifest(bundle)["personal_index"] == {"approximate": False}
    assert not (bundle / PERSONAL_DIR).exists() and exact.engine.approximate is None
    approx_bundle = _rebundle(bundle, workdir / "approx")
    entry = read_manifest(approx_bundle)["personal_index"]
    assert entry["approximate"] is True and entry["recall_at_10"] >= 0.98
    meta = json.loads((approx_bundle / PERSONAL_DIR / "personal_index.json").read_text())
    assert meta["index"]["recall_at_10"] == entry["recall_at_10"]

    approx = Recommender.load(approx_bundle)
    assert approx.engine.approximate is not None
    assert len(approx.engine.approximate) == len(approx.catalog)
    for user_id in exact.user_ids[:20]:
        want = exact.recommend_for_user(int(user_id), 10)
        got = approx.recommend_for_user(int(user_id), 10)
        assert [i.item_id for i in got.items] == [i.item_id for i in want.items]
    movie_ids = exact.embeddings.item_ids[exact.embeddings.item_ids > 0]
    ratings = [(int(i), 5.0) for i in movie_ids[:3]]
    assert [i.item_id for i in approx.recommend(ratings, 10).items] == [
        i.item_id for i in exact.recommend(ratings, 10).items
    ]
