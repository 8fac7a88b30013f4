"""The formula family's search: a formula found from the data alone, in NumPy.

Facts it rests on: a product of powers is linear in log space, so one solve gives its
exponents; a sum of a few products is a sparse linear combination of candidate terms, which
orthogonal matching pursuit selects; a ratio P/Q of such sums is linear in the coefficients of
P and Q once multiplied through (``y*q0 = P - y*(Q - q0)`` with one term ``q0`` of Q fixed); a
power of a sum becomes a sum once ``y`` is raised to the inverse power; ``y = N0*exp(-k*t)``
becomes a sum in ``log y``. Each structure is tried, every candidate refitted on all training
rows and judged on validation; the best is kept. Never reads an operation's name or text.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import numpy.typing as npt

from sweep.nets.formula import Formula, Term, apply_function, power_product
from sweep.nets.selection import EXACT, best_supports, lstsq, omp, pruned_supports
from sweep.nets.spec import count_monomials, monomial_exponents

__all__ = ["DiscoverySettings", "discover"]

FloatArray = npt.NDArray[np.float64]

# Rows used to select terms (all training rows refit the selection): selection only ranks.
_SELECTION_ROWS = 2000
# Candidate columns at most: a dense (rows x columns) float64 block of ~32 MB.
_MAX_COLUMNS = 2000
# Constant factors tried inside a function of a product (sin(2*th)) where only a function is
# solved for: the product step takes a single function at a time.
_ARGUMENT_SCALES = (1.0, -1.0, 2.0, 0.5, -2.0, -0.5)
# y**p tried as a sum: the formula is that sum to the power 1/p (a nonzero sixth).
_POWERS = (2.0, -1.0, 0.5, 3.0, 2 / 3, -2.0, -0.5)
_SNAP = (1, 2, 4)


@dataclass(frozen=True)
class DiscoverySettings:
    """What the search may try; Optuna chooses these per trial."""

    max_terms: int = 6
    degree: int = 3
    functions: bool = True
    max_seconds: float = 60.0


@dataclass(frozen=True)
class _Column:
    """One candidate term without its coefficient."""

    exponents: tuple[float, ...]
    function: str = "none"
    argument: tuple[float, ...] = ()
    scale: float = 1.0

    def values(self, rows: FloatArray) -> FloatArray:
        value = power_product(rows, self.exponents)
        if self.function != "none":
            inner = self.scale * power_product(rows, self.argument)
            value = value * apply_function(self.function, inner)
        return value

    def term(self, coefficient: float) -> Term:
        return Term(coefficient, self.exponents, self.function, self.argument, self.scale)


def _monomials(arity: int, degree: int, negative: bool) -> list[_Column]:
    """Products of whole powers up to `degree` (lowered until they fit), and with `negative`
    also quotients and each input's square root and its inverse."""
    while degree > 1 and count_monomials(arity, degree, negative) > _MAX_COLUMNS // 2:
        degree -= 1
    columns = [_Column(e) for e in monomial_exponents(arity, degree, negative=negative)]
    if negative:
        for i in range(arity):
            for half in (0.5, -0.5):
                columns.append(_Column(_unit(arity, i, half)))
    return columns


def _unit(arity: int, i: int, value: float = 1.0) -> tuple[float, ...]:
    exponents = [0.0] * arity
    exponents[i] = value
    return tuple(exponents)


def _function_columns(
    arity: int, scales: Sequence[float] | None = None, multiplied: bool = True
) -> list[_Column]:
    """f(s*a)*m: f a unary function, a an input or a product or ratio of two (over a few
    inputs, of three too), m 1 or (with `multiplied`) an input."""
    zero = (0.0,) * arity
    arguments = [_unit(arity, i) for i in range(arity)]
    for i, j in itertools.combinations(range(arity), 2):
        pair = [0.0] * arity
        pair[i] = pair[j] = 1.0
        arguments.append(tuple(pair))
        if arity <= 5:
            for sign in (1.0, -1.0):
                ratio = [0.0] * arity
                ratio[i], ratio[j] = sign, -sign
                arguments.append(tuple(ratio))
    if arity <= 4:
        for triple in itertools.combinations(range(arity), 3):
            arguments.append(tuple(1.0 if k in triple else 0.0 for k in range(arity)))
    multipliers = [zero, *(_unit(arity, i) for i in range(arity))] if multiplied else [zero]
    columns: list[_Column] = []
    for function in ("sin", "cos", "exp", "log", "tanh"):
        if scales is not None:
            factors = (1.0,) if function == "log" else tuple(scales)
        else:
            factors = (1.0, -1.0) if function in ("exp", "tanh") else (1.0,)
        for argument in arguments:
            for scale in factors:
                for multiplier in multipliers:
                    columns.append(_Column(multiplier, function, argument, scale))

    def inputs_used(column: _Column) -> int:
        return sum(e != 0 for e in column.exponents) + sum(e != 0 for e in column.argument)

    # Over many inputs the list passes the cap: the simplest columns (fewest inputs) of every
    # function are kept, not the first functions' whole share.
    columns.sort(key=inputs_used)
    return columns[: _MAX_COLUMNS]


