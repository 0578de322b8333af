"""The one ranking function: rules, exclusions, blocking, the validation search, persistence.

The engine is exercised here with a small linear stand-in for the Keras towers (same attributes
as `TrainedTwoTower`), so every expected list can be computed by hand; the real model goes
through the same engine in tests/test_two_tower.py and tests/test_recommender.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from recommender_lib.engine import ranking
from recommender_lib.engine.ranking import RankingEngine
from recommender_lib.evaluation import rule_choice
from recommender_lib.evaluation.rule_choice import RankingProbe, choose_rule
from recommender_lib.index.top_k import PAD
from recommender_lib.modeling.two_tower.ranking_rule import RankingRule, UnknownRankingRuleError


class LinearTowers:
    """u = the feature row's last two columns; stars = baseline + u·v (like the fusion head)."""

    temperature = 0.5
    transform = SimpleNamespace(global_mean=3.0, user_bias_column=0)

    def user_embeddings(self, user_x: np.ndarray) -> np.ndarray:
        return np.asarray(user_x[:, 1:3], dtype=np.float32)

    def head_predict(self, u: np.ndarray, v: np.ndarray, base: np.ndarray) -> np.ndarray:
        return np.asarray(base, np.float64) + (u * v).sum(axis=1)


def make_engine(n_items: int = 40, seed: int = 0, rule: RankingRule | None = None):
    rng = np.random.default_rng(seed)
    return RankingEngine(
        item_ids=np.arange(1, n_items + 1, dtype=np.int64),
        vectors=rng.normal(size=(n_items, 2)).astype(np.float32),
        biases=rng.normal(scale=0.1, size=n_items).astype(np.float32),
        log_popularity=np.log1p(rng.integers(0, 100, n_items)).astype(np.float32),
        item_bias=rng.normal(scale=0.3, size=n_items),
        model=LinearTowers(),  # type: ignore[arg-type]
        rule=rule or RankingRule(),
    )


def users(n: int = 6, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float32)


def brute_force(scores: np.ndarray, banned: set[int], k: int) -> list[int]:
    order = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in banned]
    return order[:k]


def test_retrieval_rank_is_a_stable_sort_without_excluded_rows() -> None:
    engine = make_engine(rule=RankingRule(pop_weight=0.3, cold_pop_weight=1.0))
    ux, n = users(), np.array([1, 3, 10, 50, 0, 7])
    excluded = [np.array([0, 5]), np.array([], dtype=np.int64), np.array([2]), [], [39], [1, 2]]
    ranked = engine.rank(ux, n, 10, excluded=excluded)
    scores = engine.retrieval(engine.user_vectors(ux), n, engine.rule)
    for r in range(len(ux)):
        expected = brute_force(scores[r], set(np.asarray(excluded[r]).tolist()), 10)
        assert ranked.rows[r].tolist() == expected
        np.testing.assert_allclose(ranked.scores[r], scores[r, expected], rtol=1e-6)
    assert np.isfinite(ranked.stars).all()


def test_popularity_weight_grows_as_the_history_shrinks() -> None:
    rule = RankingRule(pop_weight=0.5, cold_pop_weight=2.0, cold_half=10.0)
    w = rule.popularity_weight(np.array([0, 10, 90]))
    np.testing.assert_allclose(w, [2.5, 1.5, 0.7])


def test_allowed_mask_and_padding() -> None:
    engine = make_engine(n_items=12)
    allowed = np.zeros(12, dtype=bool)
    allowed[[2, 4, 6]] = True
    ranked = engine.rank(users(2), [5, 5], 5, excluded=[[4], []], allowed=allowed)
    assert set(ranked.rows[0][:2].tolist()) == {2, 6} and (ranked.rows[0][2:] == PAD).all()
    assert set(ranked.rows[1][:3].tolist()) == {2, 4, 6} and (ranked.rows[1][3:] == PAD).all()
    assert np.isnan(ranked.stars[0][2:]).all() and np.isfinite(ranked.stars[0][:2]).all()


def test_stars_in_window_and_blend_reorder_the_retrieval_window() -> None:
    ux = users(3)
    n = np.array([4, 4, 4])
    for rule in (
        RankingRule(kind="stars_in_window", window=8),
        RankingRule(kind="blend", window=8, star_weight=0.7),
    ):
        engine = make_engine(rule=rule)
        u = engine.user_vectors(ux)
        ranked = engine.rank(ux, n, 5)
        window = engine.rank(ux, n, 8, rule=RankingRule()).rows
        stars = engine.stars(ux, u, window)
        retrieval = np.take_along_axis(engine.retrieval(u, n, rule), window, axis=1)
        key = stars if rule.kind == "stars_in_window" else retrieval + 0.7 * stars
        for r in range(3):
            expected = window[r][np.argsort(-key[r], kind="stable")][:5]
            assert ranked.rows[r].tolist() == expected.tolist()
            if rule.kind == "stars_in_window":
                np.testing.assert_allclose(ranked.stars[r], np.sort(stars[r])[::-1][:5])


def test_blocks_give_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(n_items=50, rule=RankingRule(kind="blend", window=12, star_weight=1.0))
    ux, n = users(9), np.arange(9)
    excluded = np.random.default_rng(4).random((9, 50)) < 0.2
    whole = engine.rank(ux, n, 7, excluded=excluded)
    monkeypatch.setattr(ranking, "SCORE_BLOCK_CELLS", 50 * 2)  # two users per block
    blocked = engine.rank(ux, n, 7, excluded=excluded)
    np.testing.assert_array_equal(whole.rows, blocked.rows)
    np.testing.assert_array_equal(whole.stars, blocked.stars)
    assert not (excluded[np.arange(9)[:, None], whole.rows]).any()


