"""A formula as plain data: what the formula family finds and its Keras layer computes.

``y = outer((numerator / denominator) ** power)``, where numerator and denominator are a
constant plus a few terms, and a term is ``coefficient * prod_i x_i**e_i * f(scale * prod_j
x_j**d_j)`` with ``f`` one of a few unary functions (or none). Exponents are whole or halves;
everything is bounded, because a loaded model names its own formula. NumPy only: the search
finds formulas without loading Keras, and `sweep.nets.formula_layer` computes the same
arithmetic in the exported model.

Powers follow the `Monomials` layer: whole powers by multiplication (signs kept), a half
power as |x|**0.5 times the whole part, a negative power as a division that is 0 where the
divisor is 0 (there the truth is undefined, so the data has no such row).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "FUNCTIONS",
    "MAX_FORMULA_TERMS",
    "Formula",
    "Term",
    "describe_formula",
    "power_product",
    "with_input_names",
]

FloatArray = npt.NDArray[np.float64]

FUNCTIONS: tuple[str, ...] = ("sin", "cos", "exp", "log", "tanh")
OUTERS: tuple[str, ...] = ("none", "exp")
MAX_FORMULA_TERMS = 32
MAX_FORMULA_INPUTS = 10
_MAX_EXPONENT = 8.0
# exp() of anything above this overflows float64: clipped, as the Denormalize layer clips.
EXP_CLIP = 700.0
_LOG_FLOOR = 1e-300


def _checked_exponents(values: Sequence[float], arity: int, what: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if len(out) != arity:
        raise ValueError(f"{what} must hold {arity} exponents, got {len(out)}")
    for v in out:
        if not abs(v) <= _MAX_EXPONENT or v * 2 != round(v * 2):
            raise ValueError(f"{what}: exponents are whole or halves within ±8, got {v}")
    return out


def _finite(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Term:
    """``coefficient * prod x**exponents * function(scale * prod x**argument)``."""

    coefficient: float
    exponents: tuple[float, ...]
    function: str = "none"
    argument: tuple[float, ...] = ()
    scale: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"coefficient": self.coefficient, "exponents": list(self.exponents)}
        if self.function != "none":
            out.update(function=self.function, argument=list(self.argument), scale=self.scale)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], arity: int) -> Term:
        if not isinstance(raw, Mapping):
            raise ValueError(f"a term must be a mapping, got {type(raw).__name__}")
        unknown = set(raw) - {"coefficient", "exponents", "function", "argument", "scale"}
        if unknown:
            raise ValueError(f"unknown term field {sorted(unknown)[0]!r}")
        function = raw.get("function", "none")
        if function != "none" and function not in FUNCTIONS:
            raise ValueError(f"unknown function {function!r}; allowed: {', '.join(FUNCTIONS)}")
        argument = raw.get("argument", ())
        return cls(
            coefficient=_finite(raw.get("coefficient"), "a term's coefficient"),
            exponents=_checked_exponents(raw.get("exponents", ()), arity, "a term"),
            function=str(function),
            argument=(
                _checked_exponents(argument, arity, "a function's argument")
                if function != "none" else ()
            ),
            scale=_finite(raw.get("scale", 1.0), "a function's scale"),
        )


@dataclass(frozen=True)
class Formula:
    """``outer(((n0 + sum numerator) / (d0 + sum denominator)) ** power)``; no denominator
    terms and ``d0 == 1`` is a plain sum."""

    arity: int
    numerator: tuple[Term, ...]
    constant: float = 0.0
    denominator: tuple[Term, ...] = ()
    denominator_constant: float = 1.0
    power: float = 1.0
    outer: str = "none"

    def __post_init__(self) -> None:
        if not 1 <= self.arity <= MAX_FORMULA_INPUTS:
            raise ValueError(f"a formula takes 1 to {MAX_FORMULA_INPUTS} inputs, got {self.arity}")
        if len(self.numerator) + len(self.denominator) > MAX_FORMULA_TERMS:
            raise ValueError(f"a formula has at most {MAX_FORMULA_TERMS} terms")
        if self.outer not in OUTERS:
            raise ValueError(f"unknown outer function {self.outer!r}")
        if not (self.power != 0 and abs(self.power) <= 4 and (self.power * 6).is_integer()):
            raise ValueError(f"a formula's power is a nonzero sixth within ±4, got {self.power}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "arity": self.arity,
            "numerator": [t.to_dict() for t in self.numerator],
            "constant": self.constant,
            "denominator": [t.to_dict() for t in self.denominator],
            "denominator_constant": self.denominator_constant,
            "power": self.power,
            "outer": self.outer,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Formula:
        """A stored formula, every field checked (a loaded model's config is untrusted).

        Raises:
            ValueError: an unknown field, a bad value, or more than the bounds allow.
        """
        if not isinstance(raw, Mapping):
            raise ValueError("a formula must be a mapping")
        allowed = {
            "arity", "numerator", "constant", "denominator", "denominator_constant", "power",
            "outer",
        }
        unknown = set(raw) - allowed
        if unknown:
            raise ValueError(f"unknown formula field {sorted(unknown)[0]!r}")
        arity = raw.get("arity")
        if isinstance(arity, bool) or not isinstance(arity, int):
            raise ValueError(f"a formula's arity must be an integer, got {arity!r}")
        terms = []
        for key in ("numerator", "denominator"):
            listed = raw.get(key, [])
            if not isinstance(listed, list | tuple) or len(listed) > MAX_FORMULA_TERMS:
                raise ValueError(f"a formula's {key} must be a list of at most "
                                 f"{MAX_FORMULA_TERMS} terms")
            terms.append(tuple(Term.from_dict(t, arity) for t in listed))
        return cls(
            arity=arity,
            numerator=terms[0],
            constant=_finite(raw.get("constant", 0.0), "a formula's constant"),
            denominator=terms[1],
            denominator_constant=_finite(
                raw.get("denominator_constant", 1.0), "a formula's denominator constant"
            ),
            power=_finite(raw.get("power", 1.0), "a formula's power"),
            outer=str(raw.get("outer", "none")),
        )

    @property
    def terms(self) -> int:
        return len(self.numerator) + len(self.denominator)

    def evaluate(self, x: npt.ArrayLike) -> FloatArray:
        """The formula on raw rows (n, arity), in float64, as the Keras layer computes it."""
        rows = np.asarray(x, dtype=np.float64)
        with np.errstate(all="ignore"):
            top = self.constant + _sum(self.numerator, rows)
            if self.denominator or self.denominator_constant != 1.0:
                bottom = self.denominator_constant + _sum(self.denominator, rows)
                zero = bottom == 0
                value = np.where(zero, 0.0, top / np.where(zero, 1.0, bottom))
            else:
                value = top
            if self.power != 1.0:
                value = np.sign(value) * np.abs(value) ** self.power
            if self.outer == "exp":
                value = np.exp(np.minimum(value, EXP_CLIP))
        return np.asarray(value, dtype=np.float64).reshape(-1)


def power_product(rows: FloatArray, exponents: Sequence[float]) -> FloatArray:
    """``prod_i x_i**e_i`` with the `Monomials` layer's rules for signs, halves and zeros."""
    numerator = np.ones(len(rows))
    denominator = np.ones(len(rows))
    for i, exponent in enumerate(exponents):
        if exponent == 0:
            continue
        column = rows[:, i]
        magnitude = abs(exponent)
        whole = int(magnitude)
        factor = np.ones(len(rows))
        if whole:  # by multiplication, as the layer computes it: the same rounding
            factor = column
            for _ in range(whole - 1):
                factor = factor * column
        if magnitude != whole:
            factor = factor * np.sqrt(np.abs(column))
        if exponent > 0:
            numerator = numerator * factor
        else:
            denominator = denominator * factor
    zero = denominator == 0
    return np.where(zero, 0.0, numerator / np.where(zero, 1.0, denominator))


def apply_function(function: str, values: FloatArray) -> FloatArray:
    if function == "sin":
        return np.sin(values)
    if function == "cos":
        return np.cos(values)
    if function == "exp":
        return np.exp(np.minimum(values, EXP_CLIP))
    if function == "log":
        return np.log(np.maximum(np.abs(values), _LOG_FLOOR))
    if function == "tanh":
        return np.tanh(values)
    return values


def term_values(term: Term, rows: FloatArray) -> FloatArray:
    value = power_product(rows, term.exponents)
    if term.function != "none":
        inner = term.scale * power_product(rows, term.argument)
        value = value * apply_function(term.function, inner)
    return term.coefficient * value


def _sum(terms: Sequence[Term], rows: FloatArray) -> FloatArray:
    total = np.zeros(len(rows))
    for term in terms:
        total = total + term_values(term, rows)
    return total


def _monomial_text(exponents: Sequence[float], names: Sequence[str]) -> str:
    top: list[str] = []
    bottom: list[str] = []
    for name, e in zip(names, exponents, strict=True):
        if e == 0:
            continue
        power = abs(e)
        text = name if power == 1 else f"{name}**{power:g}"
        (top if e > 0 else bottom).append(text)
    out = "*".join(top) or "1"
    if bottom:
        out += "/" + (bottom[0] if len(bottom) == 1 else "(" + "*".join(bottom) + ")")
    return out


def _number(value: float) -> str:
    return f"{value:.12g}"


def _terms_text(terms: Sequence[Term], constant: float, names: Sequence[str]) -> str:
    parts = [] if constant == 0 else [_number(constant)]
    for term in terms:
        body = _monomial_text(term.exponents, names)
        if term.function != "none":
            inner = _monomial_text(term.argument, names)
            if term.scale != 1:
                inner = f"{_number(term.scale)}*{inner}"
            call = f"{term.function}({inner})"
            body = call if body == "1" else f"{body}*{call}"
        if term.coefficient in (1, -1):
            coefficient = "" if term.coefficient == 1 else "-"
        elif body.startswith("1/"):  # 2/(m*v**2), not 2*1/(m*v**2)
            coefficient, body = _number(term.coefficient), body[1:]
        else:
            coefficient = f"{_number(term.coefficient)}*"
        parts.append(f"{coefficient}{body}")
    return " + ".join(parts).replace("+ -", "- ") or "0"  # a - b, not a + -b


_PLACEHOLDER = re.compile(r"\bx(\d+)\b")


def with_input_names(text: str | None, names: Sequence[str]) -> str | None:
    """A formula described without names (``x0*x1``), with the inputs' names put in."""
    if not text:
        return text

    def name(match: re.Match[str]) -> str:
        index = int(match.group(1))
        return names[index] if index < len(names) else match.group(0)

    return _PLACEHOLDER.sub(name, text)


def describe_formula(formula: Formula, names: Sequence[str] | None = None) -> str:
    """A readable form, e.g. ``8.314*n*T/V`` or ``(a + b)/(a - b)``."""
    labels = list(names) if names is not None else [f"x{i}" for i in range(formula.arity)]
    text = _terms_text(formula.numerator, formula.constant, labels)
    if formula.denominator or formula.denominator_constant != 1.0:
        below = _terms_text(formula.denominator, formula.denominator_constant, labels)
        text = f"({text})/({below})"
    if formula.power != 1.0:
        text = f"({text})**{formula.power:.6g}"
    if formula.outer == "exp":
        text = f"exp({text})"
    return text
