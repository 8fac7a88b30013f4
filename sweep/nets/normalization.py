"""Normalisation schemes, fitted in NumPy (the Keras layers that carry them: `sweep.nets.layers`).

The original question's network failed on multiply because the raw targets are huge; the fix is
to normalise. Every scheme here is an optional log transform followed by an affine map with
statistics fitted on the training data.

Two log transforms: ``signed_log`` (sign(x)·log1p|x|) copes with zero and negatives but is not
multiplicative; ``log_abs`` (log|x|, with 0 mapped to log of a tiny floor) makes multiply,
divide, square and sqrt *linear*: log(ab) = log a + log b. With an exponential target inverse a
linear model then contains the exact answer, and 0 comes out as a value that rounds to 0.

The fitted constants travel inside the exported model (`sweep.nets.layers`), so it maps raw
inputs to raw outputs. NumPy only: the search space and the data checks use the schemes
without loading Keras.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

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
