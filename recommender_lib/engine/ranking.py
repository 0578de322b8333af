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

Ties go to the lower catalogue row. `rank_rules` gives `rank`'s lists under several rules from
one pass over the catalogue (the validation rule search). With an `approximate` index
(`recommender_lib.index.personal`, built with the bundle above `APPROXIMATE_THRESHOLD` titles)
each user's retrieval window comes from the HNSW graph's candidates, over-fetched for exclusions
and filters, re-scored exactly with `retrieval` on those rows only; a user whose window needs
more than `MAX_FETCH` candidates is ranked exactly. Without one (smaller catalogues) every row
is scored.

The rule (`recommender_lib.modeling.two_tower.ranking_rule`) and its constants are chosen on
validation (`recommender_lib.evaluation.rule_choice.choose_rule`), saved with the model and the
bundle, and refused at load when unknown. Predicted stars (the
fusion head) come with every ranked row whatever the rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from recommender_lib.index.content_index import top_k
from recommender_lib.index.personal import PersonalIndex, item_log_popularity
from recommender_lib.index.top_k import PAD, top_k_indices
from recommender_lib.modeling.baselines import MAX_STARS, MIN_STARS
from recommender_lib.modeling.features.transform import baseline_prediction
from recommender_lib.modeling.two_tower.ranking_rule import RankingRule

if TYPE_CHECKING:
    from recommender_lib.modeling.two_tower.trained import TrainedTwoTower

