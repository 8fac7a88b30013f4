"""A monomial layer like issue 15's (integer exponents by repeated multiplication, one division,
`where` for a zero denominator), so the exporters are tested on its ops before it lands.

Registered under a test package name, so it never clashes with the real `sweep>Monomials`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="sweep_tests")
class TestMonomials(keras.layers.Layer):
    """Raw inputs (n, arity) -> the monomials prod_i x_i ** e_i, (n, k), float64."""

    def __init__(self, exponents: Sequence[Sequence[int]] = ((1,),), **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float64")
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.exponents = [[int(v) for v in e] for e in exponents]

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(exponents=self.exponents)
        return config

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], len(self.exponents))

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, self.compute_dtype)
        columns = [x[:, i] for i in range(len(self.exponents[0]))]

        def power(base: Any, n: int) -> Any:
            result = base
            for _ in range(n - 1):
                result = result * base
            return result

        features = []
        for e in self.exponents:
            num = den = None
            for column, v in zip(columns, e, strict=True):
                if v > 0:
                    num = power(column, v) if num is None else num * power(column, v)
                elif v < 0:
                    den = power(column, -v) if den is None else den * power(column, -v)
            if num is None:
                num = ops.ones_like(columns[0])
            if den is None:
                features.append(num)
            else:
                zero = ops.equal(den, 0)
                safe = ops.where(zero, ops.ones_like(den), den)
                features.append(ops.where(zero, ops.zeros_like(num), num / safe))
        return ops.stack(features, axis=1)


EXPONENTS = ((1, 1), (1, -1), (2, 0), (0, 2), (3, -2))


def monomial_model(coefficients: Sequence[float], exponents: Sequence[Sequence[int]] = EXPONENTS,
                   ) -> keras.Model:
    """raw (a, b) -> sum_j coefficients[j] * monomial_j: one-hot coefficients pick a*b or a/b."""
    inputs = keras.Input(shape=(len(exponents[0]),), dtype="float64", name="operands")
    features = TestMonomials(exponents, name="monomials")(inputs)
    output = keras.layers.Dense(1, name="output", dtype="float64")
    model = keras.Model(inputs, output(features), name="arithmetic")
    output.set_weights(
        [np.asarray(coefficients, dtype="float64").reshape(-1, 1), np.zeros(1, "float64")]
    )
    return model
