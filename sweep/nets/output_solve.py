"""The linear output layer, solved: float64 least squares, then sparser and rounder versions.

The arithmetic is NumPy's (`sweep.nets.least_squares`); here the features are read out of
the model, the solutions written into the layer and judged on validation data as the exported
model answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

# isort: off
from sweep.nets.layers import Monomials  # first: it starts TensorFlow quietly
import keras

# isort: on
from sweep.nets.least_squares import OutputSystem, snap_candidates, solve_output
from sweep.nets.normalization import denormalize

if TYPE_CHECKING:
    from sweep.nets.training import BuiltModel

__all__ = [
    "output_features",
    "output_weights",
    "predict_features",
    "refit_output_layer",
    "snap_output_layer",
    "validation_error_of",
    "validation_mae",
]


def snap_output_layer(
    built: BuiltModel,
    exponents: Sequence[Sequence[float]],
    x_val: np.ndarray,
    y_val: np.ndarray,
    system: OutputSystem,
) -> str | None:
    """Try sparser and rounded versions of the solved output; keep what validates best.

    The candidates come from `least_squares.snap_candidates`; each is judged by the exported
    model's own output arithmetic, so the error is the one it will make. The lowest validation error
    wins, ties going to the sparsest and roundest, and none is kept unless it is no worse than
    the plain solve: real coefficients (which no grid fits) keep the solve. `system` is
    `output_features` of the training rows. Returns what was kept, or None.
    """
    params = built.target_params
    if params.transform != "identity":
        return None
    layer = next(la for la in built.features.layers if isinstance(la, Monomials))
    kernel, bias = built.output_layer.get_weights()
    plain = np.concatenate([kernel[:, 0], bias]).astype(np.float64)
    candidates = snap_candidates(
        plain, system, monomial_scale=layer.scale, exponents=exponents,
        target_scale=params.scale[0], target_offset=params.offset[0],
    )
    error_of = validation_error_of(built, x_val, y_val)
    best_error = error_of(plain)
    best: tuple[str, list[np.ndarray]] | None = None
    for name, solution in candidates:
        error = error_of(solution)
        if error < best_error or (error == best_error and best is None):
            best_error, best = error, (name, output_weights(built, solution))
    built.output_layer.set_weights(best[1] if best is not None else [kernel, bias])
    return None if best is None else best[0]


def validation_error_of(
    built: BuiltModel, x_val: np.ndarray, y_val: np.ndarray
) -> Callable[[np.ndarray], float]:
    """The exported model's validation MAE as a function of its output layer's solution.

    In float64 the features are computed once and each solution costs one NumPy product: the
    exported model's own Dense and Denormalize arithmetic, without a Keras call per candidate
    (which was most of a power trial). Any other precision goes through the model itself.
    """
    if built.output_layer.dtype != "float64":
        def through_the_model(solution: np.ndarray) -> float:
            built.output_layer.set_weights(output_weights(built, solution))
            return validation_mae(built.exported, x_val, y_val)

        return through_the_model
    features = predict_features(built.features, x_val)
    truth = np.asarray(y_val, dtype=np.float64).reshape(-1)

    def in_numpy(solution: np.ndarray) -> float:
        with np.errstate(invalid="ignore", over="ignore"):
            normalized = features @ solution[:-1] + solution[-1]
            error = float(np.mean(np.abs(denormalize(built.target_params, normalized) - truth)))
        return error if math.isfinite(error) else math.inf

    return in_numpy


def predict_features(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """A features model's outputs (rows by units) as float64."""
    out = model(np.asarray(x, dtype=model.inputs[0].dtype), training=False)
    return np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float64)


def refit_output_layer(
    built: BuiltModel,
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    keep: np.ndarray | None = None,
    *,
    always: bool = False,
    system: OutputSystem | None = None,
) -> bool:
    """Solve the last linear layer by float64 least squares; keep it only if validation improves.

    Adam stops near, not at, the optimum; for the last layer the optimum is a linear problem, so
    a closing solve (`least_squares.solve_output`) removes the optimiser's noise floor (exact
    for a linear model on add). `always` keeps the solve whatever the validation says (nothing
    was trained before it). `system`: `output_features(built, x, y, keep)` if already read.
    """
    system = system if system is not None else output_features(built, x, y, keep)
    solution = solve_output(system)
    if solution is None:
        return False
    before = built.output_layer.get_weights()
    error_before = math.inf if always else validation_mae(built.exported, x_val, y_val)
    built.output_layer.set_weights(output_weights(built, solution))
    if always or validation_mae(built.exported, x_val, y_val) <= error_before:
        return True
    built.output_layer.set_weights(before)
    return False


def output_features(
    built: BuiltModel, x: np.ndarray, y: np.ndarray, keep: np.ndarray | None
) -> OutputSystem:
    """The output layer's inputs on the training rows and its targets, in float64: the least
    squares that its solve and refits share."""
    features = predict_features(built.features, x)
    target = y.astype(np.float64)
    if keep is not None:
        features, target = features[keep], target[keep]
    return OutputSystem(features, target)


def output_weights(built: BuiltModel, solution: np.ndarray) -> list[np.ndarray]:
    """A solution (kernel column, then bias) as the output layer's weights, in its dtype."""
    dtype = built.output_layer.dtype
    return [solution[:-1].reshape(-1, 1).astype(dtype), solution[-1:].astype(dtype)]


def validation_mae(model: keras.Model, x_val: np.ndarray, y_val: np.ndarray) -> float:
    """The model's mean absolute error on validation rows; inf if not finite."""
    with np.errstate(invalid="ignore", over="ignore"):
        predictions = predict_features(model, x_val).reshape(-1)
        error = float(np.mean(np.abs(predictions - y_val)))
    return error if math.isfinite(error) else math.inf
