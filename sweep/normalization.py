"""Normalisation schemes as serialisable Keras layers.

The original question's network failed on multiply because the raw targets are huge; the fix is
to normalise. Every scheme here is an optional log transform followed by an affine map with
statistics fitted on the training data.

Two log transforms: ``signed_log`` (sign(x)·log1p|x|) copes with zero and negatives but is not
multiplicative; ``log_abs`` (log|x|, with 0 mapped to log of a tiny floor) makes multiply,
divide, square and sqrt *linear*: log(ab) = log a + log b. With an exponential target inverse a
linear model then contains the exact answer, and 0 comes out as a value that rounds to 0.

The layers are registered with Keras, so an exported model carries its own normalisation,
maps raw inputs to raw outputs, and loads in safe mode (no Lambda layers, no pickles).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import keras
import numpy as np
from keras import ops

from sweep.errors import ConfigError

SCHEMES: tuple[str, ...] = ("none", "minmax", "standard", "log", "log_abs")
Transform = Literal["identity", "signed_log", "log_abs"]
TRANSFORMS: tuple[str, ...] = ("identity", "signed_log", "log_abs")

# log|0| is taken as log(ZERO_FLOOR): deep enough that exp() of any sum involving it rounds to 0
# (and sqrt(0) -> 3e-8), shallow enough (-34.5) to keep the linear problem well conditioned.
ZERO_FLOOR = 1e-15
LOG_ZERO = float(np.log(ZERO_FLOOR))

# Fitted scales smaller than this would blow up the normalised values (constant columns).
_MIN_SCALE = 1e-12


@dataclass(frozen=True)
class NormalizationParams:
    """A fitted scheme: ``normalised = (transform(x) - offset) / scale`` per feature."""

    scheme: str
    transform: Transform
    offset: tuple[float, ...]
    scale: tuple[float, ...]


def signed_log(x: np.ndarray) -> np.ndarray:
    """``sign(x) * log1p(|x|)``: defined at 0 and for negative values (subtract, expressions)."""
    return np.asarray(np.sign(x) * np.log1p(np.abs(x)), dtype=np.float64)


def log_abs(x: np.ndarray) -> np.ndarray:
    """``log(max(|x|, ZERO_FLOOR))``: multiplicative structure becomes additive."""
    return np.asarray(np.log(np.maximum(np.abs(x), ZERO_FLOOR)), dtype=np.float64)


def _forward(transform: str, data: np.ndarray) -> np.ndarray:
    if transform == "signed_log":
        return signed_log(data)
    if transform == "log_abs":
        return log_abs(data)
    return data


def fit_normalization(scheme: str, values: np.ndarray) -> NormalizationParams:
    """Fit `scheme` on training values of shape (n, features) or (n,).

    Raises:
        ConfigError: `scheme` is not one of `SCHEMES`.
    """
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown normalisation {scheme!r}; choose from {', '.join(SCHEMES)}")
    data = np.asarray(values, dtype=np.float64)
    if data.ndim == 1:
        data = data[:, None]
    features = data.shape[1]
    transform: Transform = {"log": "signed_log", "log_abs": "log_abs"}.get(  # type: ignore[assignment]
        scheme, "identity"
    )
    if scheme in ("none", "log_abs"):
        # log_abs stays unscaled: rescaling would turn the exact weights (1, 1) of multiply
        # into data-dependent ones that float rounding then blurs.
        offset, scale = np.zeros(features), np.ones(features)
    elif scheme == "minmax":
        offset = data.min(axis=0)
        scale = data.max(axis=0) - offset
    else:
        transformed = _forward(transform, data)
        offset = transformed.mean(axis=0)
        scale = transformed.std(axis=0)
    scale = np.where(scale < _MIN_SCALE, 1.0, scale)
    return NormalizationParams(
        scheme=scheme,
        transform=transform,
        offset=tuple(float(v) for v in offset),
        scale=tuple(float(v) for v in scale),
    )


def normalize(params: NormalizationParams, values: np.ndarray) -> np.ndarray:
    """NumPy twin of `Normalize`, used to normalise training targets in float64."""
    data = np.asarray(values, dtype=np.float64)
    squeeze = data.ndim == 1
    if squeeze:
        data = data[:, None]
    data = _forward(params.transform, data)
    out = (data - np.asarray(params.offset)) / np.asarray(params.scale)
    return np.asarray(out[:, 0] if squeeze else out, dtype=np.float64)


def denormalize(params: NormalizationParams, values: np.ndarray) -> np.ndarray:
    """NumPy twin of `Denormalize` (the exact inverse of `normalize`)."""
    data = np.asarray(values, dtype=np.float64)
    squeeze = data.ndim == 1
    if squeeze:
        data = data[:, None]
    out = data * np.asarray(params.scale) + np.asarray(params.offset)
    if params.transform == "signed_log":
        out = np.sign(out) * np.expm1(np.abs(out))
    elif params.transform == "log_abs":
        out = np.exp(np.minimum(out, 700.0))
    return np.asarray(out[:, 0] if squeeze else out, dtype=np.float64)


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
        return (x - offset) / scale


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
