"""One traced training graph per MLP structure, reused by every trial with that structure.

Why: for the sweep's small MLPs, tracing a trial's epoch graph and TensorFlow's first call of
it (graph optimisation, kernel set-up) take 100-300 ms, as long as 30 epochs of training
(BENCHMARKS.md, section 13's addendum; `python -m benchmarks.shared_graph`). What a trial
changes without changing the graph's structure (widths, rows, batch size, step count, learning
rate) is here a variable of unknown size or an argument; what does change it (depth,
activation, loss, schedule, precision) keys the cache. The model's own layers normalise the
inputs before the graph and invert the target's normalisation after it, so neither enters the
key.

The graph's variables hold one trial's weights at a time: each thread keeps its own graphs,
and a trial copies its initial weights in and its trained weights back into its model.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np

# isort: off
import sweep.nets.layers  # noqa: F401  first: it starts TensorFlow quietly
import keras
import tensorflow as tf

# isort: on
from sweep.nets.adam import adam_step
from sweep.nets.spec import ModelSpec

if TYPE_CHECKING:
    from sweep.nets.training import BuiltModel

# Distinct structures a thread keeps traced (the default space has 132), at about 4.5 MiB
# each; past this the least recently used is dropped.
GRAPHS_PER_THREAD = 16

EpochResult = tuple[tf.Tensor, tf.Tensor]


def loss_function(name: str) -> keras.losses.Loss:
    if name == "mse":
        return keras.losses.MeanSquaredError()
    if name == "mae":
        return keras.losses.MeanAbsoluteError()
    if name == "huber":
        return keras.losses.Huber()
    raise ValueError(f"unknown loss {name!r}")


@dataclass(frozen=True)
class GraphKey:
    """What a traced graph is specific to."""

    depth: int
    activation: str
    loss: str
    cosine: bool
    precision: str

    @classmethod
    def of(cls, spec: ModelSpec) -> GraphKey:
        depth = len(spec.hidden_layers)
        return cls(
            depth=depth,
            # Without a hidden layer no activation is applied: one graph serves them all.
            activation=spec.activation if depth else "linear",
            loss=spec.loss,
            cosine=spec.lr_schedule == "cosine",
            precision=spec.precision,
        )


class SharedEpochGraph:
    """An MLP of `key`'s structure, any widths: Adam over one epoch per call.

    The arithmetic is the per-model loop's (`sweep.nets.training.make_epoch_function`): each
    Dense layer as Keras computes it, the same loss object, Adam (`adam_step`, TensorFlow's
    fused kernel in float64) on the mean batch loss over the epoch's shuffle, the last batch
    possibly short.
    """

    def __init__(self, key: GraphKey) -> None:
        dtype = tf.as_dtype(key.precision)
        layers = key.depth + 1

        def variables(rank: int, trainable: bool) -> list[tf.Variable]:
            # Known rank, unknown size: a rank-2 operand keeps matmul a plain MatMul.
            return [
                tf.Variable(tf.zeros((0,) * rank, dtype), shape=[None] * rank,
                            trainable=trainable)
                for _ in range(layers)
            ]

        def interleaved(trainable: bool) -> list[tf.Variable]:
            kernels, biases = variables(2, trainable), variables(1, trainable)
            return [v for pair in zip(kernels, biases, strict=True) for v in pair]

        # Keras' order of trainable variables: each Dense layer's kernel, then its bias.
        self.weights = interleaved(True)
        self._first = interleaved(False)
        self._second = interleaved(False)
        self._iterations = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._learning_rate = tf.Variable(0.0, dtype=tf.float32, trainable=False)
        self._decay_steps = tf.Variable(1.0, dtype=tf.float32, trainable=False)
        adam = adam_step(
            self.weights, self._first, self._second, self._iterations, self._learning_rate,
            self._decay_steps, cosine=key.cosine, dtype=dtype, fused=True,
        )
        activation = keras.activations.get(key.activation)
        loss_fn = loss_function(key.loss)
        weights = self.weights

        def forward(x: tf.Tensor) -> tf.Tensor:
            for index in range(layers):
                x = keras.ops.add(keras.ops.matmul(x, weights[2 * index]), weights[2 * index + 1])
                if index < layers - 1:
                    x = activation(x)
            return x

        data = tf.TensorSpec([None, None], dtype)
        scalar = tf.TensorSpec([], tf.int32)

        def epoch(order: tf.Tensor, x: tf.Tensor, y: tf.Tensor, x_check: tf.Tensor,
                  batch: tf.Tensor, steps: tf.Tensor) -> EpochResult:
            rows = tf.shape(x)[0]

            def one_step(step: tf.Tensor, total: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                rows_of_step = order[step * batch : tf.minimum((step + 1) * batch, rows)]
                with tf.GradientTape() as tape:
                    predicted = forward(tf.gather(x, rows_of_step))
                    loss = loss_fn(tf.gather(y, rows_of_step), predicted)
                adam(tape.gradient(loss, weights))
                return step + 1, total + tf.cast(loss, tf.float64)

            _, total = tf.while_loop(
                lambda step, _: step < steps, one_step,
                (tf.constant(0, tf.int32), tf.zeros((), dtype=tf.float64)),
            )
            return total / tf.cast(steps, tf.float64), forward(x_check)

        self._epoch = cast(
            Callable[..., EpochResult],
            tf.function(epoch, autograph=False, input_signature=[
                tf.TensorSpec([None], tf.int32), data, tf.TensorSpec([None, 1], dtype), data,
                scalar, scalar,
            ]),
        )

    def start(self, initial: list[tf.Tensor], learning_rate: float, total_steps: int) -> None:
        """Load a trial's initial weights and reset Adam's state for its run of steps."""
        for variable, value in zip(self.weights, initial, strict=True):
            variable.assign(value)
        for state in (self._first, self._second):
            for variable, value in zip(state, initial, strict=True):
                variable.assign(tf.zeros_like(value))
        self._iterations.assign(0)
        self._learning_rate.assign(learning_rate)
        self._decay_steps.assign(float(max(total_steps, 1)))

    def epoch(self, order: tf.Tensor, x: tf.Tensor, y: tf.Tensor, x_check: tf.Tensor,
              batch: int, steps: int) -> EpochResult:
        """(mean batch loss, normalised predictions on `x_check`) after one epoch."""
        return self._epoch(order, x, y, x_check, tf.constant(batch, tf.int32),
                           tf.constant(steps, tf.int32))


_local = threading.local()


def shared_graph(spec: ModelSpec) -> SharedEpochGraph:
    """This thread's graph for `spec`'s structure, traced on its first use."""
    graphs: OrderedDict[GraphKey, SharedEpochGraph] | None = getattr(_local, "graphs", None)
    if graphs is None:
        graphs = _local.graphs = OrderedDict()
    key = GraphKey.of(spec)
    graph = graphs.get(key)
    if graph is None:
        graph = graphs[key] = SharedEpochGraph(key)
        while len(graphs) > GRAPHS_PER_THREAD:
            graphs.popitem(last=False)
    graphs.move_to_end(key)
    return graph


def traced_graphs() -> int:
    """How many structures this thread holds traced (for tests and benchmarks)."""
    return len(getattr(_local, "graphs", ()))


class SharedRun:
    """One trial's training on its structure's shared graph: called once per epoch with the
    shuffle order, it returns (mean batch loss, raw validation predictions), as
    `sweep.nets.training.make_epoch_function`'s per-model graph does. `finish` writes the
    trained weights into the trial's model."""

    def __init__(
        self, built: BuiltModel, spec: ModelSpec, x: np.ndarray, y: np.ndarray,
        x_val: np.ndarray,
    ) -> None:
        self._graph = shared_graph(spec)
        dense = [la for la in built.training.layers if isinstance(la, keras.layers.Dense)]
        self._model_weights = [w for layer in dense for w in (layer.kernel, layer.bias)]
        normalize_inputs = built.training.get_layer("input_normalization")
        self._x = normalize_inputs(tf.constant(x))
        self._x_check = normalize_inputs(tf.constant(np.asarray(x_val, dtype=spec.precision)))
        self._y = tf.constant(y.reshape(-1, 1))
        self._target_inverse = built.exported.get_layer("target_inverse")
        self._batch = spec.batch_size
        self._steps = math.ceil(len(x) / spec.batch_size)
        self._graph.start(
            [w.value for w in self._model_weights], spec.learning_rate,
            self._steps * spec.epochs,
        )

    def __call__(self, order: tf.Tensor) -> EpochResult:
        loss, normalized = self._graph.epoch(
            order, self._x, self._y, self._x_check, self._batch, self._steps
        )
        return loss, self._target_inverse(normalized)

    def finish(self) -> None:
        for weight, trained in zip(self._model_weights, self._graph.weights, strict=True):
            weight.assign(trained)
