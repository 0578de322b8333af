"""The serving engine over a real tiny bundle: similar, search, recommend, score, verification."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest

from recommender_lib.bundle.format import RESERVED_FIELDS, BundleError, read_manifest, write_bundle
from recommender_lib.engine.recommender import Recommender, UnknownTitleError, UnknownUserError
from recommender_lib.evaluation.metrics import ranking_metrics
from recommender_lib.evaluation.protocols import EngineRanking, catalogue_items, ranking_evaluation
from recommender_lib.index.content_index import SimilarityFilters
from recommender_lib.modeling.splits import release_ratings
from recommender_lib.modeling.two_tower.ranking_rule import UnknownRankingRuleError
from recommender_lib.modeling.two_tower.trained import META_FILE
from recommender_lib.registry.promotion import regression_failures, smoke_failures
from tests.support.tiny_bundle import build_tiny_bundle, tiny_warehouse
from tests.test_ranking_approximate import check_bundle_with_graph

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def warehouse(sample_mirror, tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    return tiny_warehouse(sample_mirror, tmp_path_factory.mktemp("tiny_warehouse"))


@pytest.fixture(scope="module")
def bundle(
    sample_mirror, warehouse: duckdb.DuckDBPyConnection, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return build_tiny_bundle(sample_mirror, tmp_path_factory.mktemp("tiny_bundle"), conn=warehouse)


@pytest.fixture(scope="module")
def rec(bundle: Path) -> Recommender:
    return Recommender.load(bundle)


def test_bundle_holds_every_catalogue_title(rec: Recommender) -> None:
    ids = rec.embeddings.item_ids
    assert (ids < 0).any() and (ids > 0).any()  # IMDb-only titles are served too
    assert rec.embeddings.vectors.shape[0] == len(rec.catalog) == len(rec.content)
    assert np.isfinite(rec.embeddings.vectors).all()
    np.testing.assert_allclose(np.linalg.norm(rec.embeddings.vectors, axis=1), 1.0, rtol=1e-4)
    assert rec.manifest["dagster_run_id"] == "test" and len(rec.version) == 16


def test_title_lookup_by_tconst_and_movie_id(rec: Recommender) -> None:
    row = rec.row(1)
    assert rec.row("1") == row and rec.title(row)["movie_id"] == 1
    tconst = rec.title(row)["tconst"]
    if tconst:
        assert rec.row(tconst) == row
    for bad in ("tt9999999999", "abc", -5, "0"):
        with pytest.raises(UnknownTitleError):
            rec.row(bad)


def test_similar_titles_share_genres_and_honour_filters(rec: Recommender) -> None:
    row = next(r for r in range(len(rec.catalog)) if len(rec.catalog.iloc[r]["genres"]) >= 2)
    ref = int(rec.embeddings.item_ids[row])
    ref = ref if ref > 0 else rec.title(row)["tconst"]
    genres = set(rec.title(row)["genres"])
    hits = rec.similar(ref, 10)
    assert len(hits) == 10 and row not in [r for r, _ in hits]
    assert all(genres & set(rec.title(r)["genres"]) for r, _ in hits[:3])
    only_series = rec.similar(ref, 5, SimilarityFilters(title_types=frozenset({"tvSeries"})))
    assert all(rec.title(r)["title_type"] == "tvSeries" for r, _ in only_series)


def test_search_finds_a_title_with_a_typo(rec: Recommender) -> None:
    title = rec.title(rec.row(1))["title"]
    typo = title[:2] + title[3:] if len(title) > 4 else title
    rows = [r for r, _ in rec.search(typo, 10)]
    assert rec.row(1) in rows


def test_recommend_from_ratings(rec: Recommender) -> None:
    ratings = [(1, 5.0), (2, 4.0), (3, 1.0)]
    result = rec.recommend(ratings, 10)
    assert result.strategy == "two_tower" and len(result.items) == 10
    ids = [i.item_id for i in result.items]
    assert not {1, 2, 3} & set(ids) and len(set(ids)) == 10
    assert all(0.5 <= i.predicted_rating <= 5.0 for i in result.items)
    scores = [i.score for i in result.items]  # the ranking rule's ordering key
    assert scores == sorted(scores, reverse=True)
    assert all(i.because in {1, 2} for i in result.items)  # a liked title, never the 1-star one
    # excluded titles and filters
    again = rec.recommend(ratings, 10, exclude=[ids[0]])
    assert ids[0] not in [i.item_id for i in again.items]
    recent = rec.recommend(ratings, 5, SimilarityFilters(min_year=2000))
    assert all((rec.title(rec.row_of(i.item_id))["year"] or 0) >= 2000 for i in recent.items)


def test_recommend_without_ratings_falls_back_to_popular(rec: Recommender) -> None:
    result = rec.recommend([], 5)
    assert result.strategy == "popular" and "popular" in result.note and len(result.items) == 5
    pops = [i.score for i in result.items]
    assert pops == sorted(pops, reverse=True)


def test_known_user_and_scores(rec: Recommender) -> None:
    user = int(rec.user_ids[0])
    seen = set(rec.history_items[rec.history_offsets[0] : rec.history_offsets[1]].tolist())
    result = rec.recommend_for_user(user, 10)
    assert len(result.items) == 10 and not seen & {i.item_id for i in result.items}
    with pytest.raises(UnknownUserError):
        rec.recommend_for_user(10**9, 5)
    scores = rec.score([(1, 5.0)], [2, 3, "2"])
    assert (
        scores.shape == (3,) and scores[0] == scores[2] and ((scores >= 0.5) & (scores <= 5)).all()
    )
    # the engine's predictions are the model's own predictions
    expected = rec.model.predict_from_ratings(
        __import__("pandas").DataFrame({"movie_id": [1], "rating": [5.0]}), np.array([2, 3])
    )
    np.testing.assert_allclose(scores[:2], expected, atol=1e-4)


def test_a_tampered_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    target = copy / "embeddings" / "item_embeddings.npz"
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="item_embeddings"):
        Recommender.load(copy)


def test_promotion_gates(rec: Recommender) -> None:
    assert smoke_failures(rec) == []
    champion = {"metric.P1.two_tower.rmse": "0.90", "metric.P1.two_tower.ndcg_at_10": "0.10"}
    same = dict(champion)
    assert regression_failures(same, champion, tolerance=0.0) == []
    worse = {"metric.P1.two_tower.rmse": "0.95", "metric.P1.two_tower.ndcg_at_10": "0.099"}
    failures = regression_failures(worse, champion, tolerance=0.02)
    assert len(failures) == 1 and "rmse" in failures[0]  # 0.099 is within 2 % of 0.10
    assert regression_failures(same, champion, tolerance=-0.01) != []  # must improve
    assert regression_failures(worse, {}, tolerance=0.0) == []  # nothing to compare with


def test_the_evaluation_and_the_api_rank_identically(
    rec: Recommender, warehouse: duckdb.DuckDBPyConnection
) -> None:
    """What `model_evaluation` measures (`EngineRanking`, the engine the evaluation calls) is
    what `recommend_for_user` serves, list for list, and so are the metrics."""
    history = release_ratings(warehouse)
    items = catalogue_items(warehouse)
    np.testing.assert_array_equal(items, rec.embeddings.item_ids)
    users = np.asarray(rec.user_ids[:40])
    seen = np.zeros((len(users), len(items)), dtype=bool)
    for r, user in enumerate(users):
        mine = history.loc[history["user_id"] == user, "movie_id"]
        seen[r, np.searchsorted(items, mine.to_numpy())] = True
    evaluated = EngineRanking.of(rec.model, items).positions(history, users, seen, 10)
    served = {int(u): [i.item_id for i in rec.recommend_for_user(int(u), 10).items] for u in users}
    for r, user in enumerate(users):
        assert items[evaluated[r]].tolist() == served[int(user)]
    # the metric of the evaluation equals the metric of the served lists
    relevant = history[history["user_id"].isin(users)].groupby("user_id").tail(3)
    rest = history.drop(relevant.index)
    offline = ranking_evaluation(rec.model, rest, relevant, items)
    ux = {u: rec.model.user_features(rest, np.array([u])) for u in users}
    online = {}
    for user in users:
        mine = rest[rest["user_id"] == user]
        rows = [rec.row_of(int(m)) for m in mine["movie_id"]]
        result = rec._personalised(ux[user], len(mine), 10, None, rows, mine)
        online[int(user)] = [i.item_id for i in result.items]
    rel = {int(u): set(g["movie_id"].tolist()) for u, g in relevant.groupby("user_id")}
    assert ranking_metrics(online, rel) == pytest.approx(offline)


def test_no_known_user_is_ever_recommended_a_rated_title(
    rec: Recommender, warehouse: duckdb.DuckDBPyConnection
) -> None:
    history = release_ratings(warehouse)
    assert len(rec.user_ids) == history["user_id"].nunique()
    assert len(rec.history_items) == len(history)  # every rating of the release, not a split
    for pos, user in enumerate(rec.user_ids.tolist()):
        rated = set(rec.history_items[rec.history_offsets[pos] : rec.history_offsets[pos + 1]])
        assert not rated & {i.item_id for i in rec.recommend_for_user(user, 10).items}
    user = int(rec.user_ids[0])
    mine = history[history["user_id"] == user]
    ratings = list(zip(mine["movie_id"].tolist(), mine["rating"].tolist(), strict=True))
    assert not set(mine["movie_id"]) & {i.item_id for i in rec.recommend(ratings, 10).items}


def test_the_bundle_carries_the_full_refit(
    rec: Recommender, warehouse: duckdb.DuckDBPyConnection
) -> None:
    history = release_ratings(warehouse)
    model = rec.manifest["model"]
    assert model["trained_on"]["kind"] == "full refit"
    assert model["trained_on"]["ratings"] == len(history) == rec.model.info["trained_on"]["ratings"]
    assert model["evaluated_on"]["kind"].startswith("evaluation split")
    assert model["evaluated_on"]["ratings"] < len(history)
    assert model["ranking_rule"]["kind"] == rec.model.ranking.kind
    assert rec.model.info["epochs_run"] == model["epochs"]
    assert rec.model.transform.train_end_ts == int(history["rating_ts"].max())


def test_scores_for_a_known_user_equal_scores_from_their_history(
    rec: Recommender, warehouse: duckdb.DuckDBPyConnection
) -> None:
    history = release_ratings(warehouse)
    user = int(rec.user_ids[3])
    mine = history[history["user_id"] == user]
    stored = rec.history_frame(user)
    assert len(stored) == len(mine)
    assert set(zip(stored["movie_id"], stored["rating"], stored["rating_ts"], strict=True)) == set(
        zip(mine["movie_id"], mine["rating"].astype("float32"), mine["rating_ts"], strict=True)
    )
    ratings = [
        (int(m), float(r), int(t))
        for m, r, t in zip(mine["movie_id"], mine["rating"], mine["rating_ts"], strict=True)
    ]
    candidates = [int(i) for i in rec.embeddings.item_ids[rec.embeddings.item_ids > 0][:25]]
    np.testing.assert_allclose(
        rec.score_for_user(user, candidates), rec.score(ratings, candidates), atol=1e-6
    )
    with pytest.raises(UnknownUserError):
        rec.score_for_user(10**9, candidates)


def test_a_bundle_with_an_unknown_ranking_rule_is_refused(bundle: Path, tmp_path: Path) -> None:
    parts = tmp_path / "parts"
    shutil.copytree(bundle, parts)
    meta_path = parts / "model" / META_FILE
    meta = json.loads(meta_path.read_text())
    meta["ranking"]["kind"] = "by_mood"
    meta_path.write_text(json.dumps(meta))
    manifest = {k: v for k, v in read_manifest(bundle).items() if k not in RESERVED_FIELDS}
    entries = {p.name: p for p in parts.iterdir() if p.name != "manifest.json"}
    rehashed = write_bundle(tmp_path / "bundle", entries, manifest)  # hashes valid, rule unknown
    with pytest.raises(UnknownRankingRuleError, match="by_mood"):
        Recommender.load(rehashed)


def test_a_bundle_with_the_personal_graph_serves_through_it(
    bundle: Path, rec: Recommender, tmp_path: Path
) -> None:
    check_bundle_with_graph(bundle, rec, tmp_path)  # tests/test_ranking_approximate.py