def test_rule_round_trip_and_unknown_rules_are_refused() -> None:
    rule = RankingRule(kind="blend", pop_weight=0.75, cold_pop_weight=2.0, star_weight=0.5)
    assert RankingRule.from_dict(rule.to_dict()) == rule
    assert "blend" in rule.describe() and "0.5" in rule.describe()
    with pytest.raises(UnknownRankingRuleError, match="unknown ranking rule 'by_mood'"):
        RankingRule.from_dict({**rule.to_dict(), "kind": "by_mood"})
    with pytest.raises(UnknownRankingRuleError, match="unknown fields"):
        RankingRule.from_dict({**rule.to_dict(), "diversity": 0.3})


def test_choose_rule_finds_the_signal_on_validation() -> None:
    """When the held-out titles are the popular ones, the search raises the popularity weight;
    the cold-start boost is only taken when short histories gain from it."""
    engine = make_engine(n_items=60, seed=3)
    popular = np.argsort(-engine.log_popularity, kind="stable")
    relevant = [popular[:5] for _ in range(20)]
    probe = RankingProbe(users(20, seed=5), np.full(20, 30.0), [np.zeros(0, int)] * 20, relevant)
    cold = RankingProbe(users(20, seed=6), np.full(20, 1.0), [np.zeros(0, int)] * 20, relevant)
    rule, tried = choose_rule(engine, probe, [cold])
    assert rule.pop_weight > 0
    assert probe.ndcg(engine, rule) > probe.ndcg(engine, RankingRule(pop_weight=0.0))
    assert len(tried) >= len(rule_choice.POP_WEIGHTS) + len(rule_choice.COLD_POP_WEIGHTS)


def test_popularity_weight_follows_the_one_standard_error_rule() -> None:
    """Of the weights within one standard error of the best mean NDCG, the largest is taken."""
    engine = make_engine(n_items=60, seed=8)
    rng = np.random.default_rng(9)
    relevant = [rng.choice(60, 4, replace=False) for _ in range(40)]
    probe = RankingProbe(users(40, seed=10), np.full(40, 12.0), [np.zeros(0, int)] * 40, relevant)
    rule, _ = choose_rule(engine, probe)
    values = {
        w: probe.ndcg_values(engine, RankingRule(pop_weight=w)) for w in rule_choice.POP_WEIGHTS
    }
    best = max(values, key=lambda w: (values[w].mean(), -w))
    se = values[best].std(ddof=1) / np.sqrt(len(values[best]))
    expected = max(w for w, v in values.items() if v.mean() >= values[best].mean() - se)
    assert rule.pop_weight == expected


def test_rank_rules_gives_each_rules_whole_catalogue_ranking() -> None:
    """`rank_rules` (one pass, each rule ordering only the rows its window bound keeps) equals
    `rank` under each rule of a validation-like grid, exclusions and short catalogues included;
    `ndcg_values_of_rules` (the rule choice) scores exactly those lists."""
    rng = np.random.default_rng(12)
    engine = make_engine(n_items=3000, seed=11)
    rated = rng.random(3000) < 0.05  # mostly titles nobody rated, as in the whole-IMDb scope
    engine.log_popularity = np.where(rated, engine.log_popularity, 0).astype(np.float32)
    n_users = 30
    seen = [rng.choice(3000, rng.integers(0, 40), replace=False) for _ in range(n_users)]
    relevant = [rng.choice(3000, 5, replace=False) for _ in range(n_users)]
    n = rng.integers(1, 200, n_users).astype(float)
    probe = RankingProbe(users(n_users, seed=13), n, seen, relevant).embedded(engine)
    rules = [RankingRule(pop_weight=w, cold_pop_weight=c) for w in (0.0, 1.5) for c in (0, 8)]
    rules += [RankingRule(kind="stars_in_window", window=20, pop_weight=0.5)]
    rules += [RankingRule(kind="blend", star_weight=1.0, pop_weight=0.25, cold_pop_weight=2)]
    rules += [RankingRule(pop_weight=0.5), RankingRule(kind="blend", pop_weight=0.5)]  # shared w
    together = engine.rank_rules(probe.user_x, n, 10, rules, excluded=seen, u=probe.u)
    for rule, ranked in zip(rules, together, strict=True):
        alone = engine.rank(probe.user_x, n, 10, excluded=seen, rule=rule)
        np.testing.assert_array_equal(ranked.rows, alone.rows)
        np.testing.assert_array_equal(ranked.scores, alone.scores)
        np.testing.assert_array_equal(ranked.stars, alone.stars)
    for rule, values in zip(rules, probe.ndcg_values_of_rules(engine, rules), strict=True):
        np.testing.assert_array_equal(values, probe.ndcg_values(engine, rule))
    few = [np.arange(2995)] * n_users  # fewer rows left than the window: PAD, as `rank` does
    short = engine.rank_rules(probe.user_x, n, 10, rules, excluded=few)
    for ranked, rule in zip(short, rules, strict=True):
        alone = engine.rank(probe.user_x, n, 10, excluded=few, rule=rule)
        np.testing.assert_array_equal(ranked.rows, alone.rows)
