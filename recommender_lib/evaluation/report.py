"""The evaluation report of a trained model: the model and every baseline on the same splits.

`evaluate_models` ranks through the serving engine (via `recommender_lib.evaluation.protocols`)
for P1 (temporal holdout) and P2 (cold start, k revealed ratings); the report carries the gate
the `beats_baselines` check applies and the figures MLflow logs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd

from recommender_lib.evaluation.protocols import catalogue_items, evaluate_all
from recommender_lib.modeling.baselines import fit_baselines
from recommender_lib.modeling.splits import P1, P2, SplitConfig, load_split
from recommender_lib.modeling.two_tower.trained import TrainedTwoTower

MODEL_NAME = "two_tower"
BASELINE_FOR_RMSE = "damped_bias"
BASELINE_FOR_RANKING = "most_popular"


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


@dataclass
class EvaluationReport:
    """Metrics of the model and of every baseline on the same splits (docs/architecture.md §6)."""

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

    def gate_failures(
        self, rmse_margin: float = 0.0, ndcg_ratio: float = 1.3, cold_ndcg_ratio: float = 1.0
    ) -> list[str]:
        """Why the model's served ranking does not beat the baselines (empty when it does):
        P1 RMSE below damped bias (by `rmse_margin`), P1 NDCG@10 >= `ndcg_ratio` x most
        popular, P2 NDCG@10 with 3 revealed ratings >= `cold_ndcg_ratio` x most popular."""
        model, bias = self.row(P1, MODEL_NAME), self.row(P1, BASELINE_FOR_RMSE)
        popular = self.row(P1, BASELINE_FOR_RANKING)
        cold, cold_popular = self.row(P2, MODEL_NAME), self.row(P2, BASELINE_FOR_RANKING)
        failures = []
        if not model["rmse"] < bias["rmse"] - rmse_margin:
            failures.append(f"RMSE {model['rmse']:.4f} does not beat {BASELINE_FOR_RMSE} "
                            f"{bias['rmse']:.4f} by {rmse_margin}")  # fmt: skip
        if not model["ndcg@10"] >= popular["ndcg@10"] * ndcg_ratio:
            failures.append(f"NDCG@10 {model['ndcg@10']:.4f} is below {ndcg_ratio} x "
                            f"{BASELINE_FOR_RANKING} {popular['ndcg@10']:.4f}")  # fmt: skip
        key = "ndcg@10_k3"
        if key in cold and not cold[key] >= cold_popular[key] * cold_ndcg_ratio:
            failures.append(f"cold-start (k=3) NDCG@10 {cold[key]:.4f} is below "
                            f"{cold_ndcg_ratio} x {BASELINE_FOR_RANKING} "
                            f"{cold_popular[key]:.4f}")  # fmt: skip
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
    is the served catalogue (`catalogue_items`), with each user's history excluded; the models
    rank through the served `RankingEngine` with their validation-chosen rule.
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
