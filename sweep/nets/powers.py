"""Products of powers in Keras ops, with the product units' rules: what `Monomials` and
`FormulaLayer` both compute, so a product means the same in every layer.

Whole powers by repeated multiplication (signs kept: (-2)**3 is -8; 0**0 is 1), a half power as
|x|**0.5 times the whole part, a negative power as one division whose value at a zero divisor
is 0 (where the quotient is undefined the operation has no data).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keras import ops as keras_ops

__all__ = ["Powers", "safe_divide"]


def safe_divide(top: Any, bottom: Any, ops: Any = keras_ops) -> Any:
    """``top / bottom``, and 0 where ``bottom`` is 0 (no inf or nan to poison a sum).

    `ops`: Keras' ops, or `numpy`, whose functions of these names do the same IEEE arithmetic.
    """
    zero = ops.equal(bottom, 0)
    safe = ops.where(zero, ops.ones_like(bottom), bottom)
    return ops.where(zero, ops.zeros_like(top), top / safe)


class Powers:
    """``x_i ** magnitude`` of some columns, memoised: units sharing a power compute it once.

    Only multiplication, division, ``abs`` and ``sqrt``, each correctly rounded by IEEE 754, so
    with `ops` = `numpy` on arrays the results are bit for bit those of Keras' ops on tensors.
    """

    def __init__(self, columns: Sequence[Any], ops: Any = keras_ops) -> None:
        self.columns = list(columns)
        self.ops = ops
        self._cache: dict[tuple[int, float], Any] = {}

    def power(self, i: int, magnitude: float) -> Any:
        """``x_i ** magnitude`` for a whole or half magnitude above 0."""
        key = (i, magnitude)
        if key not in self._cache:
            whole = int(magnitude)
            column = self.columns[i]
            if magnitude != whole:
                root = self.ops.sqrt(self.ops.abs(column))
                self._cache[key] = root if whole == 0 else self.power(i, float(whole)) * root
            elif whole == 1:
                self._cache[key] = column
            else:
                self._cache[key] = self.power(i, float(whole - 1)) * column
        return self._cache[key]

    def product(self, exponents: Sequence[float]) -> Any:
        """``prod_i x_i ** e_i`` over every column."""
        numerator = denominator = None
        for i, exponent in enumerate(exponents):
            if exponent == 0:
                continue
            factor = self.power(i, abs(exponent))
            if exponent > 0:
                numerator = factor if numerator is None else numerator * factor
            else:
                denominator = factor if denominator is None else denominator * factor
        if numerator is None:
            numerator = self.ops.ones_like(self.columns[0])
        if denominator is None:
            return numerator
        return safe_divide(numerator, denominator, self.ops)
