"""AdamW whose update of each variable is one fused TensorFlow kernel.

Keras' AdamW builds about 35 small ops per variable into the training step (and evaluates the
learning-rate schedule once per variable); this one computes the rate once per step, decays
each variable in one op and applies Adam with `ResourceApplyAdam`: the same update, a fraction
of the ops to trace and run. Why, measured: BENCHMARKS.md, "Training throughput".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

LearningRate = float | Callable[[Any], Any]  # a constant, or a schedule of the step number


class FusedAdamW:
    """Keras' AdamW update (decoupled weight decay `variable -= lr x weight_decay x variable`,
    then Adam with bias correction and `epsilon` outside the square root) over `variables`."""

    def __init__(
        self,
        variables: Sequence[Any],
        learning_rate: LearningRate,
        weight_decay: float,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
    ) -> None:
        self.variables = [v.value if isinstance(v, keras.Variable) else v for v in variables]
        self.momenta = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self.velocities = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.learning_rate, self.weight_decay = learning_rate, float(weight_decay)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def apply(self, gradients: Sequence[Any]) -> None:
        """One update of every variable by its gradient (in `variables`' order)."""
        rate = self.learning_rate
        lr = tf.cast(rate(self.iterations) if callable(rate) else rate, tf.float32)
        step = tf.cast(self.iterations + 1, tf.float32)
        beta_1_power, beta_2_power = tf.pow(self.beta_1, step), tf.pow(self.beta_2, step)
        keep = 1.0 - lr * self.weight_decay
        for var, m, v, grad in zip(
            self.variables, self.momenta, self.velocities, gradients, strict=True
        ):
            if self.weight_decay:
                var.assign(var * keep)
            tf.raw_ops.ResourceApplyAdam(
                var=var.handle, m=m.handle, v=v.handle,
                beta1_power=beta_1_power, beta2_power=beta_2_power, lr=lr,
                beta1=self.beta_1, beta2=self.beta_2, epsilon=self.epsilon, grad=grad,
            )  # fmt: skip
        self.iterations.assign_add(1)
