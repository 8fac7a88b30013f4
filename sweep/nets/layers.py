"""The normalisation layers: fitted constants inside the exported model, registered with Keras.

Registered under the package name ``sweep``, so an exported model carries its own
normalisation, maps raw inputs to raw outputs, and loads in safe mode (no Lambda layers, no
pickles) once this module is imported: ``import sweep.nets.layers``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sweep.nets._runtime import quiet_tensorflow

quiet_tensorflow()

# isort: off
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

# isort: on
from sweep.nets.normalization import TRANSFORMS, ZERO_FLOOR, NormalizationParams  # noqa: E402
from sweep.nets.powers import Powers  # noqa: E402
from sweep.nets.spec import MAX_DEGREE  # noqa: E402

# A loaded file names its own exponents: bounds keep a hostile one from building a huge graph.
MAX_MONOMIALS = 4096

__all__ = ["Denormalize", "FormulaLayer", "Monomials", "Normalize", "power_of_four_scale"]


class _AffineLayer(keras.layers.Layer):
    """Shared state of the two directions: fitted constants stored in the layer config."""

    def __init__(
        self,
        scheme: str = "none",
        transform: str = "identity",
        offset: list[float] | tuple[float, ...] = (0.0,),
        scale: list[float] | tuple[float, ...] = (1.0,),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if transform not in TRANSFORMS:
            raise ValueError(
                f"unknown transform {transform!r}; allowed: {', '.join(TRANSFORMS)}"
            )
        if len(offset) != len(scale):
            raise ValueError(f"offset and scale differ in length ({len(offset)} != {len(scale)})")
        self.scheme = scheme
        self.transform = transform
        self.offset = [float(v) for v in offset]
        self.scale = [float(v) for v in scale]

    @classmethod
    def from_params(cls, params: NormalizationParams, **kwargs: Any) -> _AffineLayer:
        return cls(
            scheme=params.scheme,
            transform=params.transform,
            offset=list(params.offset),
            scale=list(params.scale),
            **kwargs,
        )

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            scheme=self.scheme, transform=self.transform, offset=self.offset, scale=self.scale
        )
        return config

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def _constants(self, dtype: Any) -> tuple[Any, Any]:
        return (
            ops.convert_to_tensor(np.asarray(self.offset), dtype=dtype),
            ops.convert_to_tensor(np.asarray(self.scale), dtype=dtype),
        )


@keras.saving.register_keras_serializable(package="sweep")
class Normalize(_AffineLayer):
    """Raw values -> normalised values (the model's input side)."""

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, self.compute_dtype)
        if self.transform == "signed_log":
            x = ops.sign(x) * ops.log1p(ops.abs(x))
        elif self.transform == "log_abs":
            x = ops.log(ops.maximum(ops.abs(x), ZERO_FLOOR))
        offset, scale = self._constants(self.compute_dtype)
        # divide_no_nan, not `/`: the same IEEE quotient (a fitted scale is never 0), but a graph
        # optimiser (TF's Grappler, in every SavedModel, TF Serving and tf2onnx export) rewrites
        # `x / constant` into `x * (1 / constant)`, which rounds differently; it leaves DivNoNan
        # alone, so exported models answer bit for bit as this layer does eagerly.
        return ops.divide_no_nan(x - offset, scale)


@keras.saving.register_keras_serializable(package="sweep")
class Denormalize(_AffineLayer):
    """Normalised predictions -> raw values (the target's inverse, inside the exported model)."""

    def call(self, inputs: Any) -> Any:
        offset, scale = self._constants(self.compute_dtype)
        y = ops.cast(inputs, self.compute_dtype) * scale + offset
        if self.transform == "signed_log":
            # Clip before expm1 so a wild prediction gives a large finite value, not inf.
            y = ops.sign(y) * ops.expm1(ops.minimum(ops.abs(y), 80.0))
        elif self.transform == "log_abs":
            y = ops.exp(ops.minimum(y, 80.0))
        return y


def power_of_four_scale(values: np.ndarray) -> list[float]:
    """Per input, the smallest power of 4 at least max|x| (1 when all are 0).

    Dividing by a power of two is exact in binary, so scaled integer monomials stay exact;
    a power of *four* keeps sqrt(scale) one too, for the half powers.
    """
    data = np.abs(np.asarray(values, dtype=np.float64))
    if data.ndim == 1:
        data = data[:, None]
    largest = data.max(axis=0) if len(data) else np.zeros(data.shape[1])
    scales = []
    for value in largest:
        exponent = 0 if value <= 1 else int(np.ceil(np.log2(value) / 2))
        scales.append(float(4.0**exponent))
    return scales


