"""Which few of many candidate columns explain a target: the formula search's selection.

Orthogonal matching pursuit from several openings, and one full solve pruned of the columns
that carry next to nothing; the supports they yield are ranked on the selection rows. NumPy
only (`sweep.nets.discovery` builds the columns and judges the formulas).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["EXACT", "best_supports", "lstsq", "omp", "pruned_supports"]

FloatArray = npt.NDArray[np.float64]

# A residual this small relative to the target is an exact fit.
EXACT = 1e-11
# Greedy selection restarts from this many of the best-matching columns.
STARTS = 8
# Supports refitted on every training row, of all those a selection produced.
REFITS = 4
# A full solve over every candidate (then pruned) up to this many columns: ~1 s at 2000 rows.
FULL_SOLVE_COLUMNS = 800


def omp(
    design: FloatArray, target: FloatArray, max_terms: int, starts: int = STARTS
) -> list[list[int]]:
    """Orthogonal matching pursuit with an intercept, from each of the `starts` columns that
    best match the target: every support along the way, an exact one first when found.

    Greedy selection can open on a column that only resembles the truth (a*b*c*d for
    a*b + c*d); starting again from the next best columns finds the sparse truth when the
    first start does not.
    """
    if design.shape[1] == 0 or not np.all(np.isfinite(target)):
        return []
    centred = design - design.mean(axis=0)
    norms = np.linalg.norm(centred, axis=0)
    usable = (norms > 0) & np.isfinite(norms)
    unit = np.where(usable, centred / np.where(usable, norms, 1.0), 0.0)
    start = target - target.mean()
    scale = max(float(np.linalg.norm(start)), 1e-300)
    first = np.argsort(-np.abs(unit.T @ start))[:starts]
    supports: list[list[int]] = []
    for opening in first:
        support = [int(opening)]
        for _ in range(min(max_terms, design.shape[1])):
            block = np.hstack([design[:, support], np.ones((len(target), 1))])
            solution = lstsq(block, target)
            if solution is None:
                break
            residual = target - block @ solution
            supports.append(list(support))
            if float(np.linalg.norm(residual)) <= EXACT * scale:
                return [list(support)]
            if len(support) >= max_terms:
                break
            correlation = np.abs(unit.T @ residual)
            correlation[support] = -1.0
            pick = int(np.argmax(correlation))
            if not correlation[pick] > 0:
                break
            support.append(pick)
    return supports


def pruned_supports(design: FloatArray, target: FloatArray, max_terms: int) -> list[list[int]]:
    """Supports from one solve over every column, the columns that carry next to nothing
    dropped and the rest solved again (as the power family's sparse refits).

    Where greedy selection opens on the wrong column (1/(a*b*c) for 1/a + 1/b + 1/c, both
    large where the inputs are small), the full solve over exact data puts the weight on the
    truth and nearly none elsewhere.
    """
    if not 0 < design.shape[1] <= FULL_SOLVE_COLUMNS or design.shape[1] >= len(target):
        return []
    block = np.hstack([design, np.ones((len(target), 1))])
    solution = lstsq(block, target)
    if solution is None:
        return []
    magnitude = np.linalg.norm(block, axis=0)
    scale = max(float(np.linalg.norm(target)), 1e-300)
    out: list[list[int]] = []
    for threshold in (1e-3, 1e-6, 1e-9):
        weights = solution
        keep = np.zeros(design.shape[1], dtype=bool)
        for _ in range(3):
            keep = np.abs(weights[:-1]) * magnitude[:-1] >= threshold * scale
            if not keep.any() or keep.sum() > max_terms:
                break
            columns = np.flatnonzero(keep)
            refit = lstsq(np.hstack([design[:, columns], np.ones((len(target), 1))]), target)
            if refit is None:
                break
            weights = np.zeros_like(solution)
            weights[columns] = refit[:-1]
            weights[-1] = refit[-1]
        support = [int(k) for k in np.flatnonzero(keep)]
        if support and len(support) <= max_terms and support not in out:
            out.append(support)
    return out


def best_supports(
    design: FloatArray, target: FloatArray, supports: list[list[int]], count: int = REFITS
) -> list[list[int]]:
    """The `count` supports (duplicates dropped) that fit the selection rows best: only those
    are refitted on every training row and judged on validation."""
    unique = list({tuple(sorted(s)): s for s in supports}.values())
    if len(unique) <= count:
        return unique
    ones = np.ones((len(target), 1))
    scored: list[tuple[float, list[int]]] = []
    for support in unique:
        block = np.hstack([design[:, support], ones])
        solution = lstsq(block, target)
        if solution is not None:
            scored.append((float(np.linalg.norm(target - block @ solution)), support))
    scored.sort(key=lambda pair: (pair[0], len(pair[1])))
    return [support for _, support in scored[:count]]


def lstsq(block: FloatArray, target: FloatArray) -> FloatArray | None:
    column_scale = np.max(np.abs(block), axis=0)
    column_scale = np.where(column_scale > 0, column_scale, 1.0)
    with np.errstate(all="ignore"):
        try:
            solution, *_ = np.linalg.lstsq(block / column_scale, target, rcond=None)
        except np.linalg.LinAlgError:
            return None
    solution = solution / column_scale
    return solution if np.all(np.isfinite(solution)) else None
