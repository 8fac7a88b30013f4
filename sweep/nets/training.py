"""ModelSpec -> Keras model, its training, and `KerasTrainer`, the search's way in. No Optuna.

Two models share one set of layers: the *training* model maps raw inputs to the normalised
target (so the loss sees values of order 1, the fix the original question needed), and the
*exported* model appends the target's inverse, mapping raw inputs to raw results.

The output layer is linear, so it can also be solved (`sweep.nets.output_solve`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

# isort: off
from sweep.nets.layers import (  # first: it starts TensorFlow quietly
    Denormalize,
    Monomials,
    Normalize,
    power_of_four_scale,
)
import keras
import tensorflow as tf

# isort: on
from sweep.errors import TrialFailure
from sweep.nets import EpochCallback
from sweep.nets.adam import make_adam
from sweep.nets.normalization import NormalizationParams, fit_normalization, normalize
from sweep.nets.output_solve import (
    output_features,
    refit_output_layer,
    snap_output_layer,
)
from sweep.nets.saving import load_model_bytes, serialize_model
from sweep.nets.shared_graph import SharedRun, loss_function
from sweep.nets.spec import ModelSpec

# One epoch of training: a shuffle order in; the mean batch loss and the raw validation
# predictions out.
EpochFunction = Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]


@dataclass
class BuiltModel:
    training: keras.Model
    exported: keras.Model
    features: keras.Model
    output_layer: keras.layers.Dense
    input_params: NormalizationParams
    target_params: NormalizationParams


@dataclass(frozen=True)
class TrainingResult:
    """A trained exported model and how training went (`sweep.nets.TrainedModel`)."""

    model: keras.Model
    epochs_run: int
    train_seconds: float
    refitted: bool
    stopped_reason: str | None
    structure: str | None = None

    def predict(self, x: npt.ArrayLike) -> np.ndarray:
        return predict(self.model, np.asarray(x))

    def to_bytes(self) -> bytes:
        return serialize_model(self.model)


@dataclass(frozen=True)
class KerasPredictor:
    """A loaded Keras model behind the `sweep.nets.ExportableModel` interface."""

    model: keras.Model

    def predict(self, x: npt.ArrayLike) -> np.ndarray:
        return predict(self.model, np.asarray(x))

    def to_bytes(self) -> bytes:
        return serialize_model(self.model)


class KerasTrainer:
    """`sweep.nets.Trainer` with Keras 3 and TensorFlow: what a real sweep trains with."""

    def train(
        self,
        spec: ModelSpec,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_val: np.ndarray,
        y_val: np.ndarray,
        *,
        on_epoch: EpochCallback | None = None,
        max_seconds: float = 300.0,
        seed: int = 0,
    ) -> TrainingResult:
        return train(
            spec, x_train, y_train, x_val, y_val,
            on_epoch=on_epoch, max_seconds=max_seconds, seed=seed,
        )

    def load(self, data: bytes, *, label: str) -> KerasPredictor:
        return KerasPredictor(load_model_bytes(data, label=label))

    def versions(self) -> dict[str, str]:
        return {"keras": keras.__version__, "tensorflow": tf.__version__}


def build(
    spec: ModelSpec,
    arity: int,
    input_params: NormalizationParams,
    target_params: NormalizationParams,
    name: str = "arithmetic",
    monomial_scale: Sequence[float] | None = None,
) -> BuiltModel:
    """Build the training and exported models for `spec` with fitted normalisations.

    The power family's inputs go straight into its `Monomials` layer, which carries its own
    exact scaling (`monomial_scale`, powers of 4) instead of the input normalisation.
    """
    dtype = spec.precision
    inputs = keras.Input(shape=(arity,), dtype=dtype, name="operands")
    if spec.family == "power":
        x = Monomials(
            [list(e) for e in spec.exponents(arity)],
            scale=None if monomial_scale is None else list(monomial_scale),
            name="monomials",
            dtype=dtype,
        )(inputs)
    else:
        x = Normalize.from_params(input_params, name="input_normalization", dtype=dtype)(inputs)
    for index, width in enumerate(spec.hidden_layers):
        x = keras.layers.Dense(
            width, activation=spec.activation, name=f"hidden_{index}", dtype=dtype
        )(x)
    features = keras.Model(inputs, x, name=f"{name}_features")
    output_layer = keras.layers.Dense(1, name="output", dtype=dtype)
    normalized = output_layer(x)
    training = keras.Model(inputs, normalized, name=f"{name}_training")
    result = Denormalize.from_params(target_params, name="target_inverse", dtype=dtype)(
        normalized
    )
    exported = keras.Model(inputs, result, name=name)
    return BuiltModel(training, exported, features, output_layer, input_params, target_params)


def predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Raw inputs -> raw predictions as float64, without Keras' per-call predict overhead."""
    out = model(np.asarray(x, dtype=model.inputs[0].dtype), training=False)
    return np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float64).reshape(-1)


