"""Keras 3's Adam update rule and its cosine schedule, in plain TensorFlow.

Why not `keras.optimizers.Adam`: applied inside a fresh `tf.function` per model, it keeps
about 3 MiB per trained model alive for the life of the process (gc and clear_session do not
free it), so a worker that runs 1000 trials grew by ~3 GB. These few variables and ops free
with the model. Same arithmetic (tests/sweep/nets/test_training.py: eagerly bit for bit; in a
graph the cosine rate may round one float32 ulp apart): the rate for step t is read before the
step counter moves, bias correction folded into the step size, epsilon outside the square root.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

# isort: off
import sweep.nets.layers  # noqa: F401  first: it starts TensorFlow quietly
import keras
import tensorflow as tf

# isort: on
from sweep.nets.spec import ModelSpec

# Keras 3's Adam defaults, which `fit` used before the sweep's own loop replaced it.
ADAM_BETA_1 = 0.9
ADAM_BETA_2 = 0.999
ADAM_EPSILON = 1e-7
# The cosine schedule decays to this fraction of the initial rate by the last step: Adam's
# noise floor shrinks with the step size, which is what lets a linear model reach exact
# integer answers.
COSINE_FLOOR = 1e-3

AdamStep = Callable[[list[tf.Tensor]], None]
Weights = Sequence[keras.Variable | tf.Variable]


def make_adam(spec: ModelSpec, weights: Weights, total_steps: int) -> AdamStep:
    """Adam for `weights` with `spec`'s rate and schedule over `total_steps`, state included."""
    first = [tf.Variable(tf.zeros_like(w), trainable=False) for w in weights]
    second = [tf.Variable(tf.zeros_like(w), trainable=False) for w in weights]
    iterations = tf.Variable(0, dtype=tf.int64, trainable=False)
    decay_steps = tf.constant(max(total_steps, 1), tf.float32)
    return adam_step(
        weights, first, second, iterations, spec.learning_rate, decay_steps,
        cosine=spec.lr_schedule == "cosine", dtype=tf.as_dtype(spec.precision),
    )


def adam_step(
    weights: Weights,
    first: Sequence[tf.Variable],
    second: Sequence[tf.Variable],
    iterations: tf.Variable,
    learning_rate: float | tf.Variable,
    decay_steps: tf.Tensor | tf.Variable,
    *,
    cosine: bool,
    dtype: tf.DType,
    fused: bool = False,
) -> AdamStep:
    """The update on state the caller owns: `make_adam`'s per model, or a shared graph's
    (`sweep.nets.shared_graph`), whose rate and step count are variables set per trial.

    A float rate becomes a graph constant, as it always has; the float32 rate and decay steps
    are cast to the weights' type the way Keras does. `fused` takes TensorFlow's own Adam
    kernel, one op per weight instead of a dozen (faster to trace and to run): its arithmetic
    is Keras', bit for bit in float64; in float32 its 1 - beta rounds apart from Keras'
    (computed in float64), so there the plain ops stay.
    """
    # Keras turns the Python betas into float32 tensors before casting them to the weights'
    # type; the bias correction follows suit so that float64 runs take Keras' very steps.
    beta_1 = tf.cast(tf.constant(ADAM_BETA_1, tf.float32), dtype)
    beta_2 = tf.cast(tf.constant(ADAM_BETA_2, tf.float32), dtype)

    def rate() -> tf.Tensor:
        initial = (
            tf.constant(learning_rate, tf.float32)
            if isinstance(learning_rate, float)
            else tf.convert_to_tensor(learning_rate)
        )
        if not cosine:
            return tf.cast(initial, dtype)
        # keras.optimizers.schedules.CosineDecay(lr, decay_steps, alpha), computed as it does.
        done = tf.minimum(tf.cast(iterations, tf.float32), decay_steps) / decay_steps
        decayed = (1 - COSINE_FLOOR) * (0.5 * (1.0 + tf.cos(math.pi * done))) + COSINE_FLOOR
        return tf.cast(initial * decayed, dtype)

    def step(gradients: list[tf.Tensor]) -> None:
        rate_now = rate()
        local_step = tf.cast(iterations + 1, dtype)
        alpha = (
            rate_now
            * tf.sqrt(1 - tf.pow(beta_2, local_step))
            / (1 - tf.pow(beta_1, local_step))
        )
        for weight, gradient, m, v in zip(weights, gradients, first, second, strict=True):
            gradient = tf.cast(gradient, dtype)
            m.assign_add((gradient - m) * (1 - ADAM_BETA_1))
            v.assign_add((tf.square(gradient) - v) * (1 - ADAM_BETA_2))
            weight.assign_sub((m * alpha) / (tf.sqrt(v) + ADAM_EPSILON))
        iterations.assign_add(1)

    def fused_step(gradients: list[tf.Tensor]) -> None:
        local_step = tf.cast(iterations + 1, dtype)
        rate_now = rate()
        beta_1_power, beta_2_power = tf.pow(beta_1, local_step), tf.pow(beta_2, local_step)
        # The kernel's own 1 - beta, in the weights' type: Keras' (1 - beta) in float64.
        exact_beta_1 = tf.constant(ADAM_BETA_1, dtype)
        exact_beta_2 = tf.constant(ADAM_BETA_2, dtype)
        epsilon = tf.constant(ADAM_EPSILON, dtype)
        for weight, gradient, m, v in zip(weights, gradients, first, second, strict=True):
            tf.raw_ops.ResourceApplyAdam(
                var=weight.handle, m=m.handle, v=v.handle, beta1_power=beta_1_power,
                beta2_power=beta_2_power, lr=rate_now, beta1=exact_beta_1, beta2=exact_beta_2,
                epsilon=epsilon, grad=tf.cast(gradient, dtype),
            )
        iterations.assign_add(1)

    return fused_step if fused and dtype == tf.float64 else step