def _design(columns: Sequence[_Column], rows: FloatArray) -> tuple[FloatArray, list[int]]:
    """The columns' values on `rows`, keeping only finite, non-constant ones."""
    if not columns:
        return np.empty((len(rows), 0)), []
    with np.errstate(all="ignore"):
        block = np.stack([c.values(rows) for c in columns], axis=1)
    finite = np.all(np.isfinite(block), axis=0) & (np.ptp(block, axis=0) > 0)
    kept = [k for k in range(len(columns)) if finite[k]]
    return block[:, kept], kept


def _error(formula: Formula, x: FloatArray, y: FloatArray) -> float:
    with np.errstate(all="ignore"):
        error = float(np.mean(np.abs(formula.evaluate(x) - y)))
    return error if math.isfinite(error) else math.inf


def _snapped(formula: Formula, x_val: FloatArray, y_val: FloatArray) -> Formula:
    """The formula with each coefficient rounded (to an integer, half or quarter, a zero
    dropping its term) wherever that validates no worse: a rounded coefficient is exact far
    beyond the data, and a least-squares residue like 3e-14 is no term at all."""
    best, best_error = formula, _error(formula, x_val, y_val)
    # Float rounding alone moves the error by a few ulps of the targets either way.
    slack = 1e-12 * float(np.mean(np.abs(y_val))) if len(y_val) else 0.0
    slots = [("constant", -1), ("denominator_constant", -1)]
    slots += [("numerator", k) for k in range(len(formula.numerator))]
    slots += [("denominator", k) for k in range(len(formula.denominator))]
    for field_name, index in slots:
        for denominator in _SNAP:
            candidate = _rounded(best, field_name, index, denominator)
            if candidate is None:
                continue
            error = _error(candidate, x_val, y_val)
            if error <= best_error + slack:
                best, best_error = candidate, min(error, best_error)
                break
    return _without_zero_terms(best)


def _rounded(formula: Formula, field_name: str, index: int, denominator: int) -> Formula | None:
    def snap(value: float) -> float:
        return float(np.round(value * denominator) / denominator)

    if field_name == "constant":
        value = snap(formula.constant)
        return None if value == formula.constant else replace(formula, constant=value)
    if field_name == "denominator_constant":
        value = snap(formula.denominator_constant)
        if value == formula.denominator_constant:
            return None
        return replace(formula, denominator_constant=value)
    terms = list(formula.numerator if field_name == "numerator" else formula.denominator)
    snapped = snap(terms[index].coefficient)
    if snapped == terms[index].coefficient:
        return None
    terms[index] = replace(terms[index], coefficient=snapped)
    if field_name == "numerator":
        return replace(formula, numerator=tuple(terms))
    return replace(formula, denominator=tuple(terms))


def _without_zero_terms(formula: Formula) -> Formula:
    numerator = tuple(t for t in formula.numerator if t.coefficient != 0)
    denominator = tuple(t for t in formula.denominator if t.coefficient != 0)
    if not numerator:
        return formula
    return replace(formula, numerator=numerator, denominator=denominator)


