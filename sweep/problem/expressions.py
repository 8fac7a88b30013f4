"""The expression grammar: user text over ``a`` and ``b``, parsed and checked, never run.

User expressions arrive from config files and ``--expr`` flags, so they are untrusted text. They
are parsed with Python's ``ast`` module, checked against a small whitelist and evaluated by
walking the tree with numpy float64 arrays: nothing is ever passed to ``eval``/``exec`` or
compiled to a code object, so an expression cannot run code, only arithmetic.
"""

from __future__ import annotations

import ast
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from sweep.errors import ExpressionError

__all__ = [
    "EXPRESSION_GRAMMAR",
    "MAX_EXPRESSION_CONSTANT",
    "MAX_EXPRESSION_LENGTH",
    "MAX_EXPRESSION_NODES",
    "ParsedExpression",
    "parse_expression",
    "show",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

MAX_EXPRESSION_LENGTH = 200
MAX_EXPRESSION_NODES = 100
MAX_EXPRESSION_CONSTANT = 1e6
EXPRESSION_GRAMMAR = (
    "allowed: numbers up to 1000000 in size, the variables a and b, + - * / **, unary minus "
    "and parentheses"
)

_VARIABLES = ("a", "b")
# C0 and C1 controls but the tab (newlines too: an expression is one line), DEL, and the
# Unicode bidirectional overrides.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")



def show(text: str, limit: int = 60) -> str:
    """Quote user text for a one-line message; repr escapes newlines, the cut keeps it short."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text)


def _one_line(text: str) -> str:
    return " ".join(text.split())


_BINARY_SYMBOLS: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Pow: "**",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
}
_UNARY_SYMBOLS: dict[type[ast.unaryop], str] = {
    ast.USub: "-",
    ast.UAdd: "+",
    ast.Not: "not",
    ast.Invert: "~",
}
_ALLOWED_BINARY: dict[type[ast.operator], np.ufunc] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.true_divide,
    ast.Pow: np.power,
}
_ALLOWED_UNARY = (ast.USub, ast.UAdd)
# Nodes that carry no behaviour of their own; their parents are checked instead.
_NEUTRAL_NODES = (ast.Expression, ast.Load, ast.operator, ast.unaryop)
_CONSTRUCT_NAMES: dict[type[ast.AST], str] = {
    ast.Call: "a function call",
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripting",
    ast.Slice: "a slice",
    ast.Compare: "a comparison",
    ast.BoolOp: "and/or",
    ast.IfExp: "a conditional (if/else)",
    ast.Lambda: "a lambda",
    ast.List: "a list",
    ast.Tuple: "a tuple",
    ast.Set: "a set",
    ast.Dict: "a dict",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a generator",
    ast.JoinedStr: "an f-string",
    ast.FormattedValue: "an f-string",
    ast.NamedExpr: "an assignment (:=)",
    ast.Starred: "unpacking (*)",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}


def _problem(node: ast.AST, text: str) -> str | None:
    """Describe why ``node`` is outside the grammar, or None when it is allowed."""
    if isinstance(node, ast.Name):
        if node.id in _VARIABLES:
            return None
        return f"the name {show(node.id, 40)}"
    if isinstance(node, ast.Constant):
        value = node.value
        segment = ast.get_source_segment(text, node) or "?"
        if isinstance(value, bool):
            return f"the boolean {value!r}"
        if isinstance(value, int | float):
            if math.isfinite(value) and abs(value) <= MAX_EXPRESSION_CONSTANT:
                return None
            return f"the constant {show(segment, 40)} (too large)"
        if isinstance(value, complex):
            return f"the complex number {show(segment, 40)}"
        if isinstance(value, str | bytes):
            return f"the string {show(segment, 40)}"
        return f"the constant {show(segment, 40)}"
    if isinstance(node, ast.BinOp):
        if type(node.op) in _ALLOWED_BINARY:
            return None
        symbol = _BINARY_SYMBOLS.get(type(node.op), type(node.op).__name__)
        hint = " (write powers as **)" if isinstance(node.op, ast.BitXor) else ""
        return f"the operator {symbol!r}{hint}"
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, _ALLOWED_UNARY):
            return None
        return f"the operator {_UNARY_SYMBOLS.get(type(node.op), type(node.op).__name__)!r}"
    if isinstance(node, _NEUTRAL_NODES):
        return None
    construct = _CONSTRUCT_NAMES.get(type(node), f"the construct {type(node).__name__}")
    where = ast.get_source_segment(text, node)
    if where is not None and where != text:
        return f"{construct} {show(where, 40)}"
    return construct


def _parse_tree(text: str) -> ast.Expression:
    """Parse to an AST only; the parser's own failures become one-line ExpressionErrors."""
    try:
        with warnings.catch_warnings():
            # Odd literals (e.g. invalid string escapes) warn at parse time; they are refused
            # by the whitelist anyway, so the warning would only be noise.
            warnings.simplefilter("ignore")
            return ast.parse(text, mode="eval")
    except SyntaxError as error:
        where = f" at column {error.offset}" if error.offset else ""
        raise ExpressionError(
            f"expression {show(text)} is not valid syntax ({_one_line(error.msg)}{where}); "
            f"{EXPRESSION_GRAMMAR}"
        ) from None
    except (ValueError, MemoryError, RecursionError, OverflowError) as error:
        # Null bytes, lone surrogates and pathological nesting end up here.
        raise ExpressionError(
            f"expression {show(text)} cannot be parsed ({_one_line(str(error))}); "
            f"{EXPRESSION_GRAMMAR}"
        ) from None


def _constant_exponent(node: ast.expr) -> bool:
    """True for a literal non-negative whole exponent, the only power that keeps integers."""
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and node.value >= 0
        and float(node.value).is_integer()
    )


