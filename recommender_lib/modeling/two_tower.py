"""Two-tower ("Siamese") rating and retrieval model, Keras 3 on TensorFlow.

* user tower: user feature vector (+ Gaussian noise while training) -> [dense -> batch-norm ->
  GELU -> dropout] x L -> dense -> L2-normalised embedding `u`;
* item tower: item feature vector (+ an optional item-id embedding, ids dropped to the OOV
  bucket at random while training and always OOV for titles nobody rated, so features carry the
  signal; off by default, it did not help) -> same blocks -> L2-normalised embedding `v` and a
  scalar ranking bias `b`;
* fusion head on [u, v, |u−v|, u⊙v, baseline] -> residual over the damped-bias baseline
  (μ + b_item + b_user, read off the features) -> rating in stars (clipped to [0.5, 5]);
* auxiliary retrieval loss: in-batch sampled softmax over rated pairs on u·v/τ + b with the
  log-Q correction (in-batch negatives are popularity-sampled), so that u·v/τ + b plus a
  popularity term ranks the catalogue on its own. How the catalogue is ordered for a user —
  the ranking rule — is chosen on validation NDCG@10 after training and applied by
  `recommender_lib.engine.ranking.RankingEngine`, the engine the API serves with.

Training examples: user features from the ratings before each target (`prefix`), a share of
rows re-featurised as cold users who revealed only their first k <= 10 ratings, item statistics
without the target; early stopping on validation RMSE with the best weights restored. Up to
`in_memory_rows` training rows the examples are held in memory as tensors; larger sets stream
them chunk by chunk (whole users per chunk), so memory is bounded by `chunk_rows`.

TensorFlow/Keras are imported inside functions only, so importing this module is cheap.
"""

from __future__ import annotations

import itertools
import json
import math
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recommender_lib.engine.ranking import RankingEngine, RankingRule, UnknownRankingRuleError
from recommender_lib.evaluation.rule_choice import choose_rule, cold_probes, ranking_probe
from recommender_lib.modeling.features import (
    FeatureTransform,
    ItemFeatures,
    baseline_prediction,
    build_item_features,
    check_ratings,
    fit_feature_transform,
    training_item_rows,
    training_user_features,
    user_feature_matrix,
    user_row_chunks,
)

MODEL_FILE = "two_tower.keras"
TRANSFORM_FILE = "feature_transform.json"
ITEMS_FILE = "item_features.npz"
META_FILE = "two_tower.json"
MIN_STARS, MAX_STARS = 0.5, 5.0
NDCG_MAX_USERS = 20_000  # streamed training: validation NDCG@10 on a seeded sample of users
Seed = int | Sequence[int]  # a numpy.random.default_rng seed


@dataclass
class TwoTowerParams:
    """Hyper-parameters of features + model + training (a Dagster Config wraps these)."""

    embedding_dim: int = 48
    tower_units: tuple[int, ...] = (256, 128)
    head_units: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    user_noise: float = 0.1  # std of Gaussian noise on user features while training
    item_id_dim: int = 0  # 0 disables the item-id embedding
    item_id_dropout: float = 0.3  # share of training rows whose item id is replaced by OOV
    id_min_count: int = 1  # titles with fewer train ratings always use the OOV id
    retrieval_weight: float = 0.5
    temperature: float = 0.1
    retrieval_min_rating: float = 0.0  # retrieval positives: train pairs rated >= this
    logq_correction: bool = True
    learning_rate: float = 2e-3
    lr_decay: bool = True  # cosine decay over `epochs`
    weight_decay: float = 1e-4
    batch_size: int = 512
    epochs: int = 20
    patience: int = 3
    user_scheme: str = "prefix"  # training user features: "full" | "prefix" (see features.py)
    item_loo: bool = True  # leave the target out of its title's statistics in training
    cold_share: float = 0.3  # share of training rows given a short-history (cold-start) user
    cold_max: int = 10  # longest revealed history of those rows
    seed: int = 42
    jit_compile: bool = False  # XLA for the training step (slower on small CPU runs)
    in_memory_rows: int = 4_000_000  # larger train sets stream their examples in chunks
    chunk_rows: int = 1_000_000  # ratings (whole users) per streamed chunk
    # feature transform
    item_lambda: float = 25.0
    user_lambda: float = 10.0
    mean_lambda: float = 5.0
    genre_lambda: float = 5.0
    share_alpha: float = 10.0
    recent_window: int = 20
    latent_dim: int = 32
    latent_shrink: float = 5.0

    def feature_params(self) -> dict[str, Any]:
        names = ("item_lambda", "user_lambda", "mean_lambda", "genre_lambda", "share_alpha",
                 "recent_window", "latent_dim", "latent_shrink", "seed")  # fmt: skip
        return {n: getattr(self, n) for n in names}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tower_units"] = list(self.tower_units)
        d["head_units"] = list(self.head_units)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TwoTowerParams:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in data.items() if k in known}
        for k in ("tower_units", "head_units"):
            if k in d:
                d[k] = tuple(int(x) for x in d[k])
        return cls(**d)


