"""The power family's least squares, in NumPy: the solve of an output layer, its sparser
refits, and the rounded versions that snapping offers.

With the exponents fixed, a power model's output is linear in its weights, so a float64 solve
finds the optimum that Adam would only approach. This module is arithmetic on arrays and
loads no Keras; `sweep.nets.training` reads the features out of the model, writes solutions
into its output layer and judges them on validation data. A solution is one vector: the
output kernel's column, then the bias. An `OutputSystem` holds the training rows' least squares,
factored once for the solve and all its refits.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np

# Rounding grids offered to the solved coefficients: integers, halves, quarters.
SNAP_DENOMINATORS: tuple[int, ...] = (1, 2, 4)
# Sparse refits: units whose share of the target's magnitude falls below a threshold are
# dropped and the rest solved again, sparsest first.
SPARSE_THRESHOLDS: tuple[float, ...] = (1e-3, 1e-5, 1e-7, 1e-9)
# Drop-and-solve rounds per threshold, at most: each round drops what the last solve left
# small, and the rounds stop early once the kept units no longer change.
SPARSE_ROUNDS = 3


def solve_columns(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least squares with every column scaled to a largest magnitude of 1.

    Monomials of different degrees differ by many orders of magnitude; unscaled, the solve
    loses digits to that alone.
    """
    column_scale = _column_scale(design)
    solution, *_ = np.linalg.lstsq(design / column_scale, target, rcond=None)
    return np.asarray(solution / column_scale, dtype=np.float64)


def _column_scale(design: np.ndarray) -> np.ndarray:
    """Each column's largest magnitude, 1 for a column of zeros: what `solve_columns` divides by."""
    column_scale = np.max(np.abs(design), axis=0)
    return np.where(column_scale > 0, column_scale, 1.0)


