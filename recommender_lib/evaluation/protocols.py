"""Evaluate rating models under the docs/architecture.md §6 protocols, models and baselines alike.

Every model implements `RatingModel`. The evaluation hands a model only what it may know:

- **P1** (`evaluate_p1`): `history` is the users' P1 train + validation rows (the 80,419
  "train" ratings of the published anchors), `test` the P1 test rows. RMSE / MAE in stars on the
  test pairs; top-k over the FULL catalogue with each user's history items excluded and every
  test item relevant (Recall@k = hits / min(k, |test items|); test items outside the catalogue
  stay in the denominator). Users are ranked in batches of `batch_users` so memory stays at
  batch × catalogue scores.
- **P2** (`evaluate_cold_start`): for each reveal size k the history is the cold users'
  `reveal_rank <= k` rows and the scored rows are `reveal_rank > max(ks)`, identical for every k.
  The candidate set is identical too: items at `reveal_rank <= max(ks)` are excluded for every k
  (for k < max(ks) the unrevealed ones are rated by the user but are not targets, so counting
  them as misses would penalise small k for something other than its shorter history).

Models that cannot rank (`ranks_items = False`, e.g. the global mean) get NaN ranking metrics,
models that do not predict stars (`predicts_ratings = False`, e.g. EASE) NaN RMSE / MAE. The
two-tower model ranks through the `RankingEngine` the API serves with (`EngineRanking`), the
others through their `score_catalogue` scores. Beside
accuracy, P1 reports catalogue coverage@k (distinct recommended titles / catalogue) and the mean
popularity (history ratings) of what is recommended.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, cast, runtime_checkable

import duckdb
import numpy as np
import pandas as pd

from recommender_lib.engine.ranking import RankingEngine
from recommender_lib.evaluation.metrics import hit_metrics, mae, rmse
from recommender_lib.index.top_k import PAD, top_k_indices
from recommender_lib.modeling.splits import cold_start_sets
from recommender_lib.modeling.two_tower.trained import TrainedTwoTower
from recommender_lib.warehouse.catalog import served_catalog_table


class CatalogueScorer(Protocol):
    """A model that scores the whole catalogue itself (every baseline)."""

    def score_catalogue(
        self, history: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray
    ) -> np.ndarray: ...


@runtime_checkable
class RatingModel(Protocol):
    """What every rating model (baselines, the two-tower model) offers the evaluation.

    `history`: what the model may know about each user at prediction time, columns
    `user_id, movie_id, rating, rating_ts` (the user's train rows under P1, the k revealed rows
    under P2). A model may set `ranks_items = False` to have its ranking metrics reported as NaN.

    Ranking comes from the serving engine for a `TrainedTwoTower` (`EngineRanking`), else from
    `score_catalogue(history, user_ids, item_ids)` -> (n_users, n_items) scores, higher better.
    """

    name: str

    def predict(self, history: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
        """Predicted stars for `pairs` (`user_id`, `movie_id`), aligned with its rows."""
        ...


def catalogue_items(conn: duckdb.DuckDBPyConnection) -> np.ndarray:
    """Every recommendable item id, ascending: the served `catalog` table (MovieLens movies plus
    IMDb-only titles) where it exists, else the MovieLens movies — the ranking candidates."""
    catalog = served_catalog_table(conn)
    table, column = (catalog, "item_id") if catalog else ("movielens_movies", "movie_id")
    rows = conn.execute(f'SELECT DISTINCT "{column}" FROM "{table}" ORDER BY 1').fetchall()
    return np.array([r[0] for r in rows], dtype=np.int64)


def _rating_metrics(model: RatingModel, history: pd.DataFrame, rows: pd.DataFrame) -> dict:
    """RMSE / MAE in stars of `rows` (NaN for a model that does not predict stars)."""
    if not getattr(model, "predicts_ratings", True):
        return {"rmse": float("nan"), "mae": float("nan")}
    pred = _predict(model, history, rows)
    truth = rows["rating"].to_numpy(dtype=np.float64)
    return {"rmse": rmse(truth, pred), "mae": mae(truth, pred)}


def _predict(model: RatingModel, history: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    pred = np.asarray(
        model.predict(history, rows[["user_id", "movie_id"]].reset_index(drop=True)),
        dtype=np.float64,
    ).ravel()
    if pred.shape != (len(rows),):
        raise ValueError(f"{model.name}.predict returned {pred.shape[0]} values for {len(rows)}")
    if not np.isfinite(pred).all():
        raise ValueError(f"{model.name}.predict returned non-finite predictions")
    return pred


def _user_slices(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """`frame` sorted by user, and its user_id column for searchsorted batching."""
    ordered = frame.sort_values("user_id", kind="stable").reset_index(drop=True)
    return ordered, ordered["user_id"].to_numpy(dtype=np.int64)


def _rows_of(
    ordered: pd.DataFrame, keys: np.ndarray, batch: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows of the batch's users (batch ascending) and each row's position in the batch."""
    lo = int(np.searchsorted(keys, batch[0], side="left"))
    hi = int(np.searchsorted(keys, batch[-1], side="right"))
    rows = ordered.iloc[lo:hi]
    pos = np.searchsorted(batch, keys[lo:hi])
    pos = np.minimum(pos, len(batch) - 1)
    inside = batch[pos] == keys[lo:hi]
    return rows[inside], pos[inside]


