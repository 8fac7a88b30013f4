"""What a network is, as plain data: the search produces a `ModelSpec`, the networks build it.

No Keras and no Optuna here, so the search can describe a model without loading either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ACTIVATIONS",
    "FAMILIES",
    "LOSSES",
    "LR_SCHEDULES",
    "MAX_DEGREE",
    "PRECISIONS",
    "ModelSpec",
    "count_parameters",
    "monomial_exponents",
]

ACTIVATIONS: tuple[str, ...] = ("relu", "tanh", "elu", "gelu", "selu", "swish", "linear")
LOSSES: tuple[str, ...] = ("mse", "mae", "huber")
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")
PRECISIONS: tuple[str, ...] = ("float64", "float32")
# "mlp": dense layers trained by Adam. "power": a fixed layer of product units (every monomial
# prod_i x_i**e_i up to a total degree) and a linear output solved by float64 least squares;
# it contains an exact solution for every polynomial and sum of integer-power products.
FAMILIES: tuple[str, ...] = ("mlp", "power")
MAX_DEGREE = 8


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
    family: str = "mlp"
    # The power family only: the largest total degree sum_i |e_i|, whether exponents may be
    # negative (a/b, 1/b) or halves (sqrt), and whether the solved output coefficients are
    # offered rounded (kept only when validation is no worse).
    degree: int = 0
    negative_powers: bool = False
    half_powers: bool = False
    snap_output: bool = False

    def exponents(self, arity: int) -> tuple[tuple[float, ...], ...]:
        """The product units of the power family (empty for an MLP)."""
        if self.family != "power":
            return ()
        return monomial_exponents(arity, self.degree, self.negative_powers, self.half_powers)

    def architecture(self, arity: int) -> str:
        """E.g. ``2-16-8-1 tanh``, ``2-1 linear`` or ``2-P14-1 power(deg 4, neg)``."""
        if self.family == "power":
            extras = "".join(
                (", neg" if self.negative_powers else "", ", half" if self.half_powers else "")
            )
            units = len(self.exponents(arity))
            return f"{arity}-P{units}-1 power(deg {self.degree}{extras})"
        widths = "-".join(str(w) for w in (arity, *self.hidden_layers, 1))
        return f"{widths} {self.activation}" if self.hidden_layers else f"{widths} linear"

    def parameter_count(self, arity: int) -> int:
        if self.family == "power":
            return len(self.exponents(arity)) + 1  # the output layer; the units are fixed
        return count_parameters(arity, self.hidden_layers)


def monomial_exponents(
    arity: int, degree: int, negative: bool = False, half: bool = False
) -> tuple[tuple[float, ...], ...]:
    """Every exponent vector e != 0 with sum_i |e_i| <= degree, in a fixed order.

    Steps of 1 (or 1/2 with `half`); negative entries only with `negative`. The constant
    monomial is left out: the output layer's bias is it.
    """
    if not 0 <= degree <= MAX_DEGREE:
        raise ValueError(f"degree must lie in 0..{MAX_DEGREE}, got {degree}")
    steps = 2 if half else 1
    top = degree * steps
    values = range(-top if negative else 0, top + 1)
    vectors: list[tuple[int, ...]] = [()]
    for _ in range(arity):
        vectors = [(*v, k) for v in vectors for k in values]
    kept = [v for v in vectors if any(v) and sum(abs(k) for k in v) <= top]
    # Low degree first, then by exponents: the order the output weights are read in.
    kept.sort(key=lambda v: (sum(abs(k) for k in v), tuple(-k for k in v)))
    return tuple(tuple(k / steps for k in v) for v in kept)


def count_parameters(arity: int, hidden_layers: Sequence[int]) -> int:
    """Trainable weights of a dense MLP (biases included)."""
    total, previous = 0, arity
    for width in (*hidden_layers, 1):
        total += previous * width + width
        previous = width
    return total
