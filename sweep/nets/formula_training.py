"""The formula family trained: a formula found in NumPy, wrapped in its exported Keras model.

No gradient steps: `sweep.nets.discovery` finds the formula (structure and coefficients, by
least squares) on the training rows and picks among candidates by validation error; the model
is one `FormulaLayer` on the raw inputs, in float64.
"""

from __future__ import annotations

import time

import keras
import numpy as np

from sweep.errors import TrialFailure
from sweep.nets import EpochCallback
from sweep.nets.discovery import DiscoverySettings, discover
from sweep.nets.formula import Formula, describe_formula
from sweep.nets.formula_layer import FormulaLayer
from sweep.nets.spec import ModelSpec

__all__ = ["build_formula_model", "find_formula"]


def find_formula(
    spec: ModelSpec,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    max_seconds: float,
) -> Formula:
    """The formula the spec's settings find. Raises `TrialFailure` when none is finite."""
    settings = DiscoverySettings(
        max_terms=max(1, spec.max_terms), degree=max(1, spec.degree),
        functions=spec.functions, max_seconds=max(1.0, max_seconds),
    )
    formula = discover(x_train, y_train, x_val, y_val, settings)
    if formula is None:
        raise TrialFailure("the formula search found nothing finite on this data")
    return formula


def build_formula_model(formula: Formula, dtype: str = "float64") -> keras.Model:
    """Raw inputs (operands, float64) -> the formula's value, one registered layer."""
    inputs = keras.Input(shape=(formula.arity,), dtype=dtype, name="operands")
    output = FormulaLayer(formula.to_dict(), name="formula", dtype=dtype)(inputs)
    return keras.Model(inputs, output, name="arithmetic")


def train_formula(
    spec: ModelSpec,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    on_epoch: EpochCallback | None,
    started: float,
    max_seconds: float,
    names: tuple[str, ...] | None = None,
) -> tuple[keras.Model, str]:
    """The trained model and its formula as text (the trial records it as its structure)."""
    formula = find_formula(
        spec, x_train, y_train, x_val, y_val, max_seconds - (time.monotonic() - started)
    )
    model = build_formula_model(formula, spec.precision)
    if on_epoch is not None:
        from sweep.nets.training import predict

        on_epoch(0, predict(model, x_val))
    return model, describe_formula(formula, names)
