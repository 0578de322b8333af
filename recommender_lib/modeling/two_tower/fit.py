"""Fitting the two-tower model: the epoch loop over the traced training step (`compute_loss`),
early stopping on validation RMSE with the best weights restored, and per-epoch validation
metrics the caller injects (the workflow's served NDCG@10, `recommender_lib.workflow.train`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recommender_lib.modeling.baselines import MAX_STARS, MIN_STARS
from recommender_lib.modeling.features.items import ItemFeatures
from recommender_lib.modeling.features.transform import (
    FeatureTransform,
    baseline_prediction,
    check_ratings,
)
from recommender_lib.modeling.features.users import user_feature_matrix
from recommender_lib.modeling.two_tower.dataset import (
    Batches,
    ExampleBuilder,
    ExampleStream,
    item_id_index,
    item_inputs,
    streams,
    training_batches,
)
from recommender_lib.modeling.two_tower.networks import (
    Networks,
    build_networks,
    compute_loss,
    infer,
)
from recommender_lib.modeling.two_tower.params import TwoTowerParams
from recommender_lib.modeling.two_tower.ranking_rule import RankingRule
from recommender_lib.modeling.two_tower.trained import TrainedTwoTower

Metric = Callable[[TrainedTwoTower], float]  # a validation figure of a model snapshot


@dataclass(frozen=True)
class _Validation:
    """Validation rows as the model sees them: user features from the users' history."""

    user_x: np.ndarray
    user_of: np.ndarray  # row of each validation rating in `user_x`
    item_rows: np.ndarray
    item_ids: np.ndarray
    item_of: np.ndarray  # row of each validation rating in `item_rows`
    base: np.ndarray
    y: np.ndarray

    @classmethod
    def build(
        cls,
        validation: pd.DataFrame | None,
        history: pd.DataFrame | None,
        train: pd.DataFrame,
        items: ItemFeatures,
        transform: FeatureTransform,
        item_index: np.ndarray,
    ) -> _Validation | None:
        """The rows of `validation` (None without any), user features from `history` (default:
        the checked `train`)."""
        if validation is None or not len(validation):
            return None
        val = check_ratings(validation)
        history = check_ratings(history) if history is not None else train
        users, user_of = np.unique(val["user_id"].to_numpy(), return_inverse=True)
        user_x = user_feature_matrix(history, items, transform, users)[1]
        movies, item_of = np.unique(val["movie_id"].to_numpy(), return_inverse=True)
        rows, ids = item_inputs(items, transform, item_index, movies)
        base = baseline_prediction(user_x[user_of], items.biases(val["movie_id"]), transform)
        return cls(user_x, user_of, rows, ids, item_of, base, val["rating"].to_numpy(np.float64))

    def rmse(self, nets: Networks) -> float:
        """RMSE in stars of the clipped predictions over every validation row."""
        u = infer(nets["user_tower"], self.user_x)
        v = infer(nets["item_tower"], [self.item_rows, self.item_ids])[0][self.item_of]
        pred = infer(nets["head"], [u[self.user_of], v, self.base[:, None].astype(np.float32)])
        return float(np.sqrt(np.mean((np.clip(pred, MIN_STARS, MAX_STARS) - self.y) ** 2)))


@dataclass
class _EarlyStopping:
    """The best epoch by validation RMSE (train MSE without validation) and its weights; a refit
    (`fixed`) never stops and keeps its last epoch."""

    patience: int
    fixed: bool
    rmse: float = math.inf
    epoch: int = -1
    weights: list[Any] | None = None
    waited: int = 0

    def stop(self, epoch: int, rmse: float, model: Any) -> bool:
        """Record `epoch`; whether training stops after it."""
        if self.fixed:
            self.epoch = epoch
            return False
        if rmse < self.rmse - 1e-5:
            self.rmse, self.epoch, self.waited = rmse, epoch, 0
            self.weights = model.get_weights()
            return False
        self.waited += 1
        return self.waited >= self.patience