# ------------------------------------------------------------------------------ the networks


def _block(x: Any, units: int, dropout: float, name: str) -> Any:
    import keras

    x = keras.layers.Dense(units, name=f"{name}_dense")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    x = keras.layers.Activation("gelu", name=f"{name}_gelu")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


def build_networks(
    n_user_features: int, n_item_features: int, n_item_ids: int, params: TwoTowerParams
) -> dict[str, Any]:
    """The user tower, item tower, fusion head and the composed rating model (functional)."""
    import keras

    ux = keras.Input((n_user_features,), name="user_features")
    h = ux
    if params.user_noise > 0:  # training-time only: blurs user identity, curbs memorisation
        h = keras.layers.GaussianNoise(params.user_noise, seed=params.seed, name="user_noise")(h)
    for j, units in enumerate(params.tower_units):
        h = _block(h, units, params.dropout, f"user_{j}")
    u = keras.layers.Dense(params.embedding_dim, name="user_project")(h)
    u = keras.layers.UnitNormalization(name="user_embedding")(u)
    user_tower = keras.Model(ux, u, name="user_tower")

    ix = keras.Input((n_item_features,), name="item_features")
    iid = keras.Input((), dtype="int32", name="item_index")
    h = ix
    if params.item_id_dim > 0:
        e = keras.layers.Embedding(
            n_item_ids + 1,
            params.item_id_dim,
            embeddings_regularizer=keras.regularizers.L2(1e-5),
            name="item_id_embedding",
        )(iid)
        h = keras.layers.Concatenate(name="item_inputs")([ix, e])
    for j, units in enumerate(params.tower_units):
        h = _block(h, units, params.dropout, f"item_{j}")
    v = keras.layers.Dense(params.embedding_dim, name="item_project")(h)
    v = keras.layers.UnitNormalization(name="item_embedding")(v)
    b = keras.layers.Dense(1, name="item_rank_bias")(h)
    b = keras.layers.Reshape((), name="item_bias")(b)
    item_tower = keras.Model([ix, iid], [v, b], name="item_tower")

    hu = keras.Input((params.embedding_dim,), name="u")
    hv = keras.Input((params.embedding_dim,), name="v")
    base = keras.Input((1,), name="baseline")
    diff = keras.layers.Subtract(name="u_minus_v")([hu, hv])
    negdiff = keras.layers.Rescaling(-1.0, name="v_minus_u")(diff)
    absdiff = keras.layers.Maximum(name="abs_diff")([diff, negdiff])
    prod = keras.layers.Multiply(name="u_times_v")([hu, hv])
    centred = keras.layers.Rescaling(1.0, offset=-3.5, name="baseline_centred")(base)
    f = keras.layers.Concatenate(name="fusion")([hu, hv, absdiff, prod, centred])
    for j, units in enumerate(params.head_units):
        f = keras.layers.Dense(units, activation="gelu", name=f"head_{j}")(f)
    res = keras.layers.Dense(1, name="residual")(f)
    rating = keras.layers.Add(name="rating_unclipped")([base, res])
    rating = keras.layers.Reshape((), name="rating")(rating)
    head = keras.Model([hu, hv, base], rating, name="fusion_head")

    in_u = keras.Input((n_user_features,), name="user_features")
    in_i = keras.Input((n_item_features,), name="item_features")
    in_id = keras.Input((), dtype="int32", name="item_index")
    in_b = keras.Input((1,), name="baseline")
    uu = user_tower(in_u)
    vv, bb = item_tower([in_i, in_id])
    out = head([uu, vv, in_b])
    model = keras.Model(
        {"user_features": in_u, "item_features": in_i, "item_index": in_id, "baseline": in_b},
        {"rating": out, "user_embedding": uu, "item_embedding": vv, "item_bias": bb},
        name="two_tower",
    )
    return {"model": model, "user_tower": user_tower, "item_tower": item_tower, "head": head}


