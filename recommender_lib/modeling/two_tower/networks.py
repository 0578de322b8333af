"""The two-tower networks (Keras 3 functional models), the training loss and batched inference.

TensorFlow/Keras are imported inside functions only, so importing this module is cheap.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from recommender_lib.modeling.two_tower.params import TwoTowerParams

Networks = dict[str, Any]  # "model" (composed), "user_tower", "item_tower", "head"


def _block(x: Any, units: int, dropout: float, activation: str, name: str) -> Any:
    """Dense (no bias: the batch-norm's offset is one) -> batch-norm -> activation -> dropout."""
    import keras

    from recommender_lib.modeling.two_tower.layers import ByteMaskDropout, FusedBatchNormalization

    x = keras.layers.Dense(units, use_bias=False, name=f"{name}_dense")(x)
    x = FusedBatchNormalization(name=f"{name}_bn")(x)
    x = keras.layers.Activation(activation, name=f"{name}_{activation}")(x)
    if dropout > 0:
        x = ByteMaskDropout(dropout, name=f"{name}_dropout")(x)
    return x


def _user_tower(n_user_features: int, params: TwoTowerParams) -> Any:
    import keras

    ux = keras.Input((n_user_features,), name="user_features")
    h = ux
    for j, units in enumerate(params.tower_units):
        h = _block(h, units, params.dropout, params.activation, f"user_{j}")
    u = keras.layers.Dense(params.embedding_dim, name="user_project")(h)
    u = keras.layers.UnitNormalization(name="user_embedding")(u)
    return keras.Model(ux, u, name="user_tower")


def _item_tower(n_item_features: int, n_item_ids: int, params: TwoTowerParams) -> Any:
    import keras

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
        h = _block(h, units, params.dropout, params.activation, f"item_{j}")
    v = keras.layers.Dense(params.embedding_dim, name="item_project")(h)
    v = keras.layers.UnitNormalization(name="item_embedding")(v)
    b = keras.layers.Dense(1, name="item_rank_bias")(h)
    b = keras.layers.Reshape((), name="item_bias")(b)
    return keras.Model([ix, iid], [v, b], name="item_tower")


def _fusion_head(params: TwoTowerParams) -> Any:
    import keras

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
        f = keras.layers.Dense(units, activation=params.activation, name=f"head_{j}")(f)
    res = keras.layers.Dense(1, name="residual")(f)
    rating = keras.layers.Add(name="rating_unclipped")([base, res])
    rating = keras.layers.Reshape((), name="rating")(rating)
    return keras.Model([hu, hv, base], rating, name="fusion_head")


def build_networks(
    n_user_features: int, n_item_features: int, n_item_ids: int, params: TwoTowerParams
) -> Networks:
    """The user tower, item tower, fusion head and the composed rating model (functional)."""
    import keras

    user_tower = _user_tower(n_user_features, params)
    item_tower = _item_tower(n_item_features, n_item_ids, params)
    head = _fusion_head(params)
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


def rating_loss(y: Any, pred: Any) -> Any:
    """Mean squared error in stars."""
    import tensorflow as tf

    return tf.reduce_mean(tf.square(y - pred))


def retrieval_loss(u: Any, v: Any, b: Any, batch: dict[str, Any], params: TwoTowerParams) -> Any:
    """In-batch sampled softmax on u·v/τ + b (minus the log-Q of each title when corrected),
    the other rows of the same title masked out, weighted by the retrieval positives.

    The batch is cut into groups of `softmax_group` rows and each row's negatives are the other
    rows of its group (the whole batch when it is no larger), so the loss costs the same per
    example at any batch size; a trailing partial group is its own, smaller group.
    """
    import tensorflow as tf

    n = tf.shape(u)[0]
    g = tf.minimum(n, max(int(params.softmax_group), 2))
    pad = (g - n % g) % g  # padded rows: id -1, zero weight, never a positive nor a negative
    ids = tf.pad(batch["ids"], [[0, pad]], constant_values=-1)
    wpos = tf.pad(batch["pos"], [[0, pad]])
    # τ and the per-title column terms applied to vectors, not to the (rows x group) logits
    u = u / float(params.temperature)
    column = b - batch["logq"] if params.logq_correction else b
    u, v = tf.pad(u, [[0, pad], [0, 0]]), tf.pad(v, [[0, pad], [0, 0]])
    column = tf.pad(column, [[0, pad]])
    groups = (n + pad) // g
    grouped = [tf.reshape(x, [groups, g, -1]) for x in (u, v)]
    ids, column, wpos = (tf.reshape(x, [groups, g]) for x in (ids, column, wpos))
    logits = tf.matmul(*grouped, transpose_b=True) + column[:, None, :]
    same = tf.equal(ids[:, :, None], ids[:, None, :])
    eye = tf.eye(g, dtype=tf.bool)[None]
    masked = tf.logical_and(same, ids[:, :, None] > 0) & ~eye | (ids[:, None, :] < 0) & ~eye
    logits = tf.where(masked, -1e9, logits)
    labels = tf.broadcast_to(tf.range(g)[None, :], [groups, g])
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    return tf.reduce_sum(ce * wpos) / tf.maximum(tf.reduce_sum(wpos), 1.0)


def compute_loss(nets: Networks, batch: dict[str, Any], params: TwoTowerParams) -> tuple:
    """(total loss, rating MSE, retrieval loss) of a training batch, in training mode."""
    import tensorflow as tf

    u = nets["user_tower"](batch["ux"], training=True)
    v, b = nets["item_tower"]([batch["ix"], batch["ids_in"]], training=True)
    pred = nets["head"]([u, v, batch["base"][:, None]], training=True)
    mse = rating_loss(batch["y"], pred)
    loss = mse
    ret = tf.constant(0.0)
    w_ret = float(params.retrieval_weight)
    if w_ret > 0:
        ret = retrieval_loss(u, v, b, batch, params)
        loss = loss + w_ret * ret
    losses = nets["model"].losses
    reg = tf.add_n(losses) if losses else tf.constant(0.0)
    return loss + reg, mse, ret


def infer(model: Any, inputs: Any, batch_size: int = 8192) -> Any:
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

        def call(*xs: Any) -> Any:
            return model(list(xs) if several else xs[0], training=False)

        fn = _INFERENCE_FNS[model] = tf.function(call, input_signature=specs)
    return fn