@dataclass(frozen=True)
class _Setup:
    """What one training run iterates: the networks, each epoch's batches, the traced step."""

    item_index: np.ndarray
    nets: Networks
    stream: ExampleStream | None
    batches: Batches
    step: Callable[[Any], tuple[Any, Any]]

    @classmethod
    def build(
        cls,
        train: pd.DataFrame,
        items: ItemFeatures,
        transform: FeatureTransform,
        p: TwoTowerParams,
        log: Callable[[str], None] | None,
    ) -> _Setup:
        """Examples (in memory or streamed), networks, optimizer, batches and the step."""
        item_index = item_id_index(items, p.id_min_count)
        idx = items.index_of(train["movie_id"].to_numpy())
        if (idx < 0).any():
            raise ValueError("train references titles outside the item features")
        build = ExampleBuilder.for_train(idx, items, transform, p, item_index)
        stream = ExampleStream(train, idx, build, p, log) if streams(len(train), p) else None
        n_ids = _n_ids(item_index)
        nets = build_networks(len(transform.user_columns), items.matrix.shape[1], n_ids, p)
        steps = max(len(train) // p.batch_size, 1) if stream is None else stream.steps_per_epoch
        opt = _optimizer(p, steps, nets["model"].trainable_variables)
        batches = training_batches(train, idx, build, stream)
        return cls(item_index, nets, stream, batches, _train_step(nets, opt, p))


def _devices() -> list[str]:
    """The accelerators TensorFlow trained on (it places the step on a GPU when it sees one),
    or ["CPU"]."""
    import tensorflow as tf

    return [d.name for d in tf.config.list_logical_devices("GPU")] or ["CPU"]


def _use_op_threads(n: int, log: Callable[[str], None] | None) -> int:
    """Run each TensorFlow op on `n` CPU threads (0: TensorFlow's default, one per core) if
    TensorFlow has not started in this process (its thread pools are fixed from then on) and
    return the setting in force. One thread per op lets the towers' many small ops run side by
    side on the inter-op threads instead (measured: BENCHMARKS.md, "Training throughput")."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(n, 0))
    except RuntimeError:
        if log:
            log(f"op_threads={n} not applied: TensorFlow has already started in this process")
    return int(tf.config.threading.get_intra_op_parallelism_threads())


def _n_ids(item_index: np.ndarray) -> int:
    return int(item_index.max()) if len(item_index) else 0


def _optimizer(p: TwoTowerParams, steps_per_epoch: int, variables: list[Any]) -> Any:
    """AdamW over `variables` (`FusedAdamW`), its learning rate cosine-decayed over `p.epochs`
    when `p.lr_decay`."""
    import keras

    from recommender_lib.modeling.two_tower.optimizer import FusedAdamW

    lr: Any = p.learning_rate
    if p.lr_decay:
        lr = keras.optimizers.schedules.CosineDecay(
            p.learning_rate, decay_steps=steps_per_epoch * p.epochs, alpha=0.05
        )
    return FusedAdamW(variables, lr, p.weight_decay)


def _train_step(nets: Networks, opt: Any, p: TwoTowerParams) -> Callable[[Any], tuple[Any, Any]]:
    """The traced step: `compute_loss`, its gradient, one optimizer update -> (mse, retrieval).

    The optimizer's slots exist before the first call, so the step is traced once, and without
    AutoGraph: it has no tensor-dependent Python control flow.
    """
    import tensorflow as tf

    variables = nets["model"].trainable_variables

    @tf.function(reduce_retracing=True, jit_compile=p.jit_compile, autograph=False)
    def train_step(batch: dict[str, Any]) -> tuple[Any, Any]:
        with tf.GradientTape() as tape:
            loss, mse, ret = compute_loss(nets, batch, p)
        opt.apply(tape.gradient(loss, variables))
        return mse, ret

    return train_step


def _epoch(batches: Iterable[Any], step: Callable[[Any], tuple[Any, Any]]) -> tuple[float, float]:
    """One pass over the batches: (mean rating MSE, mean retrieval loss)."""
    mses, rets = [], []
    for batch in batches:
        m, r = step(batch)
        mses.append(float(m))
        rets.append(float(r))
    return float(np.mean(mses)), float(np.mean(rets))


def _epoch_line(epoch: int, h: dict[str, list[float]], metrics: Iterable[str] | None) -> str:
    line = f"epoch {epoch + 1}: mse {h['loss_mse'][-1]:.4f} ret {h['loss_retrieval'][-1]:.3f} "
    if metrics is not None:
        line += f"val_rmse {h['val_rmse'][-1]:.4f} "
        line += "".join(f"{name} {h[name][-1]:.4f} " for name in metrics)
    return line + f"({h['seconds'][-1]:.1f}s, validation {h['val_seconds'][-1]:.1f}s)"


def fit(
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
    metrics: Mapping[str, Metric] | None = None,
) -> TrainedTwoTower:
    """Train on `train`, early-stopping on validation RMSE (best weights restored).

    A refit passes `fixed_epochs` (the learning-rate schedule still spans `params.epochs`) and
    needs no validation. `items`/`transform` must come from `train` only; validation users'
    features come from `validation_history` (default: `train`), as at test time. `metrics`:
    extra validation figures of each epoch's snapshot by history key, recorded only with
    validation. The model (and `on_epoch`'s snapshots) carry `ranking` (default `RankingRule()`).
    """
    import keras

    p = params or TwoTowerParams()
    op_threads = _use_op_threads(p.op_threads, log)
    keras.utils.set_random_seed(p.seed)
    t0 = time.perf_counter()
    train = check_ratings(train)
    run = _Setup.build(train, items, transform, p, log)
    val = _Validation.build(validation, validation_history, train, items, transform, run.item_index)
    metrics = dict(metrics or {})
    keys = ("loss_mse", "loss_retrieval", "val_rmse", *metrics, "seconds", "val_seconds")
    history: dict[str, list[float]] = {k: [] for k in keys}

    def snapshot(info: dict[str, Any], rule: RankingRule) -> TrainedTwoTower:
        model, tau = run.nets["model"], float(p.temperature)
        return TrainedTwoTower(model, transform, items, p, run.item_index, tau, rule, history, info)

    stopping = _EarlyStopping(p.patience, fixed=bool(fixed_epochs))
    try:
        for epoch in range(fixed_epochs or p.epochs):
            te = time.perf_counter()
            mse, ret = _epoch(run.batches(epoch), run.step)
            history["loss_mse"].append(mse)
            history["loss_retrieval"].append(ret)
            tv = time.perf_counter()
            score = mse  # what early stopping watches: validation RMSE, else the train MSE
            if val is not None:
                score = val.rmse(run.nets)
                history["val_rmse"].append(score)
                for name, metric in metrics.items():
                    history[name].append(metric(snapshot({}, RankingRule())))
            history["val_seconds"].append(time.perf_counter() - tv)
            history["seconds"].append(time.perf_counter() - te)
            if log:
                log(_epoch_line(epoch, history, metrics if val is not None else None))
            if on_epoch is not None:
                on_epoch(epoch, snapshot({}, ranking or RankingRule()))
            if stopping.stop(epoch, score, run.nets["model"]):
                break
    finally:
        if run.stream is not None:
            run.stream.close()
    if stopping.weights is not None:
        run.nets["model"].set_weights(stopping.weights)
    info = {
        "best_epoch": stopping.epoch + 1,
        "epochs_run": len(history["loss_mse"]),
        "best_val_rmse": stopping.rmse if val is not None else None,
        "train_rows": len(train),
        "examples": "in_memory" if run.stream is None else "streamed",
        "chunks": 1 if run.stream is None else len(run.stream.chunks),
        "train_seconds": round(time.perf_counter() - t0, 2),
        "n_item_ids": _n_ids(run.item_index),
        "devices": _devices(),
        "op_threads": op_threads,
    }
    return snapshot(info, ranking or RankingRule())