def _mask(rows: pd.DataFrame, pos: np.ndarray, item_index: pd.Index, n_users: int) -> np.ndarray:
    cols = item_index.get_indexer(rows["movie_id"].to_numpy())
    known = cols >= 0
    mask = np.zeros((n_users, len(item_index)), dtype=bool)
    mask[pos[known], cols[known]] = True
    return mask


@dataclass(frozen=True)
class EngineRanking:
    """A two-tower model's ranking of one catalogue through the serving `RankingEngine` with the
    model's rule: what the evaluation measures is what the API serves."""

    model: TrainedTwoTower
    engine: RankingEngine

    @classmethod
    def of(cls, model: TrainedTwoTower, item_ids: np.ndarray) -> EngineRanking:
        return cls(model, RankingEngine.from_model(model, np.asarray(item_ids, dtype=np.int64)))

    def positions(
        self, history: pd.DataFrame, user_ids: np.ndarray, exclude: np.ndarray, k: int
    ) -> np.ndarray:
        """(n_users, k) catalogue positions recommended to each user from their `history`
        (`exclude`: boolean (n_users, n_items) mask of positions never returned)."""
        users = np.asarray(user_ids, dtype=np.int64)
        counts = history.groupby("user_id").size().reindex(users, fill_value=0)
        ux = self.model.user_features(history, users)
        return self.engine.rank(ux, counts.to_numpy(), k, excluded=exclude).rows


def recommended_positions(
    model: RatingModel,
    history: pd.DataFrame,
    batch: np.ndarray,
    items: np.ndarray,
    exclude: np.ndarray,
    k: int,
    ranking: EngineRanking | None = None,
) -> np.ndarray:
    """(len(batch), k) catalogue positions the model recommends, best first (PAD-padded):
    through the serving engine for a two-tower model (`ranking`: its engine over `items`, built
    when not given), else from its `score_catalogue` scores."""
    if isinstance(model, TrainedTwoTower):
        top = (ranking or EngineRanking.of(model, items)).positions(history, batch, exclude, k)
    else:
        scores = np.asarray(cast(CatalogueScorer, model).score_catalogue(history, batch, items))
        if scores.shape != (len(batch), len(items)):
            raise ValueError(
                f"{model.name}.score_catalogue returned {scores.shape}, "
                f"expected {(len(batch), len(items))}"
            )
        top = top_k_indices(scores, k, exclude=exclude)
    if top.shape != (len(batch), min(k, len(items))):
        raise ValueError(f"{model.name} ranked {top.shape}, expected {(len(batch), k)}")
    return top


def ranking_evaluation(
    model: RatingModel,
    history: pd.DataFrame,
    relevant: pd.DataFrame,
    catalogue: np.ndarray | Sequence[int],
    *,
    exclude: pd.DataFrame | None = None,
    k: int = 10,
    batch_users: int = 512,
    popularity: pd.Series | None = None,
) -> dict[str, float]:
    """Mean NDCG@k / Recall@k over the users of `relevant`, ranking the whole `catalogue`.

    `history` is what the model sees; `exclude` (default: `history`) holds the (user, movie)
    rows never recommended; every `relevant` row is a relevant item of its user. With
    `popularity` (ratings per movie id), also coverage@k and the mean popularity of the titles
    recommended.
    """
    keys = (f"ndcg@{k}", f"recall@{k}")
    extra = () if popularity is None else (f"coverage@{k}", "mean_popularity")
    if not getattr(model, "ranks_items", True) or relevant.empty:
        return dict.fromkeys(keys + extra, float("nan"))
    items = np.asarray(catalogue, dtype=np.int64)
    item_index = pd.Index(items)
    if not item_index.is_unique:
        raise ValueError("catalogue item ids must be unique")
    exclude = history if exclude is None else exclude
    hist, hist_keys = _user_slices(history)
    excl, excl_keys = _user_slices(exclude)
    rel, rel_keys = _user_slices(relevant.drop_duplicates(["user_id", "movie_id"]))
    users, n_rel_all = np.unique(rel_keys, return_counts=True)
    per_user: dict[str, list[np.ndarray]] = {key: [] for key in keys}
    shown = np.zeros(len(items), dtype=np.int64)  # times each title was recommended
    ranking = EngineRanking.of(model, items) if isinstance(model, TrainedTwoTower) else None
    for start in range(0, len(users), batch_users):
        batch = users[start : start + batch_users]
        hist_rows, _ = _rows_of(hist, hist_keys, batch)
        excl_mask = _mask(*_rows_of(excl, excl_keys, batch), item_index, len(batch))
        rel_mask = _mask(*_rows_of(rel, rel_keys, batch), item_index, len(batch))
        top = recommended_positions(model, hist_rows, batch, items, excl_mask, k, ranking)
        hits = np.take_along_axis(rel_mask, np.where(top == PAD, 0, top), axis=1) & (top != PAD)
        for key, values in hit_metrics(hits, n_rel_all[start : start + len(batch)], k).items():
            per_user[key].append(values)
        np.add.at(shown, top[top != PAD], 1)
    out = {key: float(np.nanmean(np.concatenate(v))) for key, v in per_user.items()}
    if popularity is not None:
        counts = popularity.reindex(items, fill_value=0).to_numpy(np.float64)
        out[f"coverage@{k}"] = float((shown > 0).sum() / max(len(items), 1))
        out["mean_popularity"] = float((shown * counts).sum() / max(shown.sum(), 1))
    return out


