"""Baselines and the evaluation harness: hand-computed cases, then the published anchors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recommender_lib.evaluation.metrics import ranking_metrics
from recommender_lib.evaluation.protocols import (
    RatingModel,
    catalogue_items,
    evaluate_all,
    evaluate_cold_start,
    evaluate_p1,
    ranking_evaluation,
)
from recommender_lib.index.top_k import top_k_indices
from recommender_lib.modeling import baselines
from recommender_lib.modeling.baselines import (
    BASELINE_NAMES,
    DampedBias,
    Ease,
    GlobalMean,
    MostPopular,
    fit_baselines,
)
from recommender_lib.modeling.splits import build_splits, load_split
from recommender_lib.warehouse import tables as warehouse

COLUMNS = ["user_id", "movie_id", "rating", "rating_ts"]


def _frame(rows: list[tuple[int, int, float]]) -> pd.DataFrame:
    return pd.DataFrame([(u, m, r, i) for i, (u, m, r) in enumerate(rows)], columns=COLUMNS)


# mu = (4 + 2 + 3) / 3 = 3
TRAIN = _frame([(1, 10, 4.0), (1, 20, 2.0), (2, 10, 3.0)])


def _pairs(rows: list[tuple[int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "movie_id"])


def test_baselines_follow_the_protocol() -> None:
    models = fit_baselines(TRAIN)
    assert [m.name for m in models] == list(BASELINE_NAMES)
    assert [type(m) for m in models] == [GlobalMean, DampedBias, MostPopular, Ease]
    for model in models:
        assert isinstance(model, RatingModel)
        assert model.predicts_ratings is (model.name != "ease")
    assert models[3].l2 == baselines.EASE_L2
    assert fit_baselines(TRAIN, ease_l2=3.0)[3].l2 == 3.0


@pytest.mark.parametrize("cls", [GlobalMean, DampedBias, MostPopular, Ease])
def test_empty_train_raises(cls: type) -> None:
    with pytest.raises(ValueError, match="empty"):
        cls().fit(TRAIN.iloc[:0])


def test_global_mean() -> None:
    model = GlobalMean().fit(TRAIN)
    assert model.predict(TRAIN, _pairs([(1, 10), (9, 99)])).tolist() == [3.0, 3.0]
    assert model.ranks_items is False
    with pytest.raises(RuntimeError):
        GlobalMean().predict(TRAIN, _pairs([(1, 10)]))


def test_damped_bias_hand_computed() -> None:
    model = DampedBias(item_lambda=1, user_lambda=1).fit(TRAIN)
    # b_10 = ((4-3) + (3-3)) / (2+1) = 1/3;  b_20 = (2-3) / (1+1) = -1/2
    assert model.item_bias.to_dict() == pytest.approx({10: 1 / 3, 20: -1 / 2})
    # b_u1 = ((4-3-1/3) + (2-3+1/2)) / (2+1) = (2/3 - 1/2) / 3 = 1/18
    # b_u2 = (3-3-1/3) / (1+1) = -1/6
    assert model.user_bias(TRAIN).to_dict() == pytest.approx({1: 1 / 18, 2: -1 / 6})
    pred = model.predict(TRAIN, _pairs([(1, 20), (2, 99), (9, 10)]))
    # user 1, movie 20: 3 - 1/2 + 1/18;  user 2, unknown movie: 3 - 1/6;
    # unknown user 9, movie 10: 3 + 1/3
    assert pred == pytest.approx([3 - 1 / 2 + 1 / 18, 3 - 1 / 6, 3 + 1 / 3])


def test_damped_bias_folds_in_a_cold_user_from_its_history() -> None:
    model = DampedBias(item_lambda=1, user_lambda=1).fit(TRAIN)
    revealed = _frame([(3, 10, 5.0)])
    # b_u3 = (5 - 3 - 1/3) / (1+1) = 5/6 -> movie 20: 3 - 1/2 + 5/6
    assert model.predict(revealed, _pairs([(3, 20)]))[0] == pytest.approx(3 - 1 / 2 + 5 / 6)
    # Without history, user 3 gets no offset.
    assert model.predict(TRAIN, _pairs([(3, 20)]))[0] == pytest.approx(2.5)
    # Predictions are clipped to the star range
    extreme = DampedBias(item_lambda=0, user_lambda=0).fit(
        _frame([(1, 1, 5.0), (1, 2, 5.0), (2, 1, 0.5), (2, 3, 5.0)])
    )
    pred = extreme.predict(_frame([(1, 1, 5.0), (1, 2, 5.0)]), _pairs([(1, 1), (1, 2), (1, 3)]))
    assert pred.min() >= 0.5 and pred.max() <= 5.0


def test_damped_bias_ranks_by_item_bias() -> None:
    model = DampedBias(item_lambda=1, user_lambda=1).fit(TRAIN)
    scores = model.score_catalogue(TRAIN, np.array([1, 2]), np.array([20, 99, 10]))
    # b_i: 20 -> -1/2, 99 (unknown) -> 0, 10 -> 1/3; every user has the same order
    assert top_k_indices(scores, 3).tolist() == [[2, 1, 0], [2, 1, 0]]
    assert scores[0, 2] - scores[1, 2] == pytest.approx(1 / 18 + 1 / 6)  # b_u1 - b_u2


def test_most_popular_ranking_and_shrunk_prediction() -> None:
    train = _frame(
        [(1, 30, 4.0), (2, 30, 2.0), (1, 20, 5.0), (2, 20, 1.0), (3, 10, 5.0), (3, 40, 5.0),
         (4, 40, 3.0), (5, 50, 1.0)]
    )  # fmt: skip
    model = MostPopular(item_lambda=2).fit(train)
    # counts: 20, 30, 40 -> 2; 10, 50 -> 1; 60 -> 0.  Means: 20 -> 3, 30 -> 3, 40 -> 4,
    # 10 -> 5, 50 -> 1.  Order: 40 (count 2, mean 4), 20 and 30 (count 2, mean 3: lower id
    # first), 10 (count 1, mean 5), 50, then the unrated 60.
    catalogue = np.array([60, 50, 40, 30, 20, 10])  # deliberately not sorted
    assert catalogue[model.popularity_order(catalogue)].tolist() == [40, 20, 30, 10, 50, 60]
    scores = model.score_catalogue(train, np.array([1]), catalogue)
    assert catalogue[top_k_indices(scores, 6)[0]].tolist() == [40, 20, 30, 10, 50, 60]
    # mu = 26 / 8 = 3.25; movie 40: (2*4 + 2*3.25) / (2+2) = 3.625; unknown movie: mu
    assert model.predict(train, _pairs([(1, 40), (1, 60)])) == pytest.approx([3.625, 3.25])


# EASE. Co-rating structure: users 1-4 rate {10, 20}, users 5-7 rate {30, 40}, user 8 rates
# {10, 30}; movie 50 is rated by user 1 only.
EASE_TRAIN = _frame(
    [(u, m, 4.0) for u in (1, 2, 3, 4) for m in (10, 20)]
    + [(u, m, 1.0) for u in (5, 6, 7) for m in (30, 40)]
    + [(8, 10, 3.0), (8, 30, 5.0), (1, 50, 2.0)]
)


def _ease_reference(train: pd.DataFrame, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """(movie ids, B) computed directly: X binary, P = inv(XᵀX + λI), B = I - P / diag(P)."""
    movies = np.sort(train["movie_id"].unique())
    users = np.sort(train["user_id"].unique())
    x = np.zeros((len(users), len(movies)))
    x[np.searchsorted(users, train["user_id"]), np.searchsorted(movies, train["movie_id"])] = 1
    p = np.linalg.inv(x.T @ x + l2 * np.eye(len(movies)))
    b = np.eye(len(movies)) - p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)  # already 0 up to rounding
    return movies, b


@pytest.mark.parametrize("float32", [False, True], ids=["float64", "float32"])
def test_ease_closed_form_matches_numpy(float32: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if float32:
        monkeypatch.setattr(baselines, "EASE_FLOAT32_ABOVE", 0)
    # a repeated (user, movie) row and any star value still make a single 1
    train = pd.concat([EASE_TRAIN, _frame([(1, 10, 0.5)])], ignore_index=True)
    model = Ease(l2=2.0).fit(train)
    movies, reference = _ease_reference(EASE_TRAIN, 2.0)
    assert model.items.tolist() == movies.tolist()
    assert model.weights.dtype == (np.float32 if float32 else np.float64)
    assert model.weights == pytest.approx(reference, abs=1e-6 if float32 else 1e-12)
    assert (np.diag(model.weights) == 0).all()
    # scores are x_u · B with x_u from the history given: user 8 knows {10, 30}
    scores = model.score_catalogue(EASE_TRAIN, np.array([8]), movies)
    assert scores.dtype == np.float64
    x8 = np.isin(movies, [10, 30]).astype(float)
    assert scores[0] == pytest.approx(x8 @ reference, abs=1e-6 if float32 else 1e-12)


def test_ease_scores_come_from_the_history_items() -> None:
    model = Ease(l2=1.0).fit(EASE_TRAIN)
    catalogue = np.array([50, 40, 30, 20, 10])  # deliberately not sorted
    # user 1 is known to the training matrix, user 9 is not: only `history` matters
    history = _frame([(1, 30, 5.0), (9, 10, 1.0)])
    scores = model.score_catalogue(history, np.array([9, 1]), catalogue)
    assert scores.shape == (2, 5)
    top = top_k_indices(scores, 5, exclude=np.isin(catalogue, [10])[None, :] & [[True], [False]])
    assert catalogue[top[0, 0]] == 20  # co-rated with 10 by four users
    assert catalogue[top[1, 0]] == 40  # 30 itself aside (it scores 0: diag(B) = 0)
    assert scores[1, 2] == 0.0
    # the same users with an empty history: nothing to go on, all-equal (zero) scores
    empty = model.score_catalogue(history.iloc[:0], np.array([9, 1]), catalogue)
    assert (empty == 0).all()
    # user order is the caller's; a user absent from `history` gets zeros too
    both = model.score_catalogue(history, np.array([1, 7, 9]), catalogue)
    assert both[0] == pytest.approx(scores[1]) and both[2] == pytest.approx(scores[0])
    assert (both[1] == 0).all()


def test_ease_unknown_items_rank_last() -> None:
    model = Ease(l2=1.0).fit(EASE_TRAIN)
    catalogue = np.array([99, 10, 20, 77, 30, 40, 50])  # 77 and 99 were never rated
    history = _frame([(1, 10, 4.0), (1, 99, 4.0), (2, 30, 3.0), (2, 40, 3.0)])
    scores = model.score_catalogue(history, np.array([1, 2]), catalogue)
    unknown = np.isin(catalogue, [77, 99])
    for row in scores:
        assert np.isfinite(row).all()
        assert row[unknown].max() < row[~unknown].min()
        assert row[unknown].tolist() == [row[~unknown].min() - 1] * 2
    # an unknown history item adds nothing: user 1 scores as if it had rated 10 alone
    alone = model.score_catalogue(_frame([(1, 10, 4.0)]), np.array([1]), catalogue)
    assert alone[0] == pytest.approx(scores[0])


def test_ease_keeps_the_most_rated_items_when_capped() -> None:
    # rating counts: 10 -> 5 (users 1-4, 8), 20 -> 4, 30 -> 4 (users 5-8), 40 -> 3, 50 -> 1.
    # Two items: 10, then 20 (tied with 30 at 4 ratings: the lower id wins).
    model = Ease(l2=1.0, max_items=2).fit(EASE_TRAIN)
    assert model.items.tolist() == [10, 20]
    _, reference = _ease_reference(EASE_TRAIN[EASE_TRAIN["movie_id"].isin([10, 20])], 1.0)
    assert model.weights == pytest.approx(reference)
    # the dropped items rank last, below the kept ones, like never-rated items
    catalogue = np.array([40, 20, 50, 10, 30])
    scores = model.score_catalogue(EASE_TRAIN, np.array([8]), catalogue)[0]
    dropped = np.isin(catalogue, [30, 40, 50])
    assert (scores[dropped] == scores[~dropped].min() - 1).all()


def test_ease_predicts_no_stars() -> None:
    assert Ease.predicts_ratings is False and Ease.ranks_items is True
    with pytest.raises(RuntimeError):
        Ease().predict(TRAIN, _pairs([(1, 10)]))
    with pytest.raises(RuntimeError):
        Ease().score_catalogue(TRAIN, np.array([1]), np.array([10]))
    model = Ease().fit(TRAIN)
    pred = model.predict(TRAIN, _pairs([(1, 10), (1, 20), (9, 99)]))
    assert pred.shape == (3,) and np.isnan(pred).all()
    with pytest.raises(ValueError):
        Ease(l2=0.0)
    with pytest.raises(ValueError):
        Ease(max_items=0)


def test_evaluate_p1_hand_computed() -> None:
    history = _frame([(1, 10, 4.0), (1, 20, 2.0), (2, 10, 3.0)])
    test = _frame([(1, 30, 5.0), (1, 40, 1.0), (2, 20, 4.0)])
    catalogue = np.array([10, 20, 30, 40, 50])
    model = MostPopular(item_lambda=1).fit(history)
    # popularity: 10 (2 ratings), 20 (1), then unrated 30, 40, 50 by id.
    # user 1 (history 10, 20 excluded): top-2 = [30, 40], relevant {30, 40}: NDCG 1, recall 1
    # user 2 (history 10 excluded):     top-2 = [20, 30], relevant {20}:     NDCG 1, recall 1
    got = evaluate_p1(model, history, test, catalogue, k=2)
    assert got["ndcg@2"] == pytest.approx(1.0) and got["recall@2"] == pytest.approx(1.0)
    # k=1: user 1 gets [30] (1 of 2 relevant -> ideal has min(1, 2) = 1 hit: NDCG 1, recall 1)
    got = evaluate_p1(model, history, test, catalogue, k=1)
    assert got["ndcg@1"] == 1.0 and got["recall@1"] == 1.0
    # predictions: mu = 3; movie 30/40 unknown -> 3; movie 20: (1*2 + 1*3)/(1+1) = 2.5
    # errors: 5-3=2, 1-3=-2, 4-2.5=1.5 -> rmse sqrt((4+4+2.25)/3), mae (2+2+1.5)/3
    assert got["rmse"] == pytest.approx(math.sqrt(10.25 / 3))
    assert got["mae"] == pytest.approx(5.5 / 3)
    assert got["n_test_ratings"] == 3 and got["n_test_users"] == 2
    gm = evaluate_p1(GlobalMean().fit(history), history, test, catalogue, k=2)
    assert math.isnan(gm["ndcg@2"]) and math.isnan(gm["recall@2"])


def _random_split(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(1, 41):
        movies = rng.choice(np.arange(1, 121), size=int(rng.integers(5, 30)), replace=False)
        rows += [(user, int(m), float(rng.integers(1, 11)) / 2) for m in movies]
    frame = _frame(rows)
    is_test = rng.random(len(frame)) < 0.25
    return frame[~is_test], frame[is_test], np.arange(1, 131)  # 121..130 never rated


@pytest.mark.parametrize("model", [DampedBias(), MostPopular(), Ease(l2=5.0)], ids=lambda m: m.name)
def test_batched_ranking_matches_a_brute_force_reference(model: RatingModel) -> None:
    history, test, catalogue = _random_split()
    model.fit(history)
    batched = ranking_evaluation(model, history, test, catalogue, k=10, batch_users=7)
    single = ranking_evaluation(model, history, test, catalogue, k=10, batch_users=1000)
    assert batched == pytest.approx(single)
    # brute force: full stable sort per user, drop history items, then the metric functions
    users = np.unique(test["user_id"])
    scores = model.score_catalogue(history, users, catalogue)
    top = {}
    for row, user in enumerate(users):
        seen = set(history.loc[history["user_id"] == user, "movie_id"])
        order = np.lexsort((np.arange(len(catalogue)), -scores[row]))
        top[int(user)] = [int(catalogue[i]) for i in order if catalogue[i] not in seen][:10]
    relevant = {int(u): set(g["movie_id"]) for u, g in test.groupby("user_id")}
    reference = ranking_metrics(top, relevant, k=10)
    assert batched["ndcg@10"] == pytest.approx(reference["ndcg@10"])
    assert batched["recall@10"] == pytest.approx(reference["recall@10"])


def test_cold_start_uses_only_revealed_history_and_common_scored_rows() -> None:
    train = _frame([(1, m, 4.0 if m % 2 else 2.0) for m in range(1, 21)])
    cold = _frame([(9, m, 5.0 if m % 2 else 1.0) for m in range(1, 16)])
    cold["reveal_rank"] = np.arange(1, 16)

    seen: list[tuple[int, int]] = []

    class Spy(DampedBias):
        def predict(self, history: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
            seen.append((len(history), len(pairs)))
            return super().predict(history, pairs)

    spy = Spy(item_lambda=1, user_lambda=1).fit(train)
    got = evaluate_cold_start(spy, cold, np.arange(1, 31), ks=(3, 5, 10))
    # history = the k revealed rows; the scored rows are reveal_rank 11..15 for every k
    assert seen == [(3, 5), (5, 5), (10, 5)]
    assert got["n_cold_scored_ratings"] == 5 and got["n_cold_users"] == 1
    for k in (3, 5, 10):
        assert {f"rmse_k{k}", f"mae_k{k}", f"ndcg@10_k{k}", f"recall@10_k{k}"} <= set(got)
    # b_i favours the odd movies, 5, 7, 9 included. They are unrevealed for k=3 but rank <= 10,
    # so they are excluded for every k: k=3 ranks the same candidates as k=10 and, since the
    # ranking here depends on b_i only, gets the same metrics (it would lose hits otherwise)
    assert got["ndcg@10_k3"] == got["ndcg@10_k10"]


def test_evaluate_all_one_row_per_model() -> None:
    history, test, catalogue = _random_split(1)
    table = evaluate_all(fit_baselines(history), catalogue, history=history, test=test)
    assert table["model"].tolist() == list(BASELINE_NAMES)
    assert {"rmse", "mae", "ndcg@10", "recall@10", "eval_seconds"} <= set(table.columns)
    got = table.set_index("model")
    # EASE ranks but predicts no stars; the global mean predicts stars but does not rank
    assert got.loc["ease", ["rmse", "mae"]].isna().all()
    assert got.loc["ease", ["ndcg@10", "recall@10"]].notna().all()
    assert got.loc["global_mean", ["rmse", "mae"]].notna().all()
    with pytest.raises(ValueError):
        evaluate_all(fit_baselines(history), catalogue, history=history)


@pytest.mark.shared_data
def test_real_movielens_p1_anchors(shared_movielens: Path) -> None:
    """docs/architecture.md §6 reference points on ml-latest-small, P1, baselines fit on
    train+validation."""
    conn = warehouse.connect(":memory:")
    release = shared_movielens / "ml-latest-small"
    warehouse.load_movielens_ratings(conn, release)
    warehouse.load_movielens_movies(conn, release)
    build_splits(conn)
    history = load_split(conn, "P1", "train+validation")
    test = load_split(conn, "P1", "test")
    catalogue = catalogue_items(conn)
    assert len(catalogue) == 9_742
    table = evaluate_all(fit_baselines(history), catalogue, history=history, test=test)
    got = table.set_index("model")
    assert got.loc["global_mean", "rmse"] == pytest.approx(1.068, abs=0.005)
    assert got.loc["damped_bias", "rmse"] == pytest.approx(0.914, abs=0.005)
    assert got.loc["most_popular", "ndcg@10"] == pytest.approx(0.089, abs=0.005)
    assert got.loc["most_popular", "recall@10"] == pytest.approx(0.082, abs=0.005)
    # EASE at the default λ (the numbers its docstring reports), far above the popularity list
    assert got.loc["ease", "ndcg@10"] == pytest.approx(0.1306, abs=0.005)
    assert got.loc["ease", "recall@10"] == pytest.approx(0.1323, abs=0.005)
    assert math.isnan(got.loc["ease", "rmse"]) and math.isnan(got.loc["ease", "mae"])
    # the bias baseline must beat the global mean on ratings, as it does in the anchors
    assert got.loc["damped_bias", "mae"] < got.loc["global_mean", "mae"]
