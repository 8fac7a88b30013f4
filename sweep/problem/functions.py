"""What a checked expression's names and operators mean, and its evaluation over numpy arrays.

`sweep.problem.expressions` decides which text is allowed; this module holds the fixed table
behind it (constants, functions, operators, each a numpy ufunc) and walks a checked tree in
float64. A point is undefined wherever any intermediate is not finite, so domain errors
(``sqrt(-1)``, ``log(0)``, ``x % 0``) become nan instead of a misleading number.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "CONSTANTS",
    "FUNCTIONS",
    "INTEGER_FUNCTIONS",
    "BoolArray",
    "FloatArray",
    "Function",
    "evaluate_tree",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Function:
    """A function an expression may call: its argument count and the numpy ufunc it runs."""

    arity: int
    ufunc: np.ufunc


CONSTANTS: dict[str, float] = {"pi": float(np.pi), "e": float(np.e)}
FUNCTIONS: dict[str, Function] = {
    "sqrt": Function(1, np.sqrt),
    "exp": Function(1, np.exp),
    "log": Function(1, np.log),
    "sin": Function(1, np.sin),
    "cos": Function(1, np.cos),
    "tan": Function(1, np.tan),
    "arcsin": Function(1, np.arcsin),
    "arccos": Function(1, np.arccos),
    "arctan": Function(1, np.arctan),
    "tanh": Function(1, np.tanh),
    "abs": Function(1, np.abs),
    "min": Function(2, np.minimum),
    "max": Function(2, np.maximum),
}
# Functions that give an integer whenever their arguments are integers.
INTEGER_FUNCTIONS = frozenset({"abs", "min", "max"})

_BINARY: dict[type[ast.operator], np.ufunc] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.true_divide,
    ast.Pow: np.power,
    # Python's semantics: the result of % has the sign of the divisor, // rounds down.
    ast.Mod: np.mod,
    ast.FloorDiv: np.floor_divide,
}


def evaluate_tree(
    node: ast.expr, env: Mapping[str, FloatArray], defined: BoolArray
) -> FloatArray:
    """Evaluate one checked node; clears ``defined`` wherever any intermediate is not finite.

    Checking every intermediate (not just the result) catches undefined points whose final
    value looks harmless, e.g. ``1/(1/(a-b))`` at a == b, which numpy computes as 1.0. Call it
    under ``np.errstate(all="ignore")``; ``defined`` must have the broadcast shape of ``env``.
    """
    result: FloatArray
    if isinstance(node, ast.Constant):
        return np.asarray(node.value, dtype=np.float64)
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return np.asarray(CONSTANTS[node.id], dtype=np.float64)
        return env[node.id]
    if isinstance(node, ast.UnaryOp):
        operand = evaluate_tree(node.operand, env, defined)
        result = np.negative(operand) if isinstance(node.op, ast.USub) else operand
    elif isinstance(node, ast.BinOp):
        left = evaluate_tree(node.left, env, defined)
        right = evaluate_tree(node.right, env, defined)
        result = _BINARY[type(node.op)](left, right)
        if isinstance(node.op, ast.Mod | ast.FloorDiv):
            # numpy gives nan or inf here already; said outright, not left to numpy's choice.
            np.logical_and(defined, right != 0, out=defined)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        arguments = [evaluate_tree(argument, env, defined) for argument in node.args]
        result = FUNCTIONS[node.func.id].ufunc(*arguments)
    else:  # pragma: no cover - parse_expression has already refused everything else
        raise ValueError(f"cannot evaluate {type(node).__name__}: not a checked expression")
    np.logical_and(defined, np.isfinite(result), out=defined)
    return result