class OutputSystem:
    """The output layer's least squares on the training rows, for the solve and its refits.

    The design is the features, then a column of ones for the bias. The plain solve and the
    sparse refits (up to a dozen column subsets) each cost a factorization of all n rows;
    they share one instead. With D the design scaled as `solve_columns` scales it (column by
    column, so a subset is scaled the same) and D = QR, min ||D[:, S] x - y|| equals
    min ||R[:, S] x - Q^T y|| (the part of y outside D's span is a constant), so every solve
    is on p rows. R keeps D's conditioning (D^T D would square it and lose the digits that
    exactness needs), and R[:, S] has D[:, S]'s singular values, so with lstsq's cut-off set
    as on n rows a rank-deficient subset (duplicated units) gets the same minimum-norm
    solution. With no more rows than columns, values that are not finite or more than one
    target column, each solve is `solve_columns` on the design's columns, as before.
    """

    def __init__(self, features: np.ndarray, target: np.ndarray) -> None:
        self.features = features
        self.target = target

    @cached_property
    def design(self) -> np.ndarray:
        """The features, then the bias's column of ones."""
        return np.hstack([self.features, np.ones((len(self.features), 1))])

    @cached_property
    def _factored(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """R, Q^T y and the column scale; None where the solve is on the design itself."""
        rows, columns = self.design.shape
        if rows <= columns or np.ndim(self.target) != 1 or not (
            np.all(np.isfinite(self.design)) and np.all(np.isfinite(self.target))
        ):
            return None
        column_scale = _column_scale(self.design)
        # R of [D | y] holds R of D and, in its last column, Q^T y, without forming Q. Filled in
        # column order, LAPACK's: NumPy's copies into LAPACK are then contiguous, and the QR
        # costs no more than the lstsq on D that it replaces.
        augmented = np.empty((rows, columns + 1), order="F")
        np.divide(self.design, column_scale, out=augmented[:, :columns])
        augmented[:, columns] = self.target
        # (NumPy's stubs type every mode of qr as the (Q, R) pair.)
        r: np.ndarray = np.linalg.qr(augmented, mode="r")  # type: ignore[assignment]
        return r[:columns, :columns], r[:columns, columns], column_scale

    def solve(self, keep: np.ndarray | None = None) -> np.ndarray:
        """`solve_columns` on the design's columns where `keep` is true (all by default)."""
        if keep is None:
            keep = np.ones(self.design.shape[1], dtype=bool)
        if self._factored is None:
            return solve_columns(self.design[:, keep], self.target)
        r, q_target, column_scale = self._factored
        columns = r[:, keep]
        rcond = np.finfo(np.float64).eps * max(len(self.design), columns.shape[1])
        solution, *_ = np.linalg.lstsq(columns, q_target, rcond=rcond)
        return np.asarray(solution / column_scale[keep], dtype=np.float64)


def solve_output(system: OutputSystem) -> np.ndarray | None:
    """The output layer's least-squares solution (kernel column, then bias), or None.

    None when there is nothing to solve on (no rows, or features that are not finite) or
    the solution is not finite.
    """
    if len(system.features) == 0 or not np.all(np.isfinite(system.features)):
        return None
    solution = system.solve()
    return solution if np.all(np.isfinite(solution)) else None


def sparse_solutions(system: OutputSystem, solution: np.ndarray) -> list[np.ndarray]:
    """The solve again on fewer units, one solution (zeros for dropped units) per threshold.

    Many product units are nearly collinear on the data (half and negative powers at degree 4:
    144 of them), so the full solve spreads the truth over units that are not in it, with
    coefficients that cancel in range and not beyond it. The truth is usually sparse:
    dropping the units that carry almost nothing and solving again recovers it.
    """
    magnitude = np.max(np.abs(system.design), axis=0)
    scale = max(float(np.max(np.abs(system.target))), 1e-300)
    out: list[np.ndarray] = []
    for threshold in SPARSE_THRESHOLDS:
        current = solution.copy()
        for _ in range(SPARSE_ROUNDS):
            keep = np.abs(current) * magnitude >= threshold * scale
            keep[-1] = True  # the bias
            refit = np.zeros_like(current)
            refit[keep] = system.solve(keep)
            if not np.all(np.isfinite(refit)) or np.array_equal(refit != 0, current != 0):
                current = refit
                break
            current = refit
        if np.all(np.isfinite(current)) and not any(np.array_equal(current, o) for o in out):
            out.append(current)
    return out


def snap_candidates(
    solution: np.ndarray,
    system: OutputSystem,
    *,
    monomial_scale: Sequence[float],
    exponents: Sequence[Sequence[float]],
    target_scale: float,
    target_offset: float,
) -> list[tuple[str, np.ndarray]]:
    """Named finite alternatives to `solution`, in the order a tie is decided: sparsest first.

    Least squares leaves coefficients like 0.9999999999997 and 3e-13 for the monomials that
    are not there; those errors grow with the monomial, so far from the data they cost hits.
    The alternatives: the solve again on fewer units (`sparse_solutions`), and each solution's
    coefficients in original units rounded to integers, halves or quarters, before that
    solution unrounded. A rounded coefficient converts back exactly (the monomial scales are
    powers of 2), so an integer polynomial is computed without rounding error up to 2**53.
    `solution` is in the model's units: monomials of the inputs divided by `monomial_scale`,
    a target normalised as ``(y - target_offset) / target_scale``.
    """
    scale = np.asarray(monomial_scale, dtype=np.float64)
    # Monomial k of the scaled inputs is monomial k of the raw inputs over prod_i s_i**e_ki.
    divisor = np.prod(scale[None, :] ** np.asarray(exponents, dtype=np.float64), axis=1)
    candidates: list[tuple[str, np.ndarray]] = []
    sparse = sparse_solutions(system, solution)
    named = [(f"sparse refit ({int(np.count_nonzero(v[:-1]))} units)", v) for v in sparse]
    for name, unrounded in [*named, ("plain solve", solution)]:
        coefficients = unrounded[:-1] * target_scale / divisor
        constant = unrounded[-1] * target_scale + target_offset
        for denominator in SNAP_DENOMINATORS:
            snapped = np.round(coefficients * denominator) / denominator
            snapped_constant = np.round(constant * denominator) / denominator
            rounded = np.concatenate(
                [snapped * divisor / target_scale,
                 [(snapped_constant - target_offset) / target_scale]]
            )
            candidates.append((f"{name}, rounded to 1/{denominator}", rounded))
        candidates.append((name, unrounded))
    return [(name, c) for name, c in candidates if np.all(np.isfinite(c))]