class _Search:
    """Every structure over one dataset, the best formula by validation kept."""

    def __init__(
        self, x: FloatArray, y: FloatArray, x_val: FloatArray, y_val: FloatArray,
        settings: DiscoverySettings,
    ) -> None:
        self.x, self.y, self.x_val, self.y_val = x, y, x_val, y_val
        self.settings = settings
        self.arity = x.shape[1]
        rng = np.random.default_rng(0)
        rows = len(x)
        self.pick = (
            np.sort(rng.choice(rows, size=_SELECTION_ROWS, replace=False))
            if rows > _SELECTION_ROWS else np.arange(rows)
        )
        self.deadline = time.monotonic() + settings.max_seconds
        self.best: Formula | None = None
        self.best_error = math.inf
        self.scale = max(float(np.mean(np.abs(y_val))), 1e-300)

    @property
    def done(self) -> bool:
        return self.best_error <= EXACT * self.scale or time.monotonic() > self.deadline

    def offer(self, formula: Formula | None) -> None:
        if formula is None:
            return
        error = _error(formula, self.x_val, self.y_val)
        if error > 2 * self.best_error:
            return  # rounding cannot make a formula twice as far off the best one
        formula = _snapped(formula, self.x_val, self.y_val)
        error = _error(formula, self.x_val, self.y_val)
        fewer = self.best is not None and formula.terms < self.best.terms
        if error < self.best_error or (fewer and error <= self.best_error * (1 + 1e-9)):
            self.best, self.best_error = formula, error

    def sums(
        self, columns: Sequence[_Column], target: Callable[[FloatArray, FloatArray], FloatArray],
        build: Callable[[list[Term], float], Formula | None],
    ) -> None:
        """OMP on `columns` against target(x, y); each support refitted on all rows."""
        sub_x, sub_y = self.x[self.pick], self.y[self.pick]
        design, kept = _design(columns, sub_x)
        goal = target(sub_x, sub_y)
        supports = omp(design, goal, self.settings.max_terms)
        if len(supports) != 1:  # one support: an exact one, found greedily
            supports += pruned_supports(design, goal, self.settings.max_terms)
        for support in best_supports(design, goal, supports):
            if time.monotonic() > self.deadline:
                return
            chosen = [columns[kept[k]] for k in support]
            with np.errstate(all="ignore"):
                block = np.stack([c.values(self.x) for c in chosen], axis=1)
            full = target(self.x, self.y)
            solution = lstsq(np.hstack([block, np.ones((len(self.x), 1))]), full)
            if solution is None:
                continue
            terms = [c.term(float(w)) for c, w in zip(chosen, solution[:-1], strict=True)]
            self.offer(build(terms, float(solution[-1])))

    def product(self, function: _Column | None = None) -> None:
        """log|y| = sum e_i log|x_i| (+ log|f(s*a)|) + c: exponents snapped to halves, then c
        solved. With `function`, the product times that function of an input or a product
        (``n*R*T*log(V2/V1)``, ``v**2*sin(2*th)/g``)."""
        # A function's fit is tried on the selection rows first: most are not the truth.
        x, y = (self.x, self.y) if function is None else (self.x[self.pick], self.y[self.pick])
        usable = (y != 0) & np.all(x != 0, axis=1)
        if usable.sum() < self.arity + 2:
            return
        rows = x[usable]
        target = np.log(np.abs(y[usable]))
        if function is not None:
            with np.errstate(all="ignore"):
                target = target - np.log(np.abs(function.values(rows)))
            if not np.all(np.isfinite(target)):
                return
        logs = np.log(np.abs(rows))
        block = np.hstack([logs, np.ones((len(logs), 1))])
        solution = lstsq(block, target)
        if solution is None:
            return
        if function is not None:
            fit = block @ solution
            if float(np.max(np.abs(fit - target))) > 1e-6:  # not this function: no offer
                return
        exponents = tuple(float(np.round(e * 2) / 2) for e in solution[:-1])
        if (function is None and not any(exponents)) or max(abs(e) for e in exponents) > 8:
            return
        shape = _Column(exponents) if function is None else replace(function, exponents=exponents)
        with np.errstate(all="ignore"):
            column = shape.values(self.x)
        denominator = float(column @ column)
        if np.isfinite(denominator) and denominator > 0:
            coefficient = float(column @ self.y) / denominator
            self.offer(Formula(self.arity, (shape.term(coefficient),)))

    def products_with_functions(self) -> None:
        """A product of powers times one function of an input or a product, in log space."""
        # No multipliers: the product's own exponents are what the solve finds.
        for column in _function_columns(self.arity, _ARGUMENT_SCALES, multiplied=False):
            if self.done:
                return
            self.product(column)

    def run(self) -> Formula | None:
        arity = self.arity
        positive = _monomials(arity, self.settings.degree, negative=False)
        monomials = _monomials(arity, self.settings.degree, negative=True)
        self.product()
        steps: list[Callable[[], None]] = []
        for dictionary in (positive, monomials):
            steps.append(partial(self._sum, dictionary))
            steps.extend(partial(self._power, dictionary, p) for p in _POWERS)
            if self.settings.functions and dictionary is positive:
                steps.append(self.products_with_functions)
        steps.append(lambda: self._ratios(positive))
        steps.append(lambda: self._ratios(monomials))
        steps.append(lambda: self._log_target(monomials))
        if self.settings.functions:
            functions = _function_columns(arity)
            steps.append(lambda: self.sums(
                [*monomials[: _MAX_COLUMNS // 2], *functions], lambda x, y: y,
                lambda terms, c: Formula(arity, tuple(terms), c),
            ))
        for step in steps:
            if self.done:
                break
            step()
        return self.best

    def _sum(self, columns: Sequence[_Column]) -> None:
        self.sums(
            columns, lambda x, y: y, lambda terms, c: Formula(self.arity, tuple(terms), c)
        )

    def _power(self, monomials: Sequence[_Column], power: float) -> None:
        """y**p is a sum: the formula is that sum to the power 1/p."""
        if power != int(power) and np.any(self.y < 0):
            return
        inverse = 1 / power
        if not (inverse * 6).is_integer():
            inverse = round(inverse * 6) / 6

        def target(x: FloatArray, y: FloatArray) -> FloatArray:
            with np.errstate(all="ignore"):
                return np.asarray(np.sign(y) * np.abs(y) ** power, dtype=np.float64)

        self.sums(
            monomials, target,
            lambda terms, c: Formula(self.arity, tuple(terms), c, power=inverse),
        )

    def _ratios(self, monomials: Sequence[_Column]) -> None:
        """y = P/Q: y*q0 = P - y*(Q - q0), for q0 the constant or one input."""
        arity = self.arity
        low = [c for c in monomials if sum(abs(e) for e in c.exponents) <= 2]
        fixed: list[tuple[float, ...]] = [(0.0,) * arity, *(_unit(arity, i) for i in range(arity))]
        for q0 in fixed:
            if self.done:
                return
            others = [c for c in low if c.exponents != q0]
            if any(q0):
                others.append(_Column((0.0,) * arity))  # Q's constant, when q0 is an input
            self._ratio(monomials, q0, others)

    def _ratio(
        self, monomials: Sequence[_Column], q0: tuple[float, ...], others: list[_Column]
    ) -> None:
        arity = self.arity
        sub_x, sub_y = self.x[self.pick], self.y[self.pick]
        top, top_kept = _design(monomials, sub_x)
        bottom_raw = np.stack([c.values(sub_x) for c in others], axis=1) * -sub_y[:, None]
        finite = np.all(np.isfinite(bottom_raw), axis=0) & (np.ptp(bottom_raw, axis=0) > 0)
        bottom_kept = [k for k in range(len(others)) if finite[k]]
        design = np.hstack([top, bottom_raw[:, bottom_kept]])
        goal = sub_y * power_product(sub_x, q0)
        supports = omp(design, goal, self.settings.max_terms + 1)
        if len(supports) != 1:
            supports += pruned_supports(design, goal, self.settings.max_terms + 1)
        for support in best_supports(design, goal, supports):
            chosen_top = [monomials[top_kept[k]] for k in support if k < len(top_kept)]
            chosen_bottom = [others[bottom_kept[k - len(top_kept)]] for k in support
                             if k >= len(top_kept)]
            if not chosen_bottom and not any(q0):
                continue  # no denominator: a plain sum, tried already
            columns = [c.values(self.x) for c in chosen_top]
            columns += [-self.y * c.values(self.x) for c in chosen_bottom]
            block = np.hstack([np.stack(columns, axis=1), np.ones((len(self.x), 1))])
            solution = lstsq(block, self.y * power_product(self.x, q0))
            if solution is None:
                continue
            split = len(chosen_top)
            weights = [float(w) for w in solution[:-1]]
            numerator = tuple(c.term(w) for c, w in zip(chosen_top, weights[:split], strict=True))
            below = [c.term(w) for c, w in zip(chosen_bottom, weights[split:], strict=True)]
            constant_below = sum(t.coefficient for t in below if not any(t.exponents))
            below = [t for t in below if any(t.exponents)]
            if any(q0):
                below.append(Term(1.0, q0))
                d0 = constant_below
            else:
                d0 = 1.0 + constant_below
            self.offer(Formula(arity, numerator, float(solution[-1]), tuple(below), d0))

    def _log_target(self, monomials: Sequence[_Column]) -> None:
        """y = exp(sum): a sum in log y, over the monomials and the inputs' logs."""
        if np.any(self.y <= 0):
            return
        arity = self.arity
        zero = (0.0,) * arity
        logs = [_Column(zero, "log", _unit(arity, i), 1.0) for i in range(arity)]
        self.sums(
            [*logs, *monomials], lambda x, y: np.log(y),
            lambda terms, c: Formula(arity, tuple(terms), c, outer="exp"),
        )


def discover(
    x_train: npt.ArrayLike,
    y_train: npt.ArrayLike,
    x_val: npt.ArrayLike,
    y_val: npt.ArrayLike,
    settings: DiscoverySettings,
) -> Formula | None:
    """The formula that validates best among every structure tried, or None (nothing finite).

    Rows whose target is not finite are left out. Bounded by ``settings.max_seconds``.
    """
    x = np.asarray(x_train, dtype=np.float64)
    y = np.asarray(y_train, dtype=np.float64).reshape(-1)
    keep = np.isfinite(y) & np.all(np.isfinite(x), axis=1)
    if keep.sum() < 2:
        return None
    with np.errstate(all="ignore"):
        return _Search(
            x[keep], y[keep], np.asarray(x_val, dtype=np.float64),
            np.asarray(y_val, dtype=np.float64).reshape(-1), settings,
        ).run()
