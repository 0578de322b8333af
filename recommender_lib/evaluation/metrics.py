"""Rating and top-k ranking metrics (docs/architecture.md §6).

Ranking metrics use binary relevance: NDCG@k discounts a hit at 0-based position p by
1 / log2(p + 2) and divides by the ideal DCG of min(k, |relevant|) hits; Recall@k is
hits / min(k, |relevant|). Both are undefined (NaN) for a user with no relevant item, and the
averages skip such users.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from recommender_lib.index.top_k import PAD


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values, y_pred {p.size}")
    return t, p


def rmse(y_true: Any, y_pred: Any) -> float:
    """Root mean squared error; NaN for empty input."""
    t, p = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((t - p) ** 2))) if t.size else float("nan")


def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error; NaN for empty input."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p))) if t.size else float("nan")


def discounts(k: int) -> np.ndarray:
    """1 / log2(position + 2) for 0-based positions 0..k-1."""
    return 1.0 / np.log2(np.arange(k, dtype=np.float64) + 2.0)


def _hits(ranked: Sequence[int], relevant: set[int], k: int) -> list[bool]:
    seen: set[int] = set()
    out = []
    for item in list(ranked)[:k]:
        out.append(item in relevant and item not in seen)  # a repeated item counts once
        seen.add(item)
    return out


def ndcg_at_k(ranked: Sequence[int], relevant: set[int], k: int = 10) -> float:
    """Binary-relevance NDCG@k of one ranked list; NaN when nothing is relevant."""
    if not relevant:
        return float("nan")
    disc = discounts(k)
    dcg = sum(d for d, hit in zip(disc, _hits(ranked, relevant, k), strict=False) if hit)
    return float(dcg / disc[: min(k, len(relevant))].sum())


def recall_at_k(ranked: Sequence[int], relevant: set[int], k: int = 10) -> float:
    """hits / min(k, |relevant|); NaN when nothing is relevant."""
    if not relevant:
        return float("nan")
    return sum(_hits(ranked, relevant, k)) / min(k, len(relevant))


def hit_metrics(hits: np.ndarray, n_relevant: np.ndarray, k: int = 10) -> dict[str, np.ndarray]:
    """Vectorized per-user NDCG@k and Recall@k from a (n_users, <=k) boolean hit matrix.

    `n_relevant` is each user's number of relevant items; users with 0 get NaN.
    """
    hits = np.asarray(hits, dtype=bool)[:, :k]
    n_rel = np.asarray(n_relevant, dtype=np.int64)
    disc = discounts(k)
    ideal = np.concatenate([[0.0], np.cumsum(disc)])[np.minimum(n_rel, k)]
    dcg = hits.astype(np.float64) @ disc[: hits.shape[1]]
    with np.errstate(invalid="ignore", divide="ignore"):
        ndcg = np.where(n_rel > 0, dcg / ideal, np.nan)
        recall = np.where(n_rel > 0, hits.sum(axis=1) / np.minimum(n_rel, k), np.nan)
    return {f"ndcg@{k}": ndcg, f"recall@{k}": recall}


def ranking_metrics(
    top_items: Mapping[int, Sequence[int]] | np.ndarray,
    relevant: Mapping[int, set[int]],
    k: int = 10,
    user_ids: Sequence[int] | np.ndarray | None = None,
) -> dict[str, float]:
    """Mean NDCG@k and Recall@k over the users of `relevant` with at least one relevant item.

    `top_items`: user -> ranked item ids, or a 2-D array of ranked item ids whose rows align
    with `user_ids` (PAD entries are skipped). A user missing from `top_items` counts as an
    empty list (zero hits). Returns NaN means when no user has a relevant item.
    """
    if isinstance(top_items, np.ndarray):
        if user_ids is None or len(user_ids) != top_items.shape[0]:
            raise ValueError("a 2-D top_items array needs user_ids aligned with its rows")
        top_items = {
            int(u): [int(i) for i in row if i != PAD]
            for u, row in zip(user_ids, top_items, strict=True)
        }
    ndcgs, recalls = [], []
    for user, rel in relevant.items():
        if not rel:
            continue
        ranked = top_items.get(user, [])
        ndcgs.append(ndcg_at_k(ranked, rel, k))
        recalls.append(recall_at_k(ranked, rel, k))
    if not ndcgs:
        return {f"ndcg@{k}": float("nan"), f"recall@{k}": float("nan")}
    return {f"ndcg@{k}": float(np.mean(ndcgs)), f"recall@{k}": float(np.mean(recalls))}
