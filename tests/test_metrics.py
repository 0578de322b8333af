"""Metrics on hand-computed cases (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse

from recommender_lib.evaluation.metrics import (
    hit_metrics,
    mae,
    ndcg_at_k,
    ranking_metrics,
    recall_at_k,
    rmse,
)
from recommender_lib.index.top_k import PAD, top_k_indices

LOG2_3 = math.log2(3)  # discount of the 2nd position is 1/log2(3) ≈ 0.6309
LOG2_5 = math.log2(5)  # discount of the 4th position is 1/log2(5) ≈ 0.4307


def test_rmse_and_mae() -> None:
    # errors 0, 0, -2: squared mean 4/3 -> rmse sqrt(4/3) ≈ 1.1547; absolute mean 2/3
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))
    assert mae([1, 2, 3], [1, 2, 5]) == pytest.approx(2 / 3)
    assert math.isnan(rmse([], []))
    with pytest.raises(ValueError):
        rmse([1, 2], [1])


def test_ndcg_and_recall_hand_computed() -> None:
    ranked, relevant = [10, 20, 30, 40], {20, 40}
    # k=3: one hit at position 2 -> DCG 1/log2(3); ideal has min(3, 2) = 2 hits:
    # 1 + 1/log2(3) -> NDCG = 0.6309 / 1.6309 ≈ 0.3869; recall 1 / min(3, 2) = 0.5
    assert ndcg_at_k(ranked, relevant, k=3) == pytest.approx((1 / LOG2_3) / (1 + 1 / LOG2_3))
    assert recall_at_k(ranked, relevant, k=3) == pytest.approx(0.5)
    # k=4: hits at positions 2 and 4 -> DCG 1/log2(3) + 1/log2(5) ≈ 1.0616 -> NDCG ≈ 0.6509;
    # recall 2 / 2 = 1
    assert ndcg_at_k(ranked, relevant, k=4) == pytest.approx(
        (1 / LOG2_3 + 1 / LOG2_5) / (1 + 1 / LOG2_3)
    )
    assert recall_at_k(ranked, relevant, k=4) == 1.0
    # More relevant items than k: the ideal is k hits, so a perfect top-2 scores 1 on both,
    # and recall divides by min(2, 5) = 2, not 5.
    assert ndcg_at_k([1, 2], {1, 2, 3, 4, 5}, k=2) == pytest.approx(1.0)
    assert recall_at_k([1, 2], {1, 2, 3, 4, 5}, k=2) == 1.0
    # No hit at all
    assert ndcg_at_k([7, 8], {1}, k=2) == 0.0
    # A repeated item counts once: [5, 5] vs {5}: DCG 1 (not 1 + 0.63), ideal 1 -> 1.0
    assert ndcg_at_k([5, 5], {5}, k=2) == pytest.approx(1.0)
    assert recall_at_k([5, 5], {5}, k=2) == 1.0
    # Nothing relevant: undefined
    assert math.isnan(ndcg_at_k([1, 2], set()))
    assert math.isnan(recall_at_k([1, 2], set()))


def test_top_k_orders_and_breaks_ties_by_lower_index() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.9, 0.2], [3.0, 3.0, 3.0, 3.0, 3.0]])
    # row 0: 0.9 at 1 and 3 (tie -> 1 first), then 0.5 at 2; row 1: all tied -> 0, 1, 2
    assert top_k_indices(scores, 3).tolist() == [[1, 3, 2], [0, 1, 2]]
    # excluding column 1 in row 0 and columns 0, 2 in row 1
    expected = [[3, 2, 4], [1, 3, 4]]
    assert top_k_indices(scores, 3, exclude=[np.array([1]), np.array([0, 2])]).tolist() == expected
    mask = np.zeros_like(scores, dtype=bool)
    mask[0, 1] = mask[1, 0] = mask[1, 2] = True
    assert top_k_indices(scores, 3, exclude=mask).tolist() == expected
    assert top_k_indices(scores, 3, exclude=scipy.sparse.csr_matrix(mask)).tolist() == expected
    assert scores[0, 1] == 0.9  # the input is not modified


def test_top_k_pads_and_ranks_nan_last() -> None:
    scores = np.array([[np.nan, 1.0, -5.0, 2.0]])
    # candidates after excluding column 3: 1 (1.0), then 2 (-5.0), then NaN (0)
    assert top_k_indices(scores, 3, exclude=[np.array([3])]).tolist() == [[1, 2, 0]]
    # only three candidates for k = 4 (and for k larger than the catalogue): padded
    assert top_k_indices(scores, 4, exclude=[np.array([3])]).tolist() == [[1, 2, 0, PAD]]
    assert top_k_indices(scores, 10, exclude=[np.array([3])]).tolist() == [[1, 2, 0, PAD]]
    # -inf and NaN are still candidates (tied below every finite score), excluded items are not
    assert top_k_indices(np.array([[-np.inf, np.nan, 0.0]]), 3, exclude=[[2]]).tolist() == [
        [0, 1, PAD]
    ]


def test_top_k_matches_a_full_stable_sort() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(200, 50)).astype(float)  # many ties
    mask = rng.random((200, 50)) < 0.3
    got = top_k_indices(scores, 10, exclude=mask)
    cols = np.arange(50)
    for r in range(200):
        order = np.lexsort((cols, -np.where(mask[r], -np.inf, scores[r])))
        want = [c for c in order if not mask[r, c]][:10]
        assert got[r].tolist() == want + [PAD] * (10 - len(want))


def test_ranking_metrics_average_users_with_relevant_items() -> None:
    top = {1: [10, 20, 30], 2: [40, 50, 60], 3: [70]}
    relevant = {1: {20}, 2: {99}, 3: set(), 4: {70}}
    # user 1: hit at position 2, one relevant -> NDCG 1/log2(3) ≈ 0.6309, recall 1
    # user 2: no hit -> 0, 0;  user 3: nothing relevant -> skipped;  user 4: no list -> 0, 0
    # means over users 1, 2, 4: NDCG 0.6309 / 3 ≈ 0.2103, recall 1/3
    got = ranking_metrics(top, relevant, k=3)
    assert got["ndcg@3"] == pytest.approx((1 / LOG2_3) / 3)
    assert got["recall@3"] == pytest.approx(1 / 3)
    as_array = np.array([[10, 20, 30], [40, 50, 60], [70, PAD, PAD]])
    assert ranking_metrics(as_array, relevant, k=3, user_ids=[1, 2, 3]) == got
    assert math.isnan(ranking_metrics(top, {1: set()})["ndcg@10"])


def test_hit_metrics_agree_with_the_per_user_functions() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        n_rel = int(rng.integers(1, 15))
        relevant = set(rng.choice(30, size=n_rel, replace=False).tolist())
        ranked = rng.permutation(30)[:10].tolist()
        hits = np.array([[item in relevant for item in ranked]])
        vec = hit_metrics(hits, np.array([n_rel]), k=10)
        assert vec["ndcg@10"][0] == pytest.approx(ndcg_at_k(ranked, relevant, 10))
        assert vec["recall@10"][0] == pytest.approx(recall_at_k(ranked, relevant, 10))
    assert np.isnan(hit_metrics(np.zeros((1, 10), bool), np.array([0]))["ndcg@10"][0])
