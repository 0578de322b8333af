"""The model workflow the Dagster assets run: features, training and evaluation per protocol.

Each function reads the splits from the warehouse and calls the feature, model, baseline and
evaluation modules, so an asset body stays a few lines and the whole flow is testable here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from recommender_lib.atomic import atomic_path
from recommender_lib.baselines import fit_baselines
from recommender_lib.evaluation import catalogue_items, evaluate_all
from recommender_lib.features import FeatureTransform, ItemFeatures, user_feature_matrix
from recommender_lib.splits import P1, P2, SplitConfig, load_split
from recommender_lib.two_tower import TrainedTwoTower, TwoTowerParams, fit_features, train_two_tower

TRANSFORM_FILE = "feature_transform.json"
ITEM_FEATURES_FILE = "item_features.npz"
USER_FEATURES_FILE = "user_features.npz"
MODEL_NAME = "two_tower"
BASELINE_FOR_RMSE = "damped_bias"
BASELINE_FOR_RANKING = "most_popular"


def fit_protocol_features(
    conn: duckdb.DuckDBPyConnection,
    protocol: str,
    params: TwoTowerParams,
    catalog_table: str | None = None,
) -> tuple[FeatureTransform, ItemFeatures]:
    """Fit the feature transform and the catalogue's item features on `protocol`'s train rows.

    `catalog_table`: the materialized catalogue (MovieLens + IMDb titles); default MovieLens only.
    """
    train = load_split(conn, protocol, "train")
    return fit_features(conn, train, params, catalog_table=catalog_table)


def save_model(model: TrainedTwoTower, directory: Path) -> Path:
    """Save a trained model into a new folder, atomically."""
    with atomic_path(directory) as tmp:
        model.save(tmp)
    return directory


def save_item_features(directory: Path, transform: FeatureTransform, items: ItemFeatures) -> Path:
    """Write the transform (JSON) and item features (npz) into a new folder, atomically."""
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        (tmp / TRANSFORM_FILE).write_text(transform.to_json(), encoding="utf-8")
        items.to_npz(tmp / ITEM_FEATURES_FILE)
    return directory


def load_item_features(directory: Path) -> tuple[FeatureTransform, ItemFeatures]:
    transform = FeatureTransform.from_json((directory / TRANSFORM_FILE).read_text("utf-8"))
    return transform, ItemFeatures.from_npz(directory / ITEM_FEATURES_FILE)


def known_user_features(
    conn: duckdb.DuckDBPyConnection, transform: FeatureTransform, items: ItemFeatures
) -> tuple[np.ndarray, np.ndarray]:
    """(user ids, feature rows) of every P1 user from their train + validation history.

    These are the vectors a known user is served with; the same function builds a new user's
    vector from a list of ratings, so training and serving cannot diverge.
    """
    return user_feature_matrix(load_split(conn, P1, "train+validation"), items, transform)


def save_user_features(path: Path, user_ids: np.ndarray, matrix: np.ndarray) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, user_ids=user_ids, matrix=matrix)
    return path


@dataclass(frozen=True)
class ProtocolData:
    """The rows of one protocol, read once so training runs without holding the warehouse."""

    protocol: str
    train: pd.DataFrame
    validation: pd.DataFrame
    heldout: pd.DataFrame  # P1: test rows; P2: all ratings of the cold users (reveal_rank)
    catalogue: np.ndarray

    @property
    def history(self) -> pd.DataFrame:
        """What is known about the warm users at evaluation time: train + validation."""
        return pd.concat([self.train, self.validation], ignore_index=True)


def load_protocol(conn: duckdb.DuckDBPyConnection, protocol: str) -> ProtocolData:
    heldout = "test" if protocol == P1 else "cold"
    return ProtocolData(
        protocol=protocol,
        train=load_split(conn, protocol, "train"),
        validation=load_split(conn, protocol, "validation"),
        heldout=load_split(conn, protocol, heldout),
        catalogue=catalogue_items(conn),
    )


def train_model(
    data: ProtocolData,
    params: TwoTowerParams,
    features: tuple[FeatureTransform, ItemFeatures],
    log: Callable[[str], None] | None = None,
) -> TrainedTwoTower:
    """Train on the protocol's train rows, early-stopping on its validation rows."""
    transform, items = features
    return train_two_tower(data.train, data.validation, items, transform, params, log=log)