SCORE_BLOCK_CELLS = 1 << 24  # users x items scores held at once while ranking a batch
WINDOW_MARGIN = np.float32(1e-5)  # relative slack of `rank_rules`' window bound (float rounding)


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
    approximate: PersonalIndex | None = None  # None: exact retrieval over every row

    def __post_init__(self) -> None:
        if self.approximate is not None and len(self.approximate) != len(self.item_ids):
            raise ValueError(
                f"the personal index holds {len(self.approximate)} rows, not {len(self.item_ids)}"
            )

    @classmethod
    def from_model(
        cls,
        model: TrainedTwoTower,
        item_ids: np.ndarray,
        *,
        vectors: np.ndarray | None = None,
        biases: np.ndarray | None = None,
        rule: RankingRule | None = None,
        approximate: PersonalIndex | None = None,
    ) -> RankingEngine:
        """The engine over `item_ids`; embeddings are computed unless given (a bundle has them,
        and the personal HNSW index `approximate` above the threshold)."""
        ids = np.asarray(item_ids, dtype=np.int64)
        if vectors is None or biases is None:
            vectors, biases = model.item_vectors(ids)
        return cls(
            item_ids=ids,
            vectors=np.asarray(vectors, dtype=np.float32),
            biases=np.asarray(biases, dtype=np.float32),
            log_popularity=item_log_popularity(model.items, ids),
            item_bias=model.items.biases(ids),
            model=model,
            rule=rule or model.ranking,
            approximate=approximate,
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

    def rank_rules(
        self,
        user_x: np.ndarray,
        n_ratings: np.ndarray | Sequence[int],
        k: int,
        rules: Sequence[RankingRule],
        *,
        excluded: Sequence[np.ndarray] | None = None,
        u: np.ndarray | None = None,
    ) -> list[Ranked]:
        """`rank` under each of `rules`, with one pass over the catalogue (an exact engine).

        With w_lo <= w(n) <= w_hi over the rules and log popularity >= 0, a row scores at most
        a + w_hi·p under any of them (a = u·v/τ + b), while each rule's window threshold (its
        W-th best score, W <= the widest window) is at least the widest window's threshold at
        w_lo: a row below that at w_hi is in no rule's window. Each rule then orders only the
        other rows of each user, with the same float32 operations as `retrieval` (a small margin
        on the threshold keeps rounding ties), so the lists are `rank`'s.
        """
        if self.approximate is not None:
            return [self.rank(user_x, n_ratings, k, excluded=excluded, rule=r) for r in rules]
        user_x = np.asarray(user_x, dtype=np.float32)
        n_ratings = np.asarray(n_ratings, dtype=np.float64)
        u = self.user_vectors(user_x) if u is None else u
        weights = np.stack([r.popularity_weight(n_ratings).astype(np.float32) for r in rules])
        low, high = weights.min(axis=0), weights.max(axis=0)
        widths = [min(_window_width(rule, k), len(self)) for rule in rules]
        tops = [np.full((len(u), width), PAD, dtype=np.int64) for width in widths]
        top_scores = [np.full((len(u), width), np.nan) for width in widths]
        block = max(1, SCORE_BLOCK_CELLS // max(len(self), 1))
        for start in range(0, len(u), block):
            rows = slice(start, start + block)
            base = u[rows] @ self.vectors.T / np.float32(self.model.temperature)
            base += self.biases[None, :]
            ban = _block_mask(excluded, rows, base.shape, None)
            floor = _top_scores(base + low[rows, None] * self.log_popularity, max(widths), ban)
            floor -= WINDOW_MARGIN * np.maximum(1.0, np.abs(floor))
            candidate = base + high[rows, None] * self.log_popularity >= floor[:, None]
            if ban is not None:
                candidate &= ~ban
            for i, user in enumerate(range(start, start + len(base))):
                found = np.flatnonzero(candidate[i])
                if not found.size:
                    continue
                a, pop = base[i, found], self.log_popularity[found]
                for j, width in enumerate(widths):
                    scores = a + weights[j, user] * pop
                    best = top_k(scores, min(width, found.size))  # ties: lower row (ascending)
                    tops[j][user, : best.size] = found[best]
                    top_scores[j][user, : best.size] = scores[best]
        # Rules with the same weights share a window ordering (a narrower one is a prefix of the
        # widest), and the windows of different weights overlap: the predicted stars (the fusion
        # head, the costly part) are computed once per distinct (user, row) of all windows.
        widest: dict[bytes, int] = {}
        for j, width in enumerate(widths):
            same = widest.setdefault(weights[j].tobytes(), j)
            if width > widths[same]:
                widest[weights[j].tobytes()] = j
        shared = self._shared_stars(user_x, u, [tops[j] for j in widest.values()])
        stars = dict(zip(widest, shared, strict=True))
        return [
            self._order(user_x, u, top, scored, k, rule, stars[w.tobytes()][:, : top.shape[1]])
            for top, scored, rule, w in zip(tops, top_scores, rules, weights, strict=True)
        ]

    def stars(self, user_x: np.ndarray, u: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Predicted stars of catalogue `rows` (n_users, N) for each user (PAD -> NaN)."""
        rows = np.asarray(rows, dtype=np.int64)
        n, width = rows.shape
        out = np.full((n, width), np.nan, dtype=np.float64)
        valid = rows != PAD
        if not valid.any():
            return out
        user_of = np.repeat(np.arange(n), width)[valid.ravel()]
        out[valid] = self._pair_stars(user_x, u, user_of, rows[valid])
        return out

    def _pair_stars(
        self, user_x: np.ndarray, u: np.ndarray, user_of: np.ndarray, rows: np.ndarray
    ) -> np.ndarray:
        """Predicted stars (clipped) of user `user_of[i]` for catalogue row `rows[i]`."""
        base = baseline_prediction(user_x[user_of], self.item_bias[rows], self.model.transform)
        pred = self.model.head_predict(u[user_of], self.vectors[rows], base)
        return np.clip(pred, MIN_STARS, MAX_STARS)

    def _shared_stars(
        self, user_x: np.ndarray, u: np.ndarray, windows: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """`stars` of each of `windows` (n_users, N_j each), the fusion head run once per
        distinct (user, catalogue row) among them."""
        stack = np.concatenate([np.asarray(w, dtype=np.int64) for w in windows], axis=1)
        out = np.full(stack.shape, np.nan, dtype=np.float64)
        valid = stack != PAD
        if valid.any():
            keys = (np.arange(len(stack), dtype=np.int64)[:, None] * len(self) + stack)[valid]
            pairs, inverse = np.unique(keys, return_inverse=True)
            out[valid] = self._pair_stars(user_x, u, *np.divmod(pairs, len(self)))[inverse]
        return np.split(out, np.cumsum([w.shape[1] for w in windows])[:-1], axis=1)

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
        if self.approximate is not None:
            return self._rank_approximate(user_x, u, n_ratings, k, excluded, allowed, rule)
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
        top = _top_rows(scores, _window_width(rule, k), ban)
        return self._order(user_x, u, top, _take(scores, top), k, rule)

    def _order(
        self,
        user_x: np.ndarray,
        u: np.ndarray,
        top: np.ndarray,
        top_scores: np.ndarray,
        k: int,
        rule: RankingRule,
        stars: np.ndarray | None = None,
    ) -> Ranked:
        """The rule's top-k of each user's retrieval window `top` (best first, PAD-padded);
        `stars`: the window's predicted stars when already known."""
        stars = self.stars(user_x, u, top) if stars is None else stars
        if rule.kind == "retrieval":
            return Ranked(top, top_scores, stars)
        key = stars if rule.kind == "stars_in_window" else top_scores + rule.star_weight * stars
        order = top_k_indices(np.where(top == PAD, -np.inf, key), k, exclude=top == PAD)
        pick = np.where(order == PAD, 0, order)
        rows = np.where(order == PAD, PAD, np.take_along_axis(top, pick, axis=1))
        return Ranked(rows, _take(key, order), _take(stars, order))

    def _rank_approximate(
        self,
        user_x: np.ndarray,
        u: np.ndarray,
        n_ratings: np.ndarray,
        k: int,
        excluded: Sequence[np.ndarray] | np.ndarray | None,
        allowed: np.ndarray | None,
        rule: RankingRule,
    ) -> Ranked:
        """`rank` through the personal HNSW index: per user, the graph's candidates re-scored
        exactly; users it cannot serve within `MAX_FETCH` candidates get the exact window."""
        assert self.approximate is not None
        width = min(_window_width(rule, k), len(self))
        w = rule.popularity_weight(n_ratings).astype(np.float32)
        queries = self.approximate.augmentation.queries(u, self.model.temperature, w)
        keep = None if allowed is None else np.asarray(allowed, dtype=bool)
        kept = None if keep is None else int(keep.sum())
        banned_rows = _per_user_rows(excluded, len(u))
        top = np.full((len(u), width), PAD, dtype=np.int64)
        top_scores = np.full((len(u), width), np.nan)
        for r, banned in enumerate(banned_rows):
            rows = self.approximate.candidates(queries[r], width, keep, banned, kept)
            if rows is None:  # too many rows filtered out: score every row
                ban = _block_mask([banned], slice(0, 1), (1, len(self)), keep)
                scores = self.retrieval(u[r : r + 1], n_ratings[r : r + 1], rule)
                best = _top_rows(scores, width, ban)[0]
                top[r], top_scores[r] = best, _take(scores, best[None, :])[0]
                continue
            scores = self._retrieval_rows(u[r], w[r], rows)
            best = np.lexsort((rows, -scores))[:width]
            top[r], top_scores[r] = rows[best], scores[best]
        return self._order(user_x, u, top, top_scores, k, rule)

    def _retrieval_rows(self, u: np.ndarray, w: np.float32, rows: np.ndarray) -> np.ndarray:
        """`retrieval` of one user over catalogue `rows` only (float32, same operations)."""
        scores = self.vectors[rows] @ u / np.float32(self.model.temperature)
        scores += self.biases[rows]
        scores += w * self.log_popularity[rows]
        return scores


def _window_width(rule: RankingRule, k: int) -> int:
    """Rows of the retrieval window `rule` orders to give a top-k."""
    return k if rule.kind == "retrieval" else max(rule.window, k)


def _top_scores(scores: np.ndarray, width: int, ban: np.ndarray | None) -> np.ndarray:
    """Each row's `width`-th best score among rows not banned (-inf with fewer), float32."""
    if width < 1 or scores.shape[1] == 0:
        return np.full(len(scores), -np.inf, dtype=np.float32)
    last = _top_rows(scores, width, ban)[:, -1]
    found = np.take_along_axis(scores, np.maximum(last, 0)[:, None], axis=1)[:, 0]
    return np.where(last == PAD, np.float32(-np.inf), found).astype(np.float32)


def _per_user_rows(
    excluded: Sequence[np.ndarray] | np.ndarray | None, n_users: int
) -> list[np.ndarray]:
    """Each user's excluded catalogue rows (int64) from `rank`'s `excluded` argument."""
    if excluded is None:
        return [np.zeros(0, dtype=np.int64)] * n_users
    if isinstance(excluded, np.ndarray) and excluded.ndim == 2:
        return [np.flatnonzero(row) for row in excluded]
    rows = [np.asarray(banned, dtype=np.int64).ravel() for banned in excluded]
    if len(rows) != n_users:
        raise ValueError(f"excluded has {len(rows)} users, user_x {n_users}")
    return rows


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