# --------------------------------------------------------------------------- trained model


@dataclass
class TrainedTwoTower:
    """A trained two-tower model with its feature transform, catalogue item features and the
    ranking rule chosen on validation (`recommender_lib.engine.ranking`).

    Rating prediction follows the `RatingModel` protocol of `recommender_lib.evaluation.protocols`;
    ranking goes through `recommender_lib.engine.ranking.RankingEngine`, as in the API.
    """

    model: Any  # the composed keras.Model (towers and head are nested models)
    transform: FeatureTransform
    items: ItemFeatures
    params: TwoTowerParams
    item_index: np.ndarray  # int32 id-embedding row of each catalogue item (0 = OOV)
    temperature: float
    ranking: RankingRule = field(default_factory=RankingRule)
    history: dict[str, list[float]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    name: str = "two_tower"
    _item_cache: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    _engine: RankingEngine | None = field(default=None, repr=False)

    # --- sub-models
    @property
    def user_tower(self) -> Any:
        return self.model.get_layer("user_tower")

    @property
    def item_tower(self) -> Any:
        return self.model.get_layer("item_tower")

    @property
    def head(self) -> Any:
        return self.model.get_layer("fusion_head")

    # --- features
    def _item_inputs(self, movie_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = self.items.index_of(movie_ids)
        rows = self.items.rows(movie_ids, self.transform)
        ids = np.where(idx >= 0, self.item_index[np.maximum(idx, 0)], 0).astype(np.int32)
        return rows, ids

    def user_features(self, history: pd.DataFrame, user_ids: np.ndarray) -> np.ndarray:
        hist = check_ratings(history) if len(history) else _empty_ratings()
        return user_feature_matrix(hist, self.items, self.transform, user_ids)[1]

    # --- embeddings
    def user_embeddings(self, user_x: np.ndarray) -> np.ndarray:
        return _predict(self.user_tower, user_x)

    def _embed_items(self, rows: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v, b = _predict(self.item_tower, [rows, ids])
        return v, b

    def _catalogue(self) -> tuple[np.ndarray, np.ndarray]:
        if self._item_cache is None:
            rows = self.items.matrix
            self._item_cache = self._embed_items(rows, self.item_index.astype(np.int32))
        return self._item_cache

    def item_vectors(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(L2-normalised embeddings, item-tower ranking biases) of `item_ids`; ids outside the
        item features go through the item tower with content-only rows."""
        v, b = self._catalogue()
        ids = np.asarray(item_ids, dtype=np.int64)
        idx = self.items.index_of(ids)
        if (idx >= 0).all():
            return v[idx], b[idx]
        out_v, out_b = np.empty((len(ids), v.shape[1]), np.float32), np.empty(len(ids), np.float32)
        out_v[idx >= 0], out_b[idx >= 0] = v[idx[idx >= 0]], b[idx[idx >= 0]]
        out_v[idx < 0], out_b[idx < 0] = self._embed_items(*self._item_inputs(ids[idx < 0]))
        return out_v, out_b

    def head_predict(self, u: np.ndarray, v: np.ndarray, base: np.ndarray) -> np.ndarray:
        """Fusion-head stars (unclipped, float64) of aligned user/item embeddings + baseline."""
        pred = _predict(self.head, [u, v, np.asarray(base, np.float32).reshape(-1, 1)])
        return np.asarray(pred, dtype=np.float64).ravel()

    # --- RatingModel protocol
    def predict(self, history: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
        """Predicted stars for (user_id, movie_id) pairs given each user's known ratings."""
        if len(pairs) == 0:
            return np.zeros(0, dtype=np.float64)
        users, inv = np.unique(pairs["user_id"].to_numpy(np.int64), return_inverse=True)
        items, jnv = np.unique(pairs["movie_id"].to_numpy(np.int64), return_inverse=True)
        ux = self.user_features(history, users)
        u = self.user_embeddings(ux)
        v, _ = self.item_vectors(items)
        base = baseline_prediction(ux[inv], self.items.biases(items)[jnv], self.transform)
        return np.clip(self.head_predict(u[inv], v[jnv], base), MIN_STARS, MAX_STARS)

    def rank_catalogue(
        self,
        history: pd.DataFrame,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        exclude: np.ndarray,
        k: int,
    ) -> np.ndarray:
        """(n_users, k) positions into `item_ids` recommended to each user, through the served
        `RankingEngine` with this model's rule (`exclude`: boolean (n_users, n_items) mask)."""
        ids = np.asarray(item_ids, dtype=np.int64)
        cached = self._engine
        if cached is None or not np.array_equal(cached.item_ids, ids):
            cached = self._engine = RankingEngine.from_model(self, ids)
        users = np.asarray(user_ids, dtype=np.int64)
        counts = history.groupby("user_id").size().reindex(users, fill_value=0)
        ux = self.user_features(history, users)
        return cached.rank(ux, counts.to_numpy(), k, excluded=exclude).rows

    def predict_from_ratings(self, ratings: pd.DataFrame, item_ids: np.ndarray) -> np.ndarray:
        """Predicted stars of `item_ids` for one (possibly new) user from their ratings."""
        df = ratings.copy()
        df["user_id"] = -1
        if "rating_ts" not in df.columns:
            df["rating_ts"] = np.int64(self.transform.train_end_ts)
        pairs = pd.DataFrame({"user_id": -1, "movie_id": np.asarray(item_ids, dtype=np.int64)})
        return self.predict(df, pairs)

    # --- persistence
    def save(self, directory: str | Path) -> Path:
        """Write the Keras model, the JSON transform, the item features and a JSON manifest."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save(out / MODEL_FILE)
        (out / TRANSFORM_FILE).write_text(self.transform.to_json())
        self.items.to_npz(out / ITEMS_FILE)
        meta = {
            "name": self.name,
            "params": self.params.to_dict(),
            "temperature": self.temperature,
            "ranking": self.ranking.to_dict(),
            "history": self.history,
            "info": self.info,
        }
        (out / META_FILE).write_text(json.dumps(meta, indent=1, default=_json_default))
        np.save(out / "item_index.npy", self.item_index, allow_pickle=False)
        return out

    @classmethod
    def load(cls, directory: str | Path) -> TrainedTwoTower:
        import keras

        d = Path(directory)
        model = keras.saving.load_model(d / MODEL_FILE, compile=False)
        meta = json.loads((d / META_FILE).read_text())
        if not isinstance(meta.get("ranking"), dict):
            raise UnknownRankingRuleError(f"{d / META_FILE} names no ranking rule")
        return cls(
            model=model,
            transform=FeatureTransform.from_json((d / TRANSFORM_FILE).read_text()),
            items=ItemFeatures.from_npz(d / ITEMS_FILE),
            params=TwoTowerParams.from_dict(meta["params"]),
            item_index=np.load(d / "item_index.npy", allow_pickle=False),
            temperature=float(meta["temperature"]),
            ranking=RankingRule.from_dict(meta["ranking"]),
            history=meta.get("history", {}),
            info=meta.get("info", {}),
            name=meta.get("name", "two_tower"),
        )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def _empty_ratings() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": np.zeros(0, np.int64),
            "movie_id": np.zeros(0, np.int64),
            "rating": np.zeros(0, np.float64),
            "rating_ts": np.zeros(0, np.int64),
        }
    )


def _predict(model: Any, inputs: Any, batch_size: int = 8192) -> Any:
    """Run `model` in inference mode over arrays in chunks (no tf.data, no callbacks).

    Through one traced function per model with a batch dimension of None (`_inference_fn`):
    every call — a one-user request, an evaluation batch, a validation pass, a model loaded
    from disk — runs the same graph, so equal inputs give bit-equal outputs, and a request costs
    ~1 ms per call where an eager `model(x)` costs ~10 ms.
    """
    fn = _inference_fn(model)
    arrays = inputs if isinstance(inputs, list) else [inputs]
    n = len(arrays[0])
    outs: list[Any] = []
    for start in range(0, max(n, 1), batch_size):
        chunk = [a[start : start + batch_size] for a in arrays]
        res = fn(*chunk)
        res = [np.asarray(r) for r in res] if isinstance(res, list | tuple) else np.asarray(res)
        outs.append(res)
        if n == 0:
            break
    if isinstance(outs[0], list):
        return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]
    return np.concatenate(outs)


_INFERENCE_FNS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _inference_fn(model: Any) -> Any:
    """`model(inputs, training=False)` as a tf.function with a fixed, batch-agnostic signature."""
    fn = _INFERENCE_FNS.get(model)
    if fn is None:
        import tensorflow as tf

        specs = [tf.TensorSpec((None, *t.shape[1:]), t.dtype) for t in model.inputs]
        several = len(specs) > 1

        def infer(*xs: Any) -> Any:
            return model(list(xs) if several else xs[0], training=False)

        fn = _INFERENCE_FNS[model] = tf.function(infer, input_signature=specs)
    return fn


# -------------------------------------------------------------------------------- training


def _item_id_index(items: ItemFeatures, min_count: int) -> np.ndarray:
    """Embedding row per catalogue item: 1.. for titles with >= min_count ratings, else 0 (OOV)."""
    keep = items.count >= max(min_count, 1)
    index = np.zeros(len(items), dtype=np.int32)
    index[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return index


def _examples(
    train: pd.DataFrame,
    idx: np.ndarray,
    items: ItemFeatures,
    transform: FeatureTransform,
    p: TwoTowerParams,
    item_index: np.ndarray,
    logq_item: np.ndarray,
    seed: Seed,
) -> dict[str, np.ndarray]:
    """The model inputs and targets of each row of `train` (float32, ids int32), in its order.

    `idx`: the rows' catalogue positions; `logq_item`: log of each title's share of ALL train
    ratings (the in-batch sampling probability), the same for every chunk.
    """
    ux = training_user_features(
        train, items, transform, p.user_scheme,  # type: ignore[arg-type]
        cold_share=p.cold_share, cold_max=p.cold_max, seed=seed,
    )  # fmt: skip
    ix = training_item_rows(train, items, transform) if p.item_loo else items.matrix[idx]
    y = train["rating"].to_numpy(np.float32)
    return {
        "ux": ux,
        "ix": ix,
        "ids": item_index[idx].astype(np.int32),
        "base": baseline_prediction(ux, ix[:, transform.item_bias_column], transform).astype(
            np.float32
        ),
        "y": y,
        "pos": (y >= p.retrieval_min_rating).astype(np.float32),
        "logq": logq_item[idx],
    }


class _ExampleStream:
    """Training batches built chunk by chunk, for train sets too big to hold as tensors.

    Chunks hold whole users (`chunk_rows` ratings or so), so `prefix` user features equal the
    unchunked ones; a chunk's cold-start draws are seeded by (seed, chunk). Each epoch visits
    the chunks in a seeded random order, shuffles the rows within each and drops the chunk's
    last partial batch (as `drop_remainder` does for the whole set in memory).
    """

    def __init__(
        self,
        train: pd.DataFrame,
        idx: np.ndarray,
        build: Callable[[pd.DataFrame, np.ndarray, Seed], dict[str, np.ndarray]],
        p: TwoTowerParams,
        log: Callable[[str], None] | None,
    ) -> None:
        self.train, self.idx, self.build, self.p, self.log = train, idx, build, p, log
        self.chunks = user_row_chunks(train["user_id"].to_numpy(), p.chunk_rows)

    @property
    def steps_per_epoch(self) -> int:
        return sum(max(len(c) // self.p.batch_size, 1) for c in self.chunks)

    def batches(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        bs = self.p.batch_size
        rng = np.random.default_rng((self.p.seed, 1, epoch))
        for n, c in enumerate(rng.permutation(len(self.chunks))):
            t = time.perf_counter()
            rows = rng.permutation(self.chunks[c])
            arrays = self.build(self.train.iloc[rows], self.idx[rows], (self.p.seed, 0, int(c)))
            if self.log:
                took = time.perf_counter() - t
                self.log(f"epoch {epoch + 1}: chunk {n + 1}/{len(self.chunks)}, {len(rows):,} rows "
                         f"built in {took:.1f}s")  # fmt: skip
            for start in range(0, max(len(rows) // bs, 1) * bs, bs):
                yield {name: a[start : start + bs] for name, a in arrays.items()}
            del arrays  # before the next chunk is built


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
    they are streamed in chunks of whole users (`_ExampleStream`), and the validation NDCG@10
    (monitoring and the ranking-rule choice) is computed on a seeded sample of at most
    `NDCG_MAX_USERS` validation users (RMSE always uses every validation row); `info` records
    which (`examples`, `chunks`, `ndcg_users`).
    """
    import keras
    import tensorflow as tf

    p = params or TwoTowerParams()
    keras.utils.set_random_seed(p.seed)
    t0 = time.perf_counter()
    train = check_ratings(train)
    item_index = _item_id_index(items, p.id_min_count)
    n_ids = int(item_index.max()) if len(item_index) else 0

    # Training examples (`_examples`): user features by the chosen scheme, item rows without the
    # target, the in-batch log-Q of each title from the whole train set.
    idx = items.index_of(train["movie_id"].to_numpy())
    if (idx < 0).any():
        raise ValueError("train references titles outside the item features")
    freq = np.bincount(idx, minlength=len(items)).astype(np.float64)
    logq_item = np.log(np.maximum(freq, 1.0) / max(len(train), 1)).astype(np.float32)

    def build(rows: pd.DataFrame, rows_idx: np.ndarray, seed: Seed) -> dict[str, np.ndarray]:
        return _examples(rows, rows_idx, items, transform, p, item_index, logq_item, seed)

    stream = None if len(train) <= p.in_memory_rows else _ExampleStream(train, idx, build, p, log)

    nets = build_networks(len(transform.user_columns), items.matrix.shape[1], n_ids, p)
    model, user_tower, item_tower, head = (
        nets["model"], nets["user_tower"], nets["item_tower"], nets["head"]
    )  # fmt: skip
    steps_per_epoch = (
        max(len(train) // p.batch_size, 1) if stream is None else stream.steps_per_epoch
    )
    lr: Any = p.learning_rate
    if p.lr_decay:
        lr = keras.optimizers.schedules.CosineDecay(
            p.learning_rate, decay_steps=steps_per_epoch * p.epochs, alpha=0.05
        )
    opt = keras.optimizers.AdamW(learning_rate=lr, weight_decay=p.weight_decay)

    # tf.data. In memory: the examples are tensors; the pipeline shuffles (cached) row indices,
    # batches them and gathers each batch (10x faster than shuffling 70k dict elements one by
    # one). Streamed: a generator yields shuffled batches chunk by chunk. Both then drop item
    # ids to the OOV bucket at random and prefetch.
    drop_rate = float(p.item_id_dropout)

    def drop_ids(batch: dict[str, Any]) -> dict[str, Any]:
        keep = tf.random.uniform(tf.shape(batch["ids"]), seed=p.seed) >= drop_rate
        batch["ids_in"] = tf.where(keep, batch["ids"], tf.zeros_like(batch["ids"]))
        return batch

    if stream is None:
        examples = build(train, idx, p.seed)
        tensors = {name: tf.constant(examples.pop(name)) for name in list(examples)}

        def gather(rows: Any) -> dict[str, Any]:
            return drop_ids({name: tf.gather(t, rows) for name, t in tensors.items()})

        ds = tf.data.Dataset.range(len(train)).cache()
        ds = ds.shuffle(len(train), seed=p.seed, reshuffle_each_iteration=True)
        ds = ds.batch(p.batch_size, drop_remainder=len(train) > p.batch_size)
        ds = ds.map(gather, num_parallel_calls=1, deterministic=True)
    else:
        epochs, batches = itertools.count(), stream.batches
        vector = tf.TensorSpec((None,), tf.float32)
        signature = {
            "ux": tf.TensorSpec((None, len(transform.user_columns)), tf.float32),
            "ix": tf.TensorSpec((None, items.matrix.shape[1]), tf.float32),
            "ids": tf.TensorSpec((None,), tf.int32),
            **{name: vector for name in ("base", "y", "pos", "logq")},
        }
        ds = tf.data.Dataset.from_generator(
            lambda: batches(next(epochs)), output_signature=signature
        )
        ds = ds.map(drop_ids, num_parallel_calls=1, deterministic=True)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    tau = float(p.temperature)
    w_ret = float(p.retrieval_weight)
    variables = model.trainable_variables

    @tf.function(reduce_retracing=True, jit_compile=p.jit_compile)
    def train_step(batch: dict[str, Any]) -> tuple[Any, Any]:
        with tf.GradientTape() as tape:
            u = user_tower(batch["ux"], training=True)
            v, b = item_tower([batch["ix"], batch["ids_in"]], training=True)
            pred = head([u, v, batch["base"][:, None]], training=True)
            mse = tf.reduce_mean(tf.square(batch["y"] - pred))
            loss = mse
            ret = tf.constant(0.0)
            if w_ret > 0:
                logits = tf.matmul(u, v, transpose_b=True) / tau + b[None, :]
                if p.logq_correction:
                    logits = logits - batch["logq"][None, :]
                same = tf.equal(batch["ids"][:, None], batch["ids"][None, :])
                same = tf.logical_and(same, batch["ids"][:, None] > 0)
                eye = tf.eye(tf.shape(u)[0], dtype=tf.bool)
                logits = tf.where(tf.logical_and(same, ~eye), -1e9, logits)
                labels = tf.range(tf.shape(u)[0])
                ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
                wpos = batch["pos"]
                ret = tf.reduce_sum(ce * wpos) / tf.maximum(tf.reduce_sum(wpos), 1.0)
                loss = loss + w_ret * ret
            reg = tf.add_n(model.losses) if model.losses else tf.constant(0.0)
            loss = loss + reg
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables, strict=True))
        return mse, ret

    # Validation: RMSE over every validation row (users' features from their train history) and
    # NDCG@10 through the ranking engine, as served (a seeded sample of users when streaming).
    val = None
    if validation is not None and len(validation):
        val = check_ratings(validation)
        vhist = check_ratings(validation_history) if validation_history is not None else train
        v_users, v_inv = np.unique(val["user_id"].to_numpy(), return_inverse=True)
        vux = user_feature_matrix(vhist, items, transform, v_users)[1]
        v_movies, v_jnv = np.unique(val["movie_id"].to_numpy(), return_inverse=True)
        v_pos = items.index_of(v_movies)
        v_rows = items.rows(v_movies, transform)
        v_ids = np.where(v_pos >= 0, item_index[np.maximum(v_pos, 0)], 0).astype(np.int32)
        vbase = baseline_prediction(vux[v_inv], items.biases(val["movie_id"]), transform)
        vy = val["rating"].to_numpy(np.float64)
        probe_users = v_users
        if stream is not None and len(v_users) > NDCG_MAX_USERS:
            rng = np.random.default_rng(p.seed)
            probe_users = np.sort(rng.choice(v_users, NDCG_MAX_USERS, replace=False))
        warm = ranking_probe(vhist, val, items, transform, user_ids=probe_users)

    def snapshot(info: dict[str, Any], rule: RankingRule) -> TrainedTwoTower:
        return TrainedTwoTower(model, transform, items, p, item_index, tau, rule, history, info)

    history: dict[str, list[float]] = {
        k: []
        for k in ("loss_mse", "loss_retrieval", "val_rmse", "val_ndcg10", "seconds", "val_seconds")
    }
    best_rmse, best_epoch, best_weights, waited = math.inf, -1, None, 0
    for epoch in range(fixed_epochs or p.epochs):
        te = time.perf_counter()
        mses, rets = [], []
        for batch in ds:
            m, r = train_step(batch)
            mses.append(float(m))
            rets.append(float(r))
        history["loss_mse"].append(float(np.mean(mses)))
        history["loss_retrieval"].append(float(np.mean(rets)))
        tv = time.perf_counter()
        if val is not None:
            u = _predict(user_tower, vux)
            vv = _predict(item_tower, [v_rows, v_ids])[0][v_jnv]
            pred = _predict(head, [u[v_inv], vv, vbase[:, None].astype(np.float32)])
            rmse = float(np.sqrt(np.mean((np.clip(pred, MIN_STARS, MAX_STARS) - vy) ** 2)))
            engine = RankingEngine.from_model(snapshot({}, RankingRule()), items.item_ids)
            history["val_rmse"].append(rmse)
            history["val_ndcg10"].append(warm.ndcg(engine, RankingRule()))
        else:
            rmse = history["loss_mse"][-1]
        history["val_seconds"].append(time.perf_counter() - tv)
        history["seconds"].append(time.perf_counter() - te)
        if log:
            log(
                f"epoch {epoch + 1}: mse {history['loss_mse'][-1]:.4f} "
                f"ret {history['loss_retrieval'][-1]:.3f} "
                + (
                    f"val_rmse {rmse:.4f} val_ndcg10 {history['val_ndcg10'][-1]:.4f} "
                    if val is not None
                    else ""
                )
                + f"({history['seconds'][-1]:.1f}s, validation {history['val_seconds'][-1]:.1f}s)"
            )
        if on_epoch is not None:
            on_epoch(epoch, snapshot({}, ranking or RankingRule()))
        if fixed_epochs:  # a refit: no early stopping, the last weights are the result
            best_epoch = epoch
            continue
        if rmse < best_rmse - 1e-5:
            best_rmse, best_epoch, waited = rmse, epoch, 0
            best_weights = model.get_weights()
        else:
            waited += 1
            if waited >= p.patience:
                break
    if best_weights is not None:
        model.set_weights(best_weights)
    info = {
        "best_epoch": best_epoch + 1,
        "epochs_run": len(history["loss_mse"]),
        "best_val_rmse": best_rmse if val is not None else None,
        "train_rows": len(train),
        "examples": "in_memory" if stream is None else "streamed",
        "chunks": 1 if stream is None else len(stream.chunks),
        "ndcg_users": len(warm.seen) if val is not None else 0,
        "train_seconds": round(time.perf_counter() - t0, 2),
        "n_item_ids": n_ids,
    }
    rule, search = ranking or RankingRule(), {}
    if ranking is None and val is not None:
        # The ordering and its constants, chosen on validation through the served ranking.
        engine = RankingEngine.from_model(snapshot(info, rule), items.item_ids)
        cold = cold_probes(vhist, val, items, transform, user_ids=probe_users)
        rule, search = choose_rule(engine, warm, cold, log)
    info |= {"ranking_rule": rule.to_dict(), "ranking_validation_ndcg10": search}
    info["train_seconds"] = round(time.perf_counter() - t0, 2)
    return snapshot(info, rule)


def fit_features(
    conn: Any, train: pd.DataFrame, params: TwoTowerParams | None = None, **kwargs: Any
) -> tuple[FeatureTransform, ItemFeatures]:
    """Fit the feature transform and build the catalogue's item features from `train` only."""
    p = params or TwoTowerParams()
    transform = fit_feature_transform(conn, train, **p.feature_params(), **kwargs)
    return transform, build_item_features(conn, train, transform, **kwargs)


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
