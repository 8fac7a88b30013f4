"""ModelSpec -> Keras model, and its training. Knows nothing of Optuna.

Two models share one set of layers: the *training* model maps raw inputs to the normalised
target (so the loss sees values of order 1, the fix the original question needed), and the
*exported* model appends the target's inverse, mapping raw inputs to raw results.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from sweep.errors import TrialFailure
from sweep.normalization import (
    Denormalize,
    NormalizationParams,
    Normalize,
    fit_normalization,
    normalize,
)
from sweep.space import ModelSpec

# Several small steps per call to the TF runtime: framework overhead, not arithmetic, bounds
# how fast these tiny networks train (facts.md: 0.79 ms/step -> 0.48 ms/step).
STEPS_PER_EXECUTION = 32

EpochCallback = Callable[[int, np.ndarray], None]


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
    model: keras.Model
    epochs_run: int
    train_seconds: float
    refitted: bool
    stopped_reason: str | None


def build(
    spec: ModelSpec,
    arity: int,
    input_params: NormalizationParams,
    target_params: NormalizationParams,
    name: str = "arithmetic",
) -> BuiltModel:
    """Build the training and exported models for `spec` with fitted normalisations."""
    dtype = spec.precision
    inputs = keras.Input(shape=(arity,), dtype=dtype, name="operands")
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


def _loss(name: str) -> keras.losses.Loss:
    if name == "mse":
        return keras.losses.MeanSquaredError()
    if name == "mae":
        return keras.losses.MeanAbsoluteError()
    if name == "huber":
        return keras.losses.Huber()
    raise ValueError(f"unknown loss {name!r}")


def _learning_rate(spec: ModelSpec, steps: int) -> float | keras.optimizers.schedules.CosineDecay:
    if spec.lr_schedule == "cosine":
        # Decay to ~0 by the last step: Adam's noise floor shrinks with the step size, which is
        # what lets a linear model reach exact integer answers.
        return keras.optimizers.schedules.CosineDecay(spec.learning_rate, max(steps, 1), alpha=1e-3)
    return spec.learning_rate


class _EpochHook(keras.callbacks.Callback):
    """Per-epoch validation in original units, a NaN guard and a wall-clock bound."""

    def __init__(
        self,
        exported: keras.Model,
        x_val: np.ndarray,
        on_epoch: EpochCallback | None,
        deadline: float,
    ) -> None:
        super().__init__()
        self.exported = exported
        self.x_val = x_val
        self.on_epoch = on_epoch
        self.deadline = deadline
        self.epochs_run = 0
        self.stopped_reason: str | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epochs_run = epoch + 1
        loss = float((logs or {}).get("loss", math.nan))
        if not math.isfinite(loss):
            raise TrialFailure(f"diverged: training loss became {loss} at epoch {epoch + 1}")
        if self.on_epoch is not None:
            self.on_epoch(epoch, predict(self.exported, self.x_val))
        if time.monotonic() > self.deadline:
            self.stopped_reason = f"time bound reached after {epoch + 1} epochs"
            self.model.stop_training = True


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
    built = build(spec, arity, input_params, target_params)
    x = np.asarray(x_train, dtype=spec.precision)
    y = normalize(target_params, y_train).astype(spec.precision)
    steps = math.ceil(len(x) / spec.batch_size) * spec.epochs
    built.training.compile(
        optimizer=keras.optimizers.Adam(learning_rate=_learning_rate(spec, steps)),
        loss=_loss(spec.loss),
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    hook = _EpochHook(built.exported, x_val, on_epoch, started + max_seconds)
    built.training.fit(
        x, y, batch_size=spec.batch_size, epochs=spec.epochs, verbose=0, shuffle=True,
        callbacks=[hook],
    )
    refitted = False
    if spec.refit_output:
        # In the log_abs domain a zero target sits at the floor, not on the linear law that
        # every other row obeys: leave those rows out of the closing fit.
        keep = y_train != 0 if target_params.transform == "log_abs" else None
        refitted = _refit_output_layer(built, x, y, x_val, y_val, keep)
    return TrainingResult(
        model=built.exported,
        epochs_run=hook.epochs_run,
        train_seconds=time.monotonic() - started,
        refitted=refitted,
        stopped_reason=hook.stopped_reason,
    )


def _refit_output_layer(
    built: BuiltModel,
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    keep: np.ndarray | None = None,
) -> bool:
    """Solve the last linear layer by float64 least squares; keep it only if validation improves.

    Adam stops near, not at, the optimum; for the last layer the optimum is a linear problem, so
    a closing solve removes the optimiser's noise floor (exact for a linear model on add).
    """
    features = np.asarray(
        keras.ops.convert_to_numpy(built.features(x, training=False)), dtype=np.float64
    )
    target = y.astype(np.float64)
    if keep is not None:
        features, target = features[keep], target[keep]
    if len(features) == 0 or not np.all(np.isfinite(features)):
        return False
    design = np.hstack([features, np.ones((len(features), 1))])
    solution, *_ = np.linalg.lstsq(design, target, rcond=None)
    if not np.all(np.isfinite(solution)):
        return False
    before = built.output_layer.get_weights()
    error_before = _validation_mae(built.exported, x_val, y_val)
    dtype = built.output_layer.dtype
    kernel = solution[:-1].reshape(-1, 1).astype(dtype)
    bias = solution[-1:].astype(dtype)
    built.output_layer.set_weights([kernel, bias])
    if _validation_mae(built.exported, x_val, y_val) <= error_before:
        return True
    built.output_layer.set_weights(before)
    return False


def _validation_mae(model: keras.Model, x_val: np.ndarray, y_val: np.ndarray) -> float:
    with np.errstate(invalid="ignore", over="ignore"):
        error = float(np.mean(np.abs(predict(model, x_val) - y_val)))
    return error if math.isfinite(error) else math.inf
