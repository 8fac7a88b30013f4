"""The normalisation layers: fitted constants inside the exported model, registered with Keras.

Registered under the package name ``sweep``, so an exported model carries its own
normalisation, maps raw inputs to raw outputs, and loads in safe mode (no Lambda layers, no
pickles) once this module is imported: ``import sweep.nets.layers``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sweep.nets._runtime import quiet_tensorflow

quiet_tensorflow()

# isort: off
import keras  # noqa: E402
from keras import ops  # noqa: E402

# isort: on
from sweep.nets.normalization import TRANSFORMS, ZERO_FLOOR, NormalizationParams  # noqa: E402

__all__ = ["Denormalize", "Normalize"]


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
