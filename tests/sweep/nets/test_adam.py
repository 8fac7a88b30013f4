"""The sweep's own Adam (`sweep.nets.adam`) against Keras' `keras.optimizers.Adam`."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from sweep.nets import ModelSpec
from sweep.nets.adam import adam_step, make_adam


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
@pytest.mark.parametrize("fused", [False, True], ids=["ops", "fused"])
def test_the_loops_adam_takes_the_same_steps_as_keras_adam(
    schedule: str, precision: str, graph: bool, fused: bool
) -> None:
    """The loop's own Adam replaced Keras' (which leaked memory per model): same defaults, same
    schedule, so the same weights after every step, past the end of the cosine decay too.
    Eagerly bit for bit; inside a graph (where the loop runs it) TensorFlow's graph rewrites
    may round the cosine rate one float32 ulp apart, so there only within ~1e-7. TensorFlow's
    fused kernel (the shared graph's) likewise, in float64; in float32 `adam_step` keeps the
    plain ops."""
    rng = np.random.default_rng(5)
    shapes = [(3, 4), (4,), (4, 1)]
    start = [rng.normal(size=shape) for shape in shapes]
    ours = [tf.Variable(w.astype(precision)) for w in start]
    theirs = [tf.Variable(w.astype(precision)) for w in start]
    total_steps = 40
    spec = ModelSpec(
        hidden_layers=(), activation="linear", input_normalization="none",
        target_normalization="none", learning_rate=0.03, batch_size=64, loss="mse", epochs=3,
        lr_schedule=schedule, refit_output=False, precision=precision,
    )
    if fused:
        step = adam_step(
            ours, [tf.Variable(tf.zeros_like(w)) for w in ours],
            [tf.Variable(tf.zeros_like(w)) for w in ours], tf.Variable(0, dtype=tf.int64),
            tf.Variable(0.03, dtype=tf.float32), tf.constant(float(total_steps)),
            cosine=schedule == "cosine", dtype=tf.as_dtype(precision), fused=True,
        )
    else:
        step = make_adam(spec, ours, total_steps)
    rate = (
        keras.optimizers.schedules.CosineDecay(0.03, total_steps, alpha=1e-3)
        if schedule == "cosine"
        else 0.03
    )
    keras_adam = keras.optimizers.Adam(learning_rate=rate)
    keras_adam.build(theirs)

    def reference(gradients: list[tf.Tensor]) -> None:
        keras_adam.apply(gradients, theirs)

    if graph:
        step, reference = tf.function(step), tf.function(reference)
    for _ in range(total_steps + 10):
        gradients = [tf.constant(rng.normal(size=shape).astype(precision)) for shape in shapes]
        step(gradients)
        reference(gradients)
        for mine, expected in zip(ours, theirs, strict=True):
            if graph:
                np.testing.assert_allclose(mine.numpy(), expected.numpy(), rtol=1e-6, atol=1e-7)
            else:
                np.testing.assert_array_equal(mine.numpy(), expected.numpy())