def make_epoch_function(
    built: BuiltModel, spec: ModelSpec, x: np.ndarray, y: np.ndarray, x_val: np.ndarray
) -> EpochFunction:
    """One graph call per epoch: every step, then the raw validation predictions.

    Why not `Model.fit`: for networks this small the framework around the arithmetic is the
    cost. `fit` hands each epoch to tf.data and its threads and returns to Python every
    `steps_per_execution` steps; here the data are constants in the graph and an epoch is one
    call: 2-12x the steps per second of `fit`'s best setting (BENCHMARKS.md, section 2), 2-5x
    faster per trial with tracing, and one thread does all the work, so two workers on two
    cores no longer slow each other down. Same mathematics as `fit`: Adam (`make_adam`) on
    the mean batch loss over a fresh shuffle per epoch, the last batch possibly short.

    `train` runs the same loop on a graph traced once per structure
    (`sweep.nets.shared_graph.SharedRun`); this per-model one is its reference in tests and
    benchmarks.
    """
    model = built.training
    exported = built.exported
    weights = model.trainable_variables
    steps = math.ceil(len(x) / spec.batch_size)
    adam = make_adam(spec, weights, steps * spec.epochs)
    loss_fn = loss_function(spec.loss)
    batch, rows = spec.batch_size, len(x)
    x_all = tf.constant(x)
    y_all = tf.constant(y.reshape(-1, 1))
    x_check = tf.constant(np.asarray(x_val, dtype=spec.precision))

    def epoch(order: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        total = tf.zeros((), dtype=tf.float64)
        for step in tf.range(steps):
            rows_of_step = order[step * batch : tf.minimum((step + 1) * batch, rows)]
            with tf.GradientTape() as tape:
                predicted = model(tf.gather(x_all, rows_of_step), training=True)
                loss = loss_fn(tf.gather(y_all, rows_of_step), predicted)
            adam(tape.gradient(loss, weights))
            total += tf.cast(loss, tf.float64)
        return total / steps, exported(x_check, training=False)

    return cast(EpochFunction, tf.function(epoch))


def train(
    spec: ModelSpec,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    on_epoch: EpochCallback | None = None,
    max_seconds: float = 300.0,
    seed: int = 0,
) -> TrainingResult:
    """Fit normalisations on the training data, build, train, optionally refit the output.

    `on_epoch(epoch, raw_validation_predictions)` runs after every epoch and may raise (e.g. to
    prune). Raises `TrialFailure` when training diverges.
    """
    started = time.monotonic()
    keras.utils.set_random_seed(seed)
    arity = x_train.shape[1]
    input_params = fit_normalization(spec.input_normalization, x_train)
    target_params = fit_normalization(spec.target_normalization, y_train)
    if spec.family == "power":
        return _train_power(spec, x_train, y_train, x_val, y_val, target_params, on_epoch,
                            started)
    if spec.family == "formula":
        from sweep.nets.formula_training import train_formula

        model, formula = train_formula(
            spec, x_train, y_train, x_val, y_val, on_epoch, started, max_seconds
        )
        return TrainingResult(model, 0, time.monotonic() - started, True, None, formula)
    built = build(spec, arity, input_params, target_params)
    x = np.asarray(x_train, dtype=spec.precision)
    y = normalize(target_params, y_train).astype(spec.precision)
    run_epoch = SharedRun(built, spec, x, y, x_val)
    shuffle = np.random.default_rng(seed)
    epochs_run = 0
    stopped_reason: str | None = None
    for epoch in range(spec.epochs):
        loss_tensor, predictions = run_epoch(tf.constant(shuffle.permutation(len(x)), tf.int32))
        epochs_run = epoch + 1
        loss = float(loss_tensor)
        if not math.isfinite(loss):
            raise TrialFailure(f"diverged: training loss became {loss} at epoch {epoch + 1}")
        if on_epoch is not None:
            on_epoch(epoch, np.asarray(predictions, dtype=np.float64).reshape(-1))
        if time.monotonic() > started + max_seconds and epoch + 1 < spec.epochs:
            stopped_reason = f"time bound reached after {epoch + 1} epochs"
            break
    run_epoch.finish()
    refitted = False
    if spec.refit_output:
        # In the log_abs domain a zero target sits at the floor, not on the linear law that
        # every other row obeys: leave those rows out of the closing fit.
        keep = y_train != 0 if target_params.transform == "log_abs" else None
        refitted = refit_output_layer(built, x, y, x_val, y_val, keep)
    return TrainingResult(
        model=built.exported,
        epochs_run=epochs_run,
        train_seconds=time.monotonic() - started,
        refitted=refitted,
        stopped_reason=stopped_reason,
    )


def _train_power(
    spec: ModelSpec,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    target_params: NormalizationParams,
    on_epoch: EpochCallback | None,
    started: float,
) -> TrainingResult:
    """The power family: no gradient steps; its only weights, the output layer's, are solved.

    With the exponents fixed the output is linear in its weights, so float64 least squares finds
    the optimum that Adam would only approach; one report (as epoch 0) lets the pruner and a
    signal see the trial.
    """
    arity = x_train.shape[1]
    input_params = fit_normalization("none", x_train)
    built = build(spec, arity, input_params, target_params,
                  monomial_scale=power_of_four_scale(x_train))
    x = np.asarray(x_train, dtype=spec.precision)
    y = normalize(target_params, y_train).astype(spec.precision)
    keep = y_train != 0 if target_params.transform == "log_abs" else None
    # Read and factored once, for the solve and the snap's refits.
    system = output_features(built, x, y, keep)
    solved = refit_output_layer(built, x, y, x_val, y_val, keep, always=True, system=system)
    if not solved:
        raise TrialFailure("the least-squares solve of the output layer was not finite")
    if spec.snap_output:
        snap_output_layer(built, spec.exponents(arity), x_val, y_val, system)
    if on_epoch is not None:
        on_epoch(0, predict(built.exported, x_val))
    return TrainingResult(
        model=built.exported,
        epochs_run=0,
        train_seconds=time.monotonic() - started,
        refitted=True,
        stopped_reason=None,
    )
