"""Training the two-tower model as the platform ranks with it: the model is fit
(`recommender_lib.modeling.two_tower.fit`) with the served NDCG@10 on validation as a per-epoch
metric, then the ranking rule is chosen on validation through the serving engine
(`recommender_lib.evaluation.rule_choice.choose_rule`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from recommender_lib.engine.ranking import RankingEngine
from recommender_lib.evaluation.rule_choice import (
    RankingProbe,
    choose_rule,
    cold_probes,
    ranking_probe,
)
from recommender_lib.modeling.features.fit import fit_features
from recommender_lib.modeling.features.items import ItemFeatures
from recommender_lib.modeling.features.transform import FeatureTransform, check_ratings
from recommender_lib.modeling.two_tower.dataset import streams
from recommender_lib.modeling.two_tower.fit import Metric, fit
from recommender_lib.modeling.two_tower.params import TwoTowerParams
from recommender_lib.modeling.two_tower.ranking_rule import RankingRule
from recommender_lib.modeling.two_tower.trained import TrainedTwoTower

NDCG_MAX_USERS = 20_000  # streamed training: validation NDCG@10 on a seeded sample of users


def _probe_users(val: pd.DataFrame, p: TwoTowerParams, streamed: bool) -> np.ndarray:
    """The validation users whose NDCG@10 is measured: all of them, or a seeded sample of
    `NDCG_MAX_USERS` when the training examples are streamed."""
    users = np.unique(val["user_id"].to_numpy())
    if streamed and len(users) > NDCG_MAX_USERS:
        rng = np.random.default_rng(p.seed)
        users = np.sort(rng.choice(users, NDCG_MAX_USERS, replace=False))
    return users


def _served_ndcg(warm: RankingProbe | None, item_ids: np.ndarray) -> Metric:
    """Validation NDCG@10 of a model snapshot through the serving engine, default rule (NaN
    without validation users; `fit` only asks when it has validation)."""

    def ndcg(model: TrainedTwoTower) -> float:
        if warm is None:
            return float("nan")
        return warm.ndcg(RankingEngine.from_model(model, item_ids), RankingRule())

    return ndcg


def train_two_tower(
    train: pd.DataFrame,
    validation: pd.DataFrame | None,
    items: ItemFeatures,
    transform: FeatureTransform,
    params: TwoTowerParams | None = None,
    *,
    validation_history: pd.DataFrame | None = None,
    log: Callable[[str], None] | None = None,
    on_epoch: Callable[[int, TrainedTwoTower], None] | None = None,
    ranking: RankingRule | None = None,
    fixed_epochs: int | None = None,
) -> TrainedTwoTower:
    """Train on `train`, early-stop on validation RMSE (best weights restored), then choose the
    ranking rule on validation (`recommender_lib.evaluation.rule_choice.choose_rule`).

    A refit passes `fixed_epochs` (the epochs early stopping chose; the learning-rate schedule
    still spans `params.epochs`, so the refit follows the evaluated run's schedule) and the
    evaluated `ranking` rule, and needs no validation.

    `items`/`transform` must come from `train` only (see `fit_features`). Validation users'
    features come from `validation_history` (default: `train`), as at test time.

    Up to `in_memory_rows` train rows, the examples are built once and held as tensors; above,
    they are streamed in chunks of whole users, and the validation NDCG@10 (monitoring and the
    ranking-rule choice) is computed on a seeded sample of at most `NDCG_MAX_USERS` validation
    users (RMSE always uses every validation row); `info` records which (`examples`, `chunks`,
    `ndcg_users`).
    """
    p = params or TwoTowerParams()
    t0 = time.perf_counter()
    val = check_ratings(validation) if validation is not None and len(validation) else None
    history = train if validation_history is None else validation_history
    users, warm = None, None
    if val is not None:
        users = _probe_users(val, p, streamed=streams(len(train), p))
        warm = ranking_probe(history, val, items, transform, user_ids=users)
    model = fit(
        train, validation, items, transform, p,
        validation_history=validation_history, log=log, on_epoch=on_epoch, ranking=ranking,
        fixed_epochs=fixed_epochs, metrics={"val_ndcg10": _served_ndcg(warm, items.item_ids)},
    )  # fmt: skip
    model.info["ndcg_users"] = len(warm.seen) if warm is not None else 0
    rule, search = ranking or RankingRule(), dict[str, float]()
    if ranking is None and val is not None and warm is not None:
        # The ordering and its constants, chosen on validation through the served ranking.
        engine = RankingEngine.from_model(model, items.item_ids)
        cold = cold_probes(history, val, items, transform, user_ids=users)
        rule, search = choose_rule(engine, warm, cold, log)
    model.ranking = rule
    model.info |= {"ranking_rule": rule.to_dict(), "ranking_validation_ndcg10": search}
    model.info["train_seconds"] = round(time.perf_counter() - t0, 2)
    return model


def fit_two_tower(
    conn: Any,
    train: pd.DataFrame,
    validation: pd.DataFrame | None,
    params: TwoTowerParams | None = None,
    **kwargs: Any,
) -> TrainedTwoTower:
    """Features from `train` + `train_two_tower` in one call (what the Dagster asset runs)."""
    p = params or TwoTowerParams()
    transform, items = fit_features(conn, train, p)
    return train_two_tower(train, validation, items, transform, p, **kwargs)
