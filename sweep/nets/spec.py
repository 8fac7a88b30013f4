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
    "MAX_UNITS",
    "PRECISIONS",
    "ModelSpec",
    "count_monomials",
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
# "formula": no network weights at all; a formula found from the data (sweep.nets.discovery:
# sparse sums, ratios and powers of product terms, one unary function) in one registered layer.
FAMILIES: tuple[str, ...] = ("mlp", "power", "formula")
MAX_DEGREE = 8
# Product units a power model may have: over many inputs every monomial up to the searched
# degree number in the thousands (millions with halves), which neither the least-squares solve
# nor the exported graph can afford; the degree is lowered until the units fit.
MAX_UNITS = 512


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
    # The formula family only (its `degree` bounds the candidate products): how many terms a
    # sum may keep, and whether terms may hold a unary function (sin cos exp log tanh).
    max_terms: int = 0
    functions: bool = False

    def fitted_degree(self, arity: int) -> int:
        """The degree the power family uses over `arity` inputs: the searched one, lowered
        until its product units number at most `MAX_UNITS`."""
        degree = self.degree
        while degree > 1 and count_monomials(
            arity, degree, self.negative_powers, self.half_powers
        ) > MAX_UNITS:
            degree -= 1
        return degree

    def exponents(self, arity: int) -> tuple[tuple[float, ...], ...]:
        """The product units of the power family (empty for an MLP)."""
        if self.family != "power":
            return ()
        return monomial_exponents(
            arity, self.fitted_degree(arity), self.negative_powers, self.half_powers
        )

    def architecture(self, arity: int) -> str:
        """E.g. ``2-16-8-1 tanh``, ``2-1 linear``, ``2-P14-1 power(deg 4, neg)`` or
        ``4-F6-1 formula(deg 3, functions)``; a power degree lowered to fit `MAX_UNITS` shows
        as ``deg 2 of 4``."""
        if self.family == "formula":
            extras = ", functions" if self.functions else ""
            return f"{arity}-F{self.max_terms}-1 formula(deg {self.degree}{extras})"
        if self.family == "power":
            extras = "".join(
                (", neg" if self.negative_powers else "", ", half" if self.half_powers else "")
            )
            units = len(self.exponents(arity))
            fitted = self.fitted_degree(arity)
            degree = f"{fitted} of {self.degree}" if fitted != self.degree else str(fitted)
            return f"{arity}-P{units}-1 power(deg {degree}{extras})"
        widths = "-".join(str(w) for w in (arity, *self.hidden_layers, 1))
        return f"{widths} {self.activation}" if self.hidden_layers else f"{widths} linear"

    def parameter_count(self, arity: int) -> int:
        if self.family == "formula":
            return 2 * self.max_terms + 2  # at most: a coefficient per term, two constants
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
    count = count_monomials(arity, degree, negative, half)
    if count > _MAX_ENUMERATED:
        raise ValueError(
            f"{count} product units of degree {degree} over {arity} inputs; the limit is "
            f"{_MAX_ENUMERATED}"
        )

    def extend(prefix: tuple[int, ...], left: int, budget: int) -> list[tuple[int, ...]]:
        # Only vectors within the degree budget are built: over many inputs the full grid of
        # exponents would be astronomically larger than the ball it is cut down to.
        if left == 0:
            return [prefix]
        out: list[tuple[int, ...]] = []
        for k in range(-budget if negative else 0, budget + 1):
            out.extend(extend((*prefix, k), left - 1, budget - abs(k)))
        return out

    kept = [v for v in extend((), arity, top) if any(v)]
    # Low degree first, then by exponents: the order the output weights are read in.
    kept.sort(key=lambda v: (sum(abs(k) for k in v), tuple(-k for k in v)))
    return tuple(tuple(k / steps for k in v) for v in kept)


# monomial_exponents refuses to list more than this (a bound on memory, whatever the caller).
_MAX_ENUMERATED = 1 << 16


def count_monomials(arity: int, degree: int, negative: bool = False, half: bool = False) -> int:
    """How many units `monomial_exponents` would list, counted without listing them."""
    top = degree * (2 if half else 1)
    # ways[t]: vectors over the inputs seen so far with sum |e_i| == t.
    ways = [1] + [0] * top
    for _ in range(arity):
        nxt = [0] * (top + 1)
        for total, count in enumerate(ways):
            if count:
                for k in range(0, top - total + 1):
                    nxt[total + k] += count * (2 if negative and k else 1)
        ways = nxt
    return sum(ways) - 1


def count_parameters(arity: int, hidden_layers: Sequence[int]) -> int:
    """Trainable weights of a dense MLP (biases included)."""
    total, previous = 0, arity
    for width in (*hidden_layers, 1):
        total += previous * width + width
        previous = width
    return total
