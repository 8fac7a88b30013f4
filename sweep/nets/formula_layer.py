"""The formula family's Keras layer: a found formula computed inside the exported model.

Registered under ``sweep`` like the normalisation layers, so a pulled model loads in safe mode
(no Lambda) and exports to SavedModel and ONNX as plain arithmetic ops. Its config is the
formula as data (`sweep.nets.formula.Formula`), re-checked on load: a file names its own
formula, and only the bounded shapes that module allows can be built.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sweep.nets._runtime import quiet_tensorflow

quiet_tensorflow()

# isort: off
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

# isort: on
from sweep.nets.formula import EXP_CLIP, Formula, Term  # noqa: E402
from sweep.nets.powers import Powers, safe_divide  # noqa: E402

__all__ = ["FormulaLayer", "formula_value"]

_LOG_FLOOR = 1e-300


@keras.saving.register_keras_serializable(package="sweep")
class FormulaLayer(keras.layers.Layer):
    """Raw (n, arity) -> (n, 1): the formula, in the layer's dtype (float64 for a sweep)."""

    def __init__(self, formula: dict[str, Any] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if formula is None:
            raise ValueError("a FormulaLayer needs its formula")
        try:
            self.parsed = Formula.from_dict(formula)
        except (TypeError, ValueError) as error:
            raise ValueError(f"the layer's formula is not valid: {error}") from None
        self.formula = self.parsed.to_dict()

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(formula=self.formula)
        return config

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], 1)

    def call(self, inputs: Any) -> Any:
        if tf.executing_eagerly() and self.compute_dtype == "float64":
            # Eager calls (a formula trial's validation report and its evaluation) take the
            # same IEEE operations in NumPy, bit for bit, where that is provable (`_in_numpy`):
            # TensorFlow dispatches each of a formula's dozens of small ops one by one. A
            # traced graph (every export) keeps TensorFlow's ops.
            value = _in_numpy(self.parsed, np.asarray(inputs))
            if value is not None:
                return ops.convert_to_tensor(value, dtype=self.compute_dtype)
        x = ops.cast(inputs, self.compute_dtype)
        return formula_value(self.parsed, [x[:, i] for i in range(self.parsed.arity)], ops)


def formula_value(
    formula: Formula, columns: Sequence[Any], namespace: Any = ops, seen: list[Any] | None = None
) -> Any:
    """The formula on its input columns, (n, 1), in Keras' ops or NumPy's (`namespace`).

    `seen`: collects the values `_in_numpy` checks (each term, the quotient, the power).
    """
    seen = [] if seen is None else seen
    powers = Powers(columns, namespace)
    top = _sum(formula.numerator, powers, namespace, seen) + formula.constant
    if formula.denominator or formula.denominator_constant != 1.0:
        bottom = _sum(formula.denominator, powers, namespace, seen)
        value = safe_divide(top, bottom + formula.denominator_constant, namespace)
        seen.append(value)
    else:
        value = top
    if formula.power != 1.0:
        magnitude = namespace.abs(value)
        if formula.power == 0.5:
            powered = namespace.sqrt(magnitude)
        elif formula.power == 2.0:
            powered = magnitude * magnitude
        else:
            # 0 ** negative would be inf: that point has no data (a zero sum inverted).
            zero = namespace.equal(magnitude, 0)
            powered = namespace.where(
                zero, namespace.zeros_like(magnitude),
                namespace.power(
                    namespace.where(zero, namespace.ones_like(magnitude), magnitude),
                    formula.power,
                ),
            )
        seen.append(powered)
        value = namespace.sign(value) * powered
    if formula.outer == "exp":
        value = namespace.exp(namespace.minimum(value, EXP_CLIP))
    return namespace.expand_dims(value, axis=1)


def _sum(terms: Sequence[Term], powers: Powers, namespace: Any, seen: list[Any]) -> Any:
    total = namespace.zeros_like(powers.columns[0])
    for term in terms:
        value = powers.product(term.exponents)
        if term.function != "none":
            inner = powers.product(term.argument) * term.scale
            value = value * _apply(term.function, inner, namespace)
        value = value * term.coefficient
        seen.append(value)
        total = total + value
    return total


def _in_numpy(formula: Formula, x: np.ndarray) -> np.ndarray | None:
    """The formula in NumPy (float64), or None where it could round apart from TensorFlow.

    Multiplication, division, addition, ``abs``, ``sqrt`` and ``sign`` are correctly rounded
    in both, so they agree bit for bit while no value is subnormal (TensorFlow's CPU kernels
    flush those to zero, NumPy keeps them). Elementary functions (sin, exp, a general power)
    round by their libraries' own code: those formulas stay in TensorFlow. No subnormal can
    arise when (1) each input lies within 2**±(1021 / degree) of 1, so every partial product
    of a term stays normal (as in `Monomials`), and (2) every term, constant, quotient and
    power is 0 or at least 2**-970 in magnitude: such values are multiples of 2**-1022 (the
    smallest normal), so is every sum of them, and a nonzero one is normal.
    """
    if formula.outer != "none" or formula.power not in (1.0, 0.5, 2.0):
        return None
    terms = (*formula.numerator, *formula.denominator)
    if any(term.function != "none" for term in terms):
        return None
    x = x.astype(np.float64)
    degree = max((sum(abs(e) for e in term.exponents) for term in terms), default=1.0)
    limit = 2.0 ** (1021 // max(math.ceil(degree), 1))
    if not _within(x, 1 / limit, limit):
        return None
    seen: list[Any] = []
    with np.errstate(all="ignore"):
        value = formula_value(formula, [x[:, i] for i in range(formula.arity)], np, seen)
    constants = np.array([formula.constant, formula.denominator_constant])
    floor = 2.0**-970
    if all(_within(v, floor, math.inf) for v in (*seen, constants)):
        return np.asarray(value)
    return None


def _within(values: np.ndarray, low: float, high: float) -> bool:
    """Whether every finite nonzero magnitude lies in [low, high]."""
    magnitudes = np.abs(values)
    magnitudes = magnitudes[(magnitudes != 0) & np.isfinite(magnitudes)]
    return magnitudes.size == 0 or bool(magnitudes.min() >= low and magnitudes.max() <= high)


def _apply(function: str, value: Any, namespace: Any) -> Any:
    if function == "sin":
        return namespace.sin(value)
    if function == "cos":
        return namespace.cos(value)
    if function == "exp":
        return namespace.exp(namespace.minimum(value, EXP_CLIP))
    if function == "log":
        return namespace.log(namespace.maximum(namespace.abs(value), _LOG_FLOOR))
    if function == "tanh":
        return namespace.tanh(value)
    raise ValueError(f"unknown function {function!r}")