@keras.saving.register_keras_serializable(package="sweep")
class Monomials(keras.layers.Layer):
    """Product units with fixed exponents: raw (n, arity) -> prod_i (x_i / s_i) ** e_i, (n, k).

    Durbin & Rumelhart's product unit with the exponents held fixed, so the layer after it is
    linear in its weights (solved by least squares) and holds an exact solution for every
    polynomial and every sum of integer-power products. Computed without logarithms, so signs
    and zeros come out right: integer powers by repeated multiplication (x**3 of -2 is -8;
    0**0 is 1), a half power as |x|**0.5 times the integer part (sign that of the integer part),
    and a negative power as one division, whose value at a zero denominator is 0 (where the
    quotient is undefined the operation has no data, and a weight of 0 keeps the others
    finite). `scale` is a power of 4 per input, so the scaling is exact.
    """

    def __init__(
        self,
        exponents: list[list[float]] | tuple[tuple[float, ...], ...] = ((1.0,),),
        scale: list[float] | tuple[float, ...] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        rows = [[float(v) for v in row] for row in exponents]
        if not 0 < len(rows) <= MAX_MONOMIALS or len({len(row) for row in rows}) != 1:
            raise ValueError(
                f"exponents must be 1..{MAX_MONOMIALS} equal-length rows, got {len(rows)} rows"
            )
        for row in rows:
            for value in row:
                if not abs(value) <= MAX_DEGREE or value * 2 != round(value * 2):
                    raise ValueError(
                        f"exponents must be whole or halves within ±{MAX_DEGREE}, got {value}"
                    )
        arity = len(rows[0])
        scales = [1.0] * arity if scale is None else [float(v) for v in scale]
        if len(scales) != arity or any(not v > 0 for v in scales):
            raise ValueError(f"scale must hold {arity} positive values, got {scale!r}")
        self.exponents = rows
        self.scale = scales

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(exponents=self.exponents, scale=self.scale)
        return config

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], len(self.exponents))

    def call(self, inputs: Any) -> Any:
        if tf.executing_eagerly():
            # Eager calls (a power trial's solve, its validation and evaluation, `predict`)
            # take the same IEEE operations in NumPy, bit for bit, at about an eighth of the
            # time for a hundred units: TensorFlow dispatches each of their hundreds of small
            # ops one by one. A traced graph (every export) keeps TensorFlow's ops.
            with np.errstate(all="ignore"):
                x = np.asarray(inputs).astype(self.compute_dtype)
                columns = [x[:, i] * (1.0 / s) for i, s in enumerate(self.scale)]
                if self._stays_normal(columns):
                    units = self._units(columns, np)
                    return ops.convert_to_tensor(units, dtype=self.compute_dtype)
        x = ops.cast(inputs, self.compute_dtype)
        return self._units([x[:, i] * (1.0 / s) for i, s in enumerate(self.scale)], ops)

    def _stays_normal(self, columns: list[np.ndarray]) -> bool:
        """Whether no unit can pass through a subnormal value on these inputs.

        TensorFlow's CPU kernels flush subnormals to zero and NumPy keeps them: the two agree
        bit for bit only while every finite nonzero value of every product stays normal, which
        holds when each scaled input lies within 2**±(bound / degree) of 1.
        """
        degree = max(sum(abs(v) for v in row) for row in self.exponents)
        info = np.finfo(self.compute_dtype)
        limit = 2.0 ** ((-int(info.minexp) - 1) // max(math.ceil(degree), 1))
        magnitudes = np.abs(np.concatenate(columns)) if columns else np.zeros(0)
        magnitudes = magnitudes[(magnitudes != 0) & np.isfinite(magnitudes)]
        return magnitudes.size == 0 or bool(
            magnitudes.min() >= 1 / limit and magnitudes.max() <= limit
        )

    def _units(self, columns: list[Any], namespace: Any) -> Any:
        powers = Powers(columns, namespace)
        return namespace.stack([powers.product(row) for row in self.exponents], axis=1)


# The formula family's layer, registered with the others: importing this module registers
# every layer a sweep model is built from.
from sweep.nets.formula_layer import FormulaLayer  # noqa: E402
