"""The power family's least squares, in NumPy: the solve of an output layer, its sparser
refits, and the rounded versions that snapping offers.

With the exponents fixed, a power model's output is linear in its weights, so a float64 solve
finds the optimum that Adam would only approach. This module is arithmetic on arrays and
loads no Keras; `sweep.nets.training` reads the features out of the model, writes solutions
into its output layer and judges them on validation data. A solution is one vector: the
output kernel's column, then the bias.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    column_scale = np.max(np.abs(design), axis=0)
    column_scale = np.where(column_scale > 0, column_scale, 1.0)
    solution, *_ = np.linalg.lstsq(design / column_scale, target, rcond=None)
    return np.asarray(solution / column_scale, dtype=np.float64)


def solve_output(features: np.ndarray, target: np.ndarray) -> np.ndarray | None:
    """The output layer's least-squares solution (kernel column, then bias), or None.

    None when there is nothing to solve on (no rows, or features that are not finite) or
    the solution is not finite.
    """
    if len(features) == 0 or not np.all(np.isfinite(features)):
        return None
    design = np.hstack([features, np.ones((len(features), 1))])
    solution = solve_columns(design, target)
    return solution if np.all(np.isfinite(solution)) else None


def sparse_solutions(
    features: np.ndarray, target: np.ndarray, solution: np.ndarray
) -> list[np.ndarray]:
    """The solve again on fewer units, one solution (zeros for dropped units) per threshold.

    Many product units are nearly collinear on the data (half and negative powers at degree 4:
    144 of them), so the full solve spreads the truth over units that are not in it, with
    coefficients that cancel in range and not beyond it. The truth is usually sparse:
    dropping the units that carry almost nothing and solving again recovers it.
    """
    design = np.hstack([features, np.ones((len(features), 1))])
    magnitude = np.max(np.abs(design), axis=0)
    scale = max(float(np.max(np.abs(target))), 1e-300)
    out: list[np.ndarray] = []
    for threshold in SPARSE_THRESHOLDS:
        current = solution.copy()
        for _ in range(SPARSE_ROUNDS):
            keep = np.abs(current) * magnitude >= threshold * scale
            keep[-1] = True  # the bias
            refit = np.zeros_like(current)
            refit[keep] = solve_columns(design[:, keep], target)
            if not np.all(np.isfinite(refit)) or np.array_equal(refit != 0, current != 0):
                current = refit
                break
            current = refit
        if np.all(np.isfinite(current)) and not any(np.array_equal(current, o) for o in out):
            out.append(current)
    return out


def snap_candidates(
    solution: np.ndarray,
    features: np.ndarray,
    target: np.ndarray,
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
    sparse = sparse_solutions(features, target, solution)
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