def evaluate_p1(
    model: RatingModel,
    history: pd.DataFrame,
    test: pd.DataFrame,
    catalogue_items: np.ndarray | Sequence[int],
    k: int = 10,
    batch_users: int = 512,
) -> dict[str, float]:
    """P1 metrics: rmse, mae (stars), ndcg@k, recall@k, coverage@k, mean_popularity, plus the
    numbers of ratings and users."""
    out = _rating_metrics(model, history, test)
    out |= ranking_evaluation(
        model,
        history,
        test,
        catalogue_items,
        k=k,
        batch_users=batch_users,
        popularity=history.groupby("movie_id").size(),
    )
    out |= {"n_test_ratings": float(len(test)), "n_test_users": float(test["user_id"].nunique())}
    return out


def evaluate_cold_start(
    model: RatingModel,
    cold: pd.DataFrame,
    catalogue_items: np.ndarray | Sequence[int],
    ks: Sequence[int] = (3, 5, 10),
    k: int = 10,
    batch_users: int = 512,
) -> dict[str, float]:
    """P2 metrics per reveal size: rmse_k3, mae_k3, ndcg@10_k3, recall@10_k3, ... .

    `cold` is the P2 `cold` split with `reveal_rank`; the scored rows (reveal_rank > max(ks))
    and the excluded candidates (reveal_rank <= max(ks)) are the same for every k.
    """
    scored_after = max(ks)
    excluded = cold[cold["reveal_rank"] <= scored_after]
    out: dict[str, float] = {}
    for reveal in ks:
        revealed, scored = cold_start_sets(cold, reveal, scored_after=scored_after)
        accuracy = _rating_metrics(model, revealed, scored)
        out |= {f"{key}_k{reveal}": value for key, value in accuracy.items()}
        ranking = ranking_evaluation(
            model,
            revealed,
            scored,
            catalogue_items,
            exclude=excluded,
            k=k,
            batch_users=batch_users,
        )
        out |= {f"{key}_k{reveal}": value for key, value in ranking.items()}
    scored_rows = cold[cold["reveal_rank"] > scored_after]
    out |= {
        "n_cold_scored_ratings": float(len(scored_rows)),
        "n_cold_users": float(scored_rows["user_id"].nunique()),
    }
    return out


def evaluate_all(
    models: Sequence[RatingModel],
    catalogue_items: np.ndarray | Sequence[int],
    *,
    history: pd.DataFrame | None = None,
    test: pd.DataFrame | None = None,
    cold: pd.DataFrame | None = None,
    ks: Sequence[int] = (3, 5, 10),
    k: int = 10,
    batch_users: int = 512,
) -> pd.DataFrame:
    """One row per model, every model on the same split: P1 columns when `history` and `test`
    are given, P2 columns (`*_k3`, ...) when `cold` is given.

    The models must already be fit on the matching protocol's training rows (P1 and P2 train
    differ, so a P2 evaluation needs models fit on P2 train). Column `eval_seconds` times each.
    """
    if (history is None) != (test is None):
        raise ValueError("P1 evaluation needs both history and test")
    if test is None and cold is None:
        raise ValueError("nothing to evaluate: pass history + test (P1) and/or cold (P2)")
    rows = []
    for model in models:
        started = time.perf_counter()
        row: dict[str, object] = {"model": model.name}
        if history is not None and test is not None:
            row |= evaluate_p1(model, history, test, catalogue_items, k, batch_users)
        if cold is not None:
            row |= evaluate_cold_start(model, cold, catalogue_items, ks, k, batch_users)
        row["eval_seconds"] = time.perf_counter() - started
        rows.append(row)
    return pd.DataFrame(rows)
