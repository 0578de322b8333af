"""Keras layers of the towers whose training pass costs fewer TensorFlow ops than Keras' own.

Both subclass the Keras layer they replace, keep its weights and configuration, and run Keras'
code at inference, so a model built with them predicts like one built with the Keras layers.
They are registered for serialisation under `PACKAGE`: importing this module (which
`networks.build_networks` and `TrainedTwoTower.load` do) lets Keras load a saved model.
Why, measured: docs/architecture.md §6.7 and BENCHMARKS.md, "Training throughput".
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

PACKAGE = "cine_reco"
MASK_LEVELS = 256  # a dropout mask element is one random byte


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose training pass over (rows, units) inputs is
    TensorFlow's fused kernel: one op forward and one backward instead of about ten
    element-wise ones. The moving statistics are updated as Keras does (biased variance)."""

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        if not (training and self.trainable and mask is None and self._fusable(inputs)):
            return super().call(inputs, training=training, mask=mask)
        units = inputs.shape[-1]
        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=tf.reshape(inputs, [-1, 1, 1, units]),
            scale=tf.convert_to_tensor(self.gamma),
            offset=tf.convert_to_tensor(self.beta),
            mean=tf.constant([], tf.float32),
            variance=tf.constant([], tf.float32),
            epsilon=self.epsilon,
            is_training=True,
        )
        rows = tf.cast(tf.shape(inputs)[0], tf.float32)
        variance = variance * (rows - 1.0) / tf.maximum(rows, 1.0)  # the kernel's is unbiased
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
        return tf.reshape(y, tf.shape(inputs))

    def _fusable(self, inputs: Any) -> bool:
        """2-D float32 inputs normalised over their last axis, with both scale and offset, on
        one replica."""
        return (
            not self.synchronized
            and len(inputs.shape) == 2
            and inputs.dtype == tf.float32
            and self.axis in (-1, 1)
            and self.scale
            and self.center
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class ByteMaskDropout(keras.layers.Dropout):
    """`keras.layers.Dropout` whose training mask takes one random byte per element (a quarter
    of the random words Keras draws): an element is dropped when its byte is below
    round(rate x 256), so the rate is kept to the nearest 1/256, and the kept ones are scaled by
    256 / (256 - that), the inverse of the exact keep share."""

    def call(self, inputs: Any, training: Any = False) -> Any:
        cut = min(round(self.rate * MASK_LEVELS), MASK_LEVELS - 1)
        if not training or cut == 0 or self.noise_shape is not None or len(inputs.shape) != 2:
            return super().call(inputs, training=training)
        rows, units = tf.shape(inputs)[0], inputs.shape[-1]
        words = tf.random.stateless_uniform(
            [rows, -(-units // 4)],
            seed=tf.cast(self.seed_generator.next(), tf.int32),
            minval=None,
            maxval=None,
            dtype=tf.int32,
        )
        levels = tf.reshape(tf.bitcast(words, tf.uint8), [rows, -1])[:, :units]
        keep = levels >= cut
        scale = MASK_LEVELS / (MASK_LEVELS - cut)
        return tf.where(keep, inputs * scale, tf.zeros_like(inputs))
