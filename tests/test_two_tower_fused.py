"""The towers' own layers and optimizer train like the Keras ones they replace (and the layers
infer exactly as those)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from recommender_lib.modeling.two_tower import layers, optimizer


def _batch_norm_pair() -> tuple:
    """A Keras batch-norm and a fused one with the same (non-trivial) weights."""
    rng = np.random.default_rng(0)
    reference, fused = keras.layers.BatchNormalization(), layers.FusedBatchNormalization()
    for layer in (reference, fused):
        layer.build((None, 12))
    weights = [rng.normal(1.0, 0.3, 12), rng.normal(0.0, 0.3, 12),
               rng.normal(0.0, 0.1, 12), rng.uniform(0.5, 2.0, 12)]  # fmt: skip
    for layer in (reference, fused):
        layer.set_weights([w.astype(np.float32) for w in weights])
    return reference, fused


def test_fused_batch_norm_trains_and_infers_like_keras() -> None:
    reference, fused = _batch_norm_pair()
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(2.0, 3.0, (300, 12)), tf.float32)
    upstream = tf.constant(rng.normal(size=(300, 12)), tf.float32)  # a loss's gradient
    outputs, grads = [], []
    for layer in (reference, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * upstream)
        outputs.append(y.numpy())
        grads.append([g.numpy() for g in tape.gradient(loss, [x, layer.gamma, layer.beta])])
    np.testing.assert_allclose(outputs[1], outputs[0], atol=2e-5)
    for got, want in zip(grads[1], grads[0], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    for got, want in zip(fused.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5)  # the moving statistics too
    fused.set_weights(reference.get_weights())  # inference is Keras' own code
    np.testing.assert_array_equal(fused(x, training=False), reference(x, training=False))


@pytest.mark.parametrize("rate", [0.1, 0.5])
@pytest.mark.parametrize("units", [256, 10], ids=["whole_words", "ragged"])
def test_byte_mask_dropout_drops_its_rate_and_keeps_the_mean(rate: float, units: int) -> None:
    layer = layers.ByteMaskDropout(rate, seed=3)
    x = tf.ones((4000, units))
    first, second = layer(x, training=True).numpy(), layer(x, training=True).numpy()
    cut = round(rate * 256)
    assert np.mean(first == 0) == pytest.approx(cut / 256, abs=0.01)
    assert set(np.unique(first)) == {0.0, np.float32(256 / (256 - cut))}
    assert first.mean() == pytest.approx(1.0, abs=0.02)
    assert not np.array_equal(first, second)  # a new mask each step
    np.testing.assert_array_equal(layer(x, training=False), x)


def test_layers_round_trip_through_keras_serialisation(tmp_path) -> None:
    inputs = keras.Input((6,))
    h = layers.FusedBatchNormalization(name="bn")(keras.layers.Dense(8, use_bias=False)(inputs))
    model = keras.Model(inputs, layers.ByteMaskDropout(0.2, name="drop")(h))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    assert isinstance(loaded.get_layer("bn"), layers.FusedBatchNormalization)
    assert isinstance(loaded.get_layer("drop"), layers.ByteMaskDropout)
    x = np.random.default_rng(2).normal(size=(5, 6)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x, training=False), model(x, training=False))


def test_fused_adamw_updates_like_keras_adamw() -> None:
    """Five steps of a cosine-decayed AdamW with weight decay: the same variables."""
    rng = np.random.default_rng(4)
    start = [rng.normal(size=(7, 5)).astype(np.float32), rng.normal(size=5).astype(np.float32)]
    grads = [[tf.constant(rng.normal(size=w.shape), tf.float32) for w in start] for _ in range(5)]
    schedule = keras.optimizers.schedules.CosineDecay(0.01, decay_steps=5, alpha=0.05)
    reference_vars = [keras.Variable(w) for w in start]
    fused_vars = [keras.Variable(w) for w in start]
    reference = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=0.1)
    fused = optimizer.FusedAdamW(fused_vars, schedule, weight_decay=0.1)
    step = tf.function(fused.apply, autograph=False)  # as in the training step
    for g in grads:
        reference.apply_gradients(zip(g, reference_vars, strict=True))
        step(g)
    for got, want in zip(fused_vars, reference_vars, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    assert int(fused.iterations.numpy()) == int(reference.iterations.numpy()) == 5
