"""What a network is, as plain data: the search produces a `ModelSpec`, the networks build it.

No Keras and no Optuna here, so the search can describe a model without loading either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "LR_SCHEDULES",
    "PRECISIONS",
    "ModelSpec",
    "count_parameters",
]

ACTIVATIONS: tuple[str, ...] = ("relu", "tanh", "elu", "gelu", "selu", "swish", "linear")
LOSSES: tuple[str, ...] = ("mse", "mae", "huber")
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")
PRECISIONS: tuple[str, ...] = ("float64", "float32")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build and train one model; plain data, no Optuna."""

    hidden_layers: tuple[int, ...]
    activation: str
    input_normalization: str
    target_normalization: str
    learning_rate: float
    batch_size: int
    loss: str
    epochs: int
    lr_schedule: str
    refit_output: bool
    precision: str = "float64"

    def architecture(self, arity: int) -> str:
        """E.g. ``2-16-8-1 tanh`` or ``2-1 linear`` for a linear model."""
        widths = "-".join(str(w) for w in (arity, *self.hidden_layers, 1))
        return f"{widths} {self.activation}" if self.hidden_layers else f"{widths} linear"

    def parameter_count(self, arity: int) -> int:
        return count_parameters(arity, self.hidden_layers)


def count_parameters(arity: int, hidden_layers: Sequence[int]) -> int:
    """Trainable weights of a dense MLP (biases included)."""
    total, previous = 0, arity
    for width in (*hidden_layers, 1):
        total += previous * width + width
        previous = width
    return total
