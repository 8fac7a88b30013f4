"""The formula family's Keras layer: a found formula computed inside the exported model.

Registered under ``sweep`` like the normalisation layers, so a pulled model loads in safe mode
(no Lambda) and exports to SavedModel and ONNX as plain arithmetic ops. Its config is the
formula as data (`sweep.nets.formula.Formula`), re-checked on load: a file names its own
formula, and only the bounded shapes that module allows can be built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sweep.nets._runtime import quiet_tensorflow

quiet_tensorflow()

# isort: off
import keras  # noqa: E402
from keras import ops  # noqa: E402

# isort: on
from sweep.nets.formula import EXP_CLIP, Formula, Term  # noqa: E402
from sweep.nets.powers import Powers, safe_divide  # noqa: E402

__all__ = ["FormulaLayer"]

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
        x = ops.cast(inputs, self.compute_dtype)
        powers = Powers([x[:, i] for i in range(self.parsed.arity)])
        formula = self.parsed
        top = self._sum(formula.numerator, powers) + formula.constant
        if formula.denominator or formula.denominator_constant != 1.0:
            bottom = self._sum(formula.denominator, powers) + formula.denominator_constant
            value = safe_divide(top, bottom)
        else:
            value = top
        if formula.power != 1.0:
            magnitude = ops.abs(value)
            if formula.power == 0.5:
                powered = ops.sqrt(magnitude)
            elif formula.power == 2.0:
                powered = magnitude * magnitude
            else:
                # 0 ** negative would be inf: that point has no data (a zero sum inverted).
                zero = ops.equal(magnitude, 0)
                powered = ops.where(
                    zero, ops.zeros_like(magnitude),
                    ops.power(ops.where(zero, ops.ones_like(magnitude), magnitude), formula.power),
                )
            value = ops.sign(value) * powered
        if formula.outer == "exp":
            value = ops.exp(ops.minimum(value, EXP_CLIP))
        return ops.expand_dims(value, axis=1)

    def _sum(self, terms: Sequence[Term], powers: Powers) -> Any:
        total = ops.zeros_like(powers.columns[0])
        for term in terms:
            value = powers.product(term.exponents)
            if term.function != "none":
                inner = powers.product(term.argument) * term.scale
                value = value * _apply(term.function, inner)
            total = total + value * term.coefficient
        return total


def _apply(function: str, value: Any) -> Any:
    if function == "sin":
        return ops.sin(value)
    if function == "cos":
        return ops.cos(value)
    if function == "exp":
        return ops.exp(ops.minimum(value, EXP_CLIP))
    if function == "log":
        return ops.log(ops.maximum(ops.abs(value), _LOG_FLOOR))
    if function == "tanh":
        return ops.tanh(value)
    raise ValueError(f"unknown function {function!r}")