@dataclass
class EvaluationReport:
    """Metrics of the model and of every baseline on the same splits (DESIGN.md §6)."""

    p1: pd.DataFrame  # one row per model: rmse, mae, ndcg@10, recall@10
    p2: pd.DataFrame  # one row per model: rmse_k3, ndcg@10_k3, ... for each reveal size
    test_actual: np.ndarray = field(repr=False)
    test_predicted: np.ndarray = field(repr=False)

    def row(self, table: str, model: str) -> dict[str, float]:
        frame = self.p1 if table == P1 else self.p2
        return frame.set_index("model").loc[model].to_dict()

    def metrics(self) -> dict[str, float]:
        """Flat `{protocol.model.metric: value}` of every finite number."""
        out: dict[str, float] = {}
        for protocol, frame in ((P1, self.p1), (P2, self.p2)):
            for _, r in frame.iterrows():
                for col, value in r.items():
                    if col != "model" and isinstance(value, int | float) and math.isfinite(value):
                        out[f"{protocol}.{r['model']}.{col}"] = float(value)
        return out

    def logged_metrics(self) -> dict[str, float]:
        """`metrics()` named as MLflow allows (no `@`: `ndcg@10` -> `ndcg_at_10`)."""
        return {k.replace("@", "_at_"): v for k, v in self.metrics().items()}

    def gate_failures(self, rmse_margin: float = 0.0, ndcg_ratio: float = 1.0) -> list[str]:
        """Why the model does not beat the baselines on P1 (empty when it does)."""
        model, bias = self.row(P1, MODEL_NAME), self.row(P1, BASELINE_FOR_RMSE)
        popular = self.row(P1, BASELINE_FOR_RANKING)
        failures = []
        if not model["rmse"] < bias["rmse"] - rmse_margin:
            failures.append(f"RMSE {model['rmse']:.4f} does not beat {BASELINE_FOR_RMSE} "
                            f"{bias['rmse']:.4f} by {rmse_margin}")  # fmt: skip
        if not model["ndcg@10"] > popular["ndcg@10"] * ndcg_ratio:
            failures.append(f"NDCG@10 {model['ndcg@10']:.4f} is not above {ndcg_ratio} x "
                            f"{BASELINE_FOR_RANKING} {popular['ndcg@10']:.4f}")  # fmt: skip
        return failures

    def to_json(self) -> str:
        return json.dumps({"P1": self.p1.to_dict("records"), "P2": self.p2.to_dict("records")})


def evaluate_models(
    p1: ProtocolData,
    model_p1: TrainedTwoTower,
    p2: ProtocolData,
    model_p2: TrainedTwoTower,
    reveal_k: tuple[int, ...] = SplitConfig().reveal_k,
) -> EvaluationReport:
    """Evaluate the P1 model and the P2 (cold-start) model beside freshly fitted baselines.

    Baselines are fitted on train + validation of the same protocol; the catalogue for ranking
    is every MovieLens movie, with each user's history excluded.
    """
    history, test = p1.history, p1.heldout
    p1_table = evaluate_all(
        [model_p1, *fit_baselines(history)], p1.catalogue, history=history, test=test
    )
    p2_table = evaluate_all(
        [model_p2, *fit_baselines(p2.history)], p2.catalogue, cold=p2.heldout, ks=reveal_k
    )
    return EvaluationReport(
        p1=p1_table,
        p2=p2_table,
        test_actual=test["rating"].to_numpy(),
        test_predicted=model_p1.predict(history, test[["user_id", "movie_id"]]),
    )


def prediction_range_failure(
    predicted: np.ndarray, low: float = 0.5, high: float = 5.0
) -> str | None:
    """Why predictions are unusable (non-finite or outside [low, high] stars), or None."""
    predicted = np.asarray(predicted, dtype=float)
    bad = ~np.isfinite(predicted)
    if bad.any():
        return f"{int(bad.sum())} of {len(predicted)} predictions are not finite"
    outside = (predicted < low) | (predicted > high)
    if outside.any():
        return (f"{int(outside.sum())} predictions outside [{low}, {high}] "
                f"(min {predicted.min():.3f}, max {predicted.max():.3f})")  # fmt: skip
    return None
