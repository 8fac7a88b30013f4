"""K same-shape MLPs trained as one graph: the measuring instrument of the packing section.

Issue 31 asks whether packing MLP trials of one shape pays. This trainer is the packed side:
every weight is stacked over a leading K axis, a step is one batched matmul per layer for all
K models, and Adam is vectorised over K. What a trial chooses beyond the shape stays its own:
learning rate, schedule, loss, input and target normalisation, seed (so its initial weights
and its shuffle order). The arithmetic follows the sweep's own loop
(`sweep.nets.training.make_epoch_function` and `make_adam`) step for step, so each packed model
trains to what the sweep would train it to alone (tests/benchmarks/test_bench_packing.py);
only the order of a few floating-point sums differs.

It is a benchmark instrument, not part of the sweep: no pruning, refit or export.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

# isort: off
from sweep.nets.layers import Normalize  # first: it starts TensorFlow quietly
import keras
import tensorflow as tf

# isort: on
from sweep.nets.adam import ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON, COSINE_FLOOR
from sweep.nets.normalization import fit_normalization, normalize
from sweep.nets.spec import ModelSpec
from sweep.nets.training import build

__all__ = ["PackedMLP", "Shape", "glorot_weights", "keras_weights", "shape_of"]

LOSS_CODES = {"mse": 0, "mae": 1, "huber": 2}
TRANSFORM_CODES = {"identity": 0, "signed_log": 1, "log_abs": 2}
HUBER_DELTA = 1.0  # keras.losses.Huber's default, as the sweep trains with it
# One epoch of K models: their shuffle orders (K, rows) in; mean batch losses (K,) and raw
# validation predictions (K, validation rows) out.
PackedEpoch = Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]


@dataclass(frozen=True)
class Shape:
    """What packed models must share: one graph holds one shape."""

    hidden_layers: tuple[int, ...]
    activation: str
    batch_size: int
    epochs: int
    precision: str = "float64"


def shape_of(spec: ModelSpec) -> Shape:
    return Shape(tuple(spec.hidden_layers), spec.activation, spec.batch_size, spec.epochs,
                 spec.precision)


def glorot_weights(shape: Shape, arity: int, seeds: Sequence[int]) -> list[np.ndarray]:
    """Stacked initial weights, Keras' Dense defaults (Glorot uniform kernels, zero biases),
    drawn per model from its seed: cheap for large K, where building K Keras models is not."""
    widths = [arity, *shape.hidden_layers, 1]
    stacked: list[np.ndarray] = []
    for fan_in, fan_out in itertools.pairwise(widths):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        kernels = [np.random.default_rng([seed, fan_in, fan_out]).uniform(
            -limit, limit, (fan_in, fan_out)) for seed in seeds]
        stacked += [np.stack(kernels).astype(shape.precision),
                    np.zeros((len(seeds), fan_out), dtype=shape.precision)]
    return stacked


def keras_weights(
    specs: Sequence[ModelSpec], seeds: Sequence[int], x_train: np.ndarray, y_train: np.ndarray
) -> list[np.ndarray]:
    """Stacked initial weights exactly as `sweep.nets.training.train` draws them (its seed, then
    its build): for checking that a packed model trains as it would alone."""
    per_model = []
    for spec, seed in zip(specs, seeds, strict=True):
        keras.utils.set_random_seed(seed)
        built = build(spec, x_train.shape[1], fit_normalization(spec.input_normalization, x_train),
                      fit_normalization(spec.target_normalization, y_train))
        per_model.append([np.asarray(w) for w in built.training.get_weights()])
    return [np.stack(ws) for ws in zip(*per_model, strict=True)]


def _activation(name: str) -> Callable[[tf.Tensor], tf.Tensor]:
    return cast(Callable[[tf.Tensor], tf.Tensor], keras.activations.get(name))


class PackedMLP:
    """K models of one shape, one `tf.function` per epoch over all of them."""

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        seeds: Sequence[int],
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_val: np.ndarray,
        weights: Sequence[np.ndarray] | None = None,
    ) -> None:
        shapes = {shape_of(s) for s in specs}
        if len(shapes) != 1 or len(seeds) != len(specs):
            raise ValueError("packed models need one shape and one seed each")
        self.shape = shape = shapes.pop()
        self.specs, self.seeds = list(specs), list(seeds)
        dtype = shape.precision
        k, rows = len(specs), len(x_train)
        inputs, targets, checks, offsets, scales, transforms = [], [], [], [], [], []
        for spec in specs:
            input_params = fit_normalization(spec.input_normalization, x_train)
            target_params = fit_normalization(spec.target_normalization, y_train)
            # The input normalisation has no weights: applied once, by the sweep's own layer.
            layer = Normalize.from_params(input_params, dtype=dtype)
            inputs.append(np.asarray(layer(np.asarray(x_train, dtype=dtype))))
            checks.append(np.asarray(layer(np.asarray(x_val, dtype=dtype))))
            targets.append(normalize(target_params, y_train).astype(dtype).reshape(-1, 1))
            offsets.append(target_params.offset[0])
            scales.append(target_params.scale[0])
            transforms.append(TRANSFORM_CODES[target_params.transform])
        self.steps = math.ceil(rows / shape.batch_size)
        initial = list(weights) if weights is not None else glorot_weights(
            shape, x_train.shape[1], seeds)
        self.variables = [tf.Variable(np.asarray(w, dtype=dtype)) for w in initial]
        self._shuffles = [np.random.default_rng(seed) for seed in seeds]
        self._rows = rows
        self._epoch: PackedEpoch = tf.function(self._make_epoch(
            np.stack(inputs), np.stack(targets), np.stack(checks),
            np.asarray(offsets).reshape(k, 1), np.asarray(scales).reshape(k, 1),
            np.asarray(transforms).reshape(k, 1), rows,
        ))

    def _forward(self, x: tf.Tensor) -> tf.Tensor:
        activation = _activation(self.shape.activation)
        h = x
        pairs = list(zip(self.variables[::2], self.variables[1::2], strict=True))
        for kernel, bias in pairs[:-1]:
            h = activation(tf.matmul(h, kernel) + bias[:, None, :])
        kernel, bias = pairs[-1]
        return tf.matmul(h, kernel) + bias[:, None, :]

    def _make_epoch(
        self, xs: np.ndarray, ys: np.ndarray, checks: np.ndarray, offsets: np.ndarray,
        scales: np.ndarray, transforms: np.ndarray, rows: int,
    ) -> PackedEpoch:
        dtype = tf.as_dtype(self.shape.precision)
        k, steps, batch = len(self.specs), self.steps, self.shape.batch_size
        weights = self.variables
        first = [tf.Variable(tf.zeros_like(w), trainable=False) for w in weights]
        second = [tf.Variable(tf.zeros_like(w), trainable=False) for w in weights]
        iterations = tf.Variable(0, dtype=tf.int64, trainable=False)
        decay_steps = tf.constant(max(steps * self.shape.epochs, 1), tf.float32)
        initial_rates = tf.constant([s.learning_rate for s in self.specs], tf.float32)
        cosine = tf.constant([s.lr_schedule == "cosine" for s in self.specs])
        loss_codes = tf.constant([LOSS_CODES[s.loss] for s in self.specs])
        beta_1 = tf.cast(tf.constant(ADAM_BETA_1, tf.float32), dtype)
        beta_2 = tf.cast(tf.constant(ADAM_BETA_2, tf.float32), dtype)
        x_all, y_all, x_check = tf.constant(xs), tf.constant(ys), tf.constant(checks)
        loss_dtype = tf.as_dtype(keras.backend.floatx())
        used = {s.loss for s in self.specs}
        ranks = {len(w.shape) for w in weights}
        # Model k's rows sit at k * rows + i once the K copies are flattened: one plain gather.
        x_all = tf.reshape(x_all, [k * rows, -1])
        y_all = tf.reshape(y_all, [k * rows, 1])
        offsets_of_rows = tf.constant(np.arange(k).reshape(k, 1) * rows, tf.int32)

        def adam(gradients: list[tf.Tensor]) -> None:
            # make_adam's arithmetic with one rate per model: float32 schedule, then cast.
            done = tf.minimum(tf.cast(iterations, tf.float32), decay_steps) / decay_steps
            decayed = (1 - COSINE_FLOOR) * (0.5 * (1.0 + tf.cos(math.pi * done))) + COSINE_FLOOR
            rate = tf.cast(tf.where(cosine, initial_rates * decayed, initial_rates), dtype)
            local_step = tf.cast(iterations + 1, dtype)
            alpha = (rate * tf.sqrt(1 - tf.pow(beta_2, local_step))
                     / (1 - tf.pow(beta_1, local_step)))
            by_rank = {rank: tf.reshape(alpha, [k] + [1] * (rank - 1)) for rank in ranks}
            for weight, gradient, m, v in zip(weights, gradients, first, second, strict=True):
                gradient = tf.cast(gradient, dtype)
                per_model = by_rank[len(weight.shape)]
                m.assign_add((gradient - m) * (1 - ADAM_BETA_1))
                v.assign_add((tf.square(gradient) - v) * (1 - ADAM_BETA_2))
                weight.assign_sub((m * per_model) / (tf.sqrt(v) + ADAM_EPSILON))
            iterations.assign_add(1)

        def losses(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
            """Per model, its own Keras loss: the mean over the last axis, then over the batch,
            in Keras' float type (a Keras loss casts both sides to it: float32 by default, so
            the sweep's float64 models take float32 loss gradients; this does the same)."""
            y_true, y_pred = tf.cast(y_true, loss_dtype), tf.cast(y_pred, loss_dtype)
            per_loss = {}  # only the losses some model uses: fewer ops per step
            if "mse" in used:
                per_loss["mse"] = tf.reduce_mean(tf.square(y_true - y_pred), axis=-1)
            if "mae" in used:
                per_loss["mae"] = tf.reduce_mean(tf.abs(y_true - y_pred), axis=-1)
            if "huber" in used:
                error = y_pred - y_true
                absolute = tf.abs(error)
                per_loss["huber"] = tf.reduce_mean(tf.where(
                    absolute <= HUBER_DELTA, 0.5 * tf.square(error),
                    HUBER_DELTA * absolute - 0.5 * HUBER_DELTA**2), axis=-1)
            names = sorted(per_loss)
            per_row = per_loss[names[0]]
            for name in names[1:]:
                per_row = tf.where(loss_codes[:, None] == LOSS_CODES[name], per_loss[name],
                                   per_row)
            return tf.math.divide_no_nan(tf.reduce_sum(per_row, axis=1),
                                         tf.cast(tf.shape(per_row)[1], loss_dtype))

        def denormalize(y: tf.Tensor) -> tf.Tensor:
            """Per model, `Denormalize` with its own target's constants and transform."""
            y = y * scales + offsets
            signed = tf.sign(y) * tf.math.expm1(tf.minimum(tf.abs(y), 80.0))
            exponential = tf.exp(tf.minimum(y, 80.0))
            return tf.where(transforms == 1, signed, tf.where(transforms == 2, exponential, y))

        def epoch(orders: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            orders = orders + offsets_of_rows
            total = tf.zeros((k,), dtype=tf.float64)
            for step in tf.range(steps):
                rows_of_step = orders[:, step * batch : tf.minimum((step + 1) * batch, rows)]
                with tf.GradientTape() as tape:
                    predicted = self._forward(tf.gather(x_all, rows_of_step))
                    per_model = losses(tf.gather(y_all, rows_of_step), predicted)
                    loss = tf.reduce_sum(per_model)  # model k's gradient is its own loss's
                adam(tape.gradient(loss, weights))
                total += tf.cast(per_model, tf.float64)
            return total / steps, denormalize(self._forward(x_check)[:, :, 0])

        return epoch

    def run_epoch(self) -> tuple[np.ndarray, np.ndarray]:
        """One epoch of all K models, each on its own shuffle (as the sweep draws it from its
        seed); their mean batch losses (K,) and raw validation predictions (K, rows)."""
        orders = np.stack([rng.permutation(self._rows) for rng in self._shuffles])
        loss, predictions = self._epoch(tf.constant(orders, tf.int32))
        return np.asarray(loss), np.asarray(predictions, dtype=np.float64)

    def weights(self) -> list[np.ndarray]:
        """The stacked weights now (kernel, bias per layer), model k at index k."""
        return [np.asarray(v.numpy()) for v in self.variables]
