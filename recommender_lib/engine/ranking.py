"""The one ranking function of the platform: what the API serves is what the evaluation measures.

Every personalised list — `GET /movielens-users/{id}/recommendations`, `POST /recommendations`,
the P1/P2 evaluation of `model_evaluation`, the rule search on validation — comes out of
`RankingEngine.rank`, which orders the catalogue rows of one or many users by a `RankingRule`:

    retrieval(u, i) = u·v_i / τ + b_i + w(n) · log(1 + c_i)
    w(n)            = pop_weight + cold_pop_weight · cold_half / (n + cold_half)

(u: user-tower output, v_i / b_i: item-tower embedding and ranking bias, c_i: the title's
ratings in the model's training data, n: how many ratings the user has). The popularity weight
grows as the history shrinks, so a user with one or three ratings is pulled toward the popular
list and a long history is ranked by taste. The rule's `kind` then orders the candidates:

* ``retrieval`` — by the retrieval score;
* ``stars_in_window`` — the top `window` by retrieval, re-ordered by predicted stars;
* ``blend`` — the top `window` by retrieval, ordered by retrieval + `star_weight` · stars.

Ties go to the lower catalogue row. The rule (`recommender_lib.modeling.two_tower.ranking_rule`)
and its constants are chosen on validation (`recommender_lib.evaluation.rule_choice.choose_rule`),
saved with the model and the bundle, and refused at load when unknown. Predicted stars (the
fusion head) come with every ranked row whatever the rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from recommender_lib.index.content_index import top_k
from recommender_lib.index.top_k import PAD, top_k_indices
from recommender_lib.modeling.baselines import MAX_STARS, MIN_STARS
from recommender_lib.modeling.features.transform import baseline_prediction
from recommender_lib.modeling.two_tower.ranking_rule import RankingRule

if TYPE_CHECKING:
    from recommender_lib.modeling.two_tower.trained import TrainedTwoTower

SCORE_BLOCK_CELLS = 1 << 24  # users x items scores held at once while ranking a batch


@dataclass(frozen=True)
class Ranked:
    """Top-k of each ranked user: catalogue rows (PAD where fewer), scores, predicted stars."""

    rows: np.ndarray  # int64 (n_users, k)
    scores: np.ndarray  # float64 (n_users, k): the rule's ordering score
    stars: np.ndarray  # float64 (n_users, k): predicted stars (NaN at PAD)


@dataclass
class RankingEngine:
    """A trained two-tower model's ranking over one catalogue (rows = `item_ids` order)."""

    item_ids: np.ndarray  # int64 ascending
    vectors: np.ndarray  # float32 (n_items, d): item-tower embeddings
    biases: np.ndarray  # float32 (n_items,): item-tower ranking bias
    log_popularity: np.ndarray  # float32 (n_items,): log(1 + training ratings of the title)
    item_bias: np.ndarray  # float64 (n_items,): damped item bias (the head's baseline)
    model: TrainedTwoTower
    rule: RankingRule

    @classmethod
    def from_model(
        cls,
        model: TrainedTwoTower,
        item_ids: np.ndarray,
        *,
        vectors: np.ndarray | None = None,
        biases: np.ndarray | None = None,
        rule: RankingRule | None = None,
    ) -> RankingEngine:
        """The engine over `item_ids`; embeddings are computed unless given (a bundle has them)."""
        ids = np.asarray(item_ids, dtype=np.int64)
        if vectors is None or biases is None:
            vectors, biases = model.item_vectors(ids)
        idx = model.items.index_of(ids)
        counts = np.where(idx >= 0, model.items.count[np.maximum(idx, 0)], 0)
        return cls(
            item_ids=ids,
            vectors=np.asarray(vectors, dtype=np.float32),
            biases=np.asarray(biases, dtype=np.float32),
            log_popularity=np.log1p(counts).astype(np.float32),
            item_bias=model.items.biases(ids),
            model=model,
            rule=rule or model.ranking,
        )

    def __len__(self) -> int:
        return len(self.item_ids)

    def user_vectors(self, user_x: np.ndarray) -> np.ndarray:
        """User-tower embeddings of feature rows (float32)."""
        return np.asarray(self.model.user_embeddings(user_x), dtype=np.float32)

    def retrieval(self, u: np.ndarray, n_ratings: np.ndarray, rule: RankingRule) -> np.ndarray:
        """(n_users, n_items) retrieval scores (float32)."""
        scores = u @ self.vectors.T / np.float32(self.model.temperature)
        scores += self.biases[None, :]
        w = rule.popularity_weight(n_ratings).astype(np.float32)
        scores += w[:, None] * self.log_popularity[None, :]
        return scores

    def stars(self, user_x: np.ndarray, u: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Predicted stars of catalogue `rows` (n_users, N) for each user (PAD -> NaN)."""
        rows = np.asarray(rows, dtype=np.int64)
        n, width = rows.shape
        out = np.full((n, width), np.nan, dtype=np.float64)
        valid = rows != PAD
        if not valid.any():
            return out
        user_of = np.repeat(np.arange(n), width)[valid.ravel()]
        flat = rows[valid]
        base = baseline_prediction(user_x[user_of], self.item_bias[flat], self.model.transform)
        pred = self.model.head_predict(u[user_of], self.vectors[flat], base)
        out[valid] = np.clip(pred, MIN_STARS, MAX_STARS)
        return out

    def rank(
        self,
        user_x: np.ndarray,
        n_ratings: np.ndarray | Sequence[int],
        k: int,
        *,
        excluded: Sequence[np.ndarray] | np.ndarray | None = None,
        allowed: np.ndarray | None = None,
        rule: RankingRule | None = None,
        u: np.ndarray | None = None,
    ) -> Ranked:
        """The top-k catalogue rows of each user (one feature row per user), best first.

        `excluded`: per user, catalogue rows never returned (what they rated), or a boolean
        (n_users, n_items) mask; `allowed`: boolean mask of the rows a filter keeps.
        """
        rule = rule or self.rule
        user_x = np.asarray(user_x, dtype=np.float32)
        n_ratings = np.asarray(n_ratings, dtype=np.float64)
        u = self.user_vectors(user_x) if u is None else u
        block = max(1, SCORE_BLOCK_CELLS // max(len(self), 1))
        parts = []
        for start in range(0, len(user_x), block):
            rows = slice(start, start + block)
            ban = _block_mask(excluded, rows, (len(user_x[rows]), len(self)), allowed)
            parts.append(self._rank_block(user_x[rows], u[rows], n_ratings[rows], k, ban, rule))
        if not parts:
            empty = np.zeros((0, k))
            return Ranked(empty.astype(np.int64), empty, empty)
        return Ranked(
            *(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Ranked))
        )

    def _rank_block(
        self,
        user_x: np.ndarray,
        u: np.ndarray,
        n_ratings: np.ndarray,
        k: int,
        ban: np.ndarray | None,
        rule: RankingRule,
    ) -> Ranked:
        scores = self.retrieval(u, n_ratings, rule)
        width = k if rule.kind == "retrieval" else max(rule.window, k)
        top = _top_rows(scores, width, ban)
        top_scores = _take(scores, top)
        if rule.kind == "retrieval":
            return Ranked(top, top_scores, self.stars(user_x, u, top))
        stars = self.stars(user_x, u, top)
        key = stars if rule.kind == "stars_in_window" else top_scores + rule.star_weight * stars
        order = top_k_indices(np.where(top == PAD, -np.inf, key), k, exclude=top == PAD)
        pick = np.where(order == PAD, 0, order)
        rows = np.where(order == PAD, PAD, np.take_along_axis(top, pick, axis=1))
        return Ranked(rows, _take(key, order), _take(stars, order))


def _top_rows(scores: np.ndarray, width: int, ban: np.ndarray | None) -> np.ndarray:
    """Each row's `width` best columns, ties to the lower column, banned ones never (PAD-padded).

    `content_index.top_k` per row (a sampled threshold, then an exact sort of ~sqrt(n·k)
    candidates): 0.3 ms over 80 k titles where a full-row argpartition takes ~2 ms.
    """
    if ban is not None:
        scores = np.where(ban, np.float32(-np.inf), scores)
    out = np.full((len(scores), min(width, scores.shape[1])), PAD, dtype=np.int64)
    for r, row in enumerate(scores):
        best = top_k(row, out.shape[1])
        best = best[np.isfinite(row[best])]
        out[r, : len(best)] = best
    return out


def _take(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    out = np.take_along_axis(values, np.where(idx == PAD, 0, idx), axis=1).astype(np.float64)
    out[idx == PAD] = np.nan
    return out


def _block_mask(
    excluded: Sequence[np.ndarray] | np.ndarray | None,
    rows: slice,
    shape: tuple[int, int],
    allowed: np.ndarray | None,
) -> np.ndarray | None:
    """Boolean (block users, items) mask of rows never returned, or None."""
    if excluded is None and allowed is None:
        return None
    mask = np.zeros(shape, dtype=bool)
    if isinstance(excluded, np.ndarray) and excluded.ndim == 2:
        mask |= excluded[rows]
    elif excluded is not None:
        for r, banned in enumerate(list(excluded)[rows]):
            mask[r, np.asarray(banned, dtype=np.int64)] = True
    if allowed is not None:
        mask |= ~np.asarray(allowed, dtype=bool)[None, :]
    return mask