def _is_integer_valued(node: ast.expr) -> bool:
    """Whether integer inputs always give an integer, judged from the syntax (conservatively)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, int | float) and float(node.value).is_integer()
    if isinstance(node, ast.Name):
        return True
    if isinstance(node, ast.UnaryOp):
        return _is_integer_valued(node.operand)
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Add | ast.Sub | ast.Mult):
            return _is_integer_valued(node.left) and _is_integer_valued(node.right)
        if isinstance(node.op, ast.Pow):
            return _is_integer_valued(node.left) and _constant_exponent(node.right)
    return False


def _evaluate_node(node: ast.expr, env: Mapping[str, FloatArray], defined: BoolArray) -> FloatArray:
    """Evaluate one checked node; clears ``defined`` wherever any intermediate is not finite.

    Checking every intermediate (not just the result) catches undefined points whose final
    value looks harmless, e.g. ``1/(1/(a-b))`` at a == b, which numpy computes as 1.0.
    """
    result: FloatArray
    if isinstance(node, ast.Constant):
        return np.asarray(node.value, dtype=np.float64)
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate_node(node.operand, env, defined)
        result = np.negative(operand) if isinstance(node.op, ast.USub) else operand
    elif isinstance(node, ast.BinOp):
        left = _evaluate_node(node.left, env, defined)
        right = _evaluate_node(node.right, env, defined)
        result = _ALLOWED_BINARY[type(node.op)](left, right)
    else:  # pragma: no cover - parse_expression has already refused everything else
        raise ExpressionError(f"cannot evaluate {type(node).__name__}; {EXPRESSION_GRAMMAR}")
    np.logical_and(defined, np.isfinite(result), out=defined)
    return result


@dataclass(frozen=True)
class ParsedExpression:
    """A user expression that passed the whitelist, ready to evaluate on numpy arrays."""

    text: str
    tree: ast.Expression = field(repr=False, compare=False)
    variables: tuple[str, ...]
    integer_valued: bool

    @property
    def arity(self) -> int:
        """2 when ``b`` appears, else 1 (an expression of ``a`` alone is a unary operation)."""
        return 2 if "b" in self.variables else 1

    def evaluate(self, a: npt.ArrayLike, b: npt.ArrayLike | None = None) -> FloatArray:
        """Evaluate elementwise in float64; undefined or non-finite points come out as nan.

        Raises:
            ValueError: the expression uses ``b`` but no ``b`` was given (a programming error).
        """
        if "b" in self.variables and b is None:
            raise ValueError(f"expression {show(self.text)} uses b, but no b was given")
        fa = np.asarray(a, dtype=np.float64)
        fb = fa if b is None else np.asarray(b, dtype=np.float64)
        shape = np.broadcast_shapes(fa.shape, fb.shape)
        defined = np.ones(shape, dtype=np.bool_)
        # Inputs that are already nan/inf cannot give a meaningful result either.
        np.logical_and(defined, np.isfinite(fa), out=defined)
        if b is not None:
            np.logical_and(defined, np.isfinite(fb), out=defined)
        with np.errstate(all="ignore"):
            values = _evaluate_node(self.tree.body, {"a": fa, "b": fb}, defined)
        return np.where(defined, values, np.nan).astype(np.float64, copy=False)


def parse_expression(text: str) -> ParsedExpression:
    """Parse user text into a ParsedExpression, refusing anything but plain arithmetic.

    Args:
        text: An expression over ``a`` and ``b`` such as ``"a*b+a"``.

    Returns:
        The checked expression (surrounding whitespace removed).

    Raises:
        ExpressionError: empty, too long, not valid syntax, outside the grammar, a constant
            beyond ±1e6, or more than ``MAX_EXPRESSION_NODES`` operands and operators.
    """
    if not isinstance(text, str):
        raise ExpressionError(
            f"expression must be text, got {type(text).__name__}; {EXPRESSION_GRAMMAR}"
        )
    stripped = text.strip()
    control = _CONTROL.search(stripped)
    if control is not None:
        # Stored expressions are shown in tables, notes and errors: no terminal escapes.
        raise ExpressionError(
            f"expression {show(stripped)} contains the control character "
            f"{control.group()!r} at column {control.start() + 1}; {EXPRESSION_GRAMMAR}"
        )
    if not stripped:
        raise ExpressionError(
            f"expression is empty; write one over a and b such as 'a*b+a' ({EXPRESSION_GRAMMAR})"
        )
    if len(stripped) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(
            f"expression {show(stripped)} is {len(stripped)} characters long; "
            f"the limit is {MAX_EXPRESSION_LENGTH}"
        )
    tree = _parse_tree(stripped)
    # ast.walk is breadth first, so the outermost forbidden construct is the one reported.
    for node in ast.walk(tree):
        problem = _problem(node, stripped)
        if problem is not None:
            raise ExpressionError(
                f"expression {show(stripped)}: {problem} is not allowed; {EXPRESSION_GRAMMAR}"
            )
    nodes = [node for node in ast.walk(tree) if isinstance(node, ast.expr)]
    if len(nodes) > MAX_EXPRESSION_NODES:
        raise ExpressionError(
            f"expression {show(stripped)} has {len(nodes)} operands and operators; "
            f"the limit is {MAX_EXPRESSION_NODES}"
        )
    names = {node.id for node in nodes if isinstance(node, ast.Name)}
    return ParsedExpression(
        text=stripped,
        tree=tree,
        variables=tuple(name for name in _VARIABLES if name in names),
        integer_valued=_is_integer_valued(tree.body),
    )
