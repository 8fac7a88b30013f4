"""The expression grammar: untrusted formulas over named inputs, parsed and checked, never run.

User expressions arrive from config files and ``--expr`` flags, so they are untrusted text. They
are parsed with Python's ``ast`` module and checked against a small whitelist: numbers, the
constants ``pi`` and ``e``, up to ``MAX_INPUTS`` named inputs, arithmetic and a fixed table of
numpy functions (`sweep.problem.functions`). They are evaluated by walking the tree with numpy
float64 arrays: nothing is ever passed to ``eval``/``exec`` or compiled to a code object, so an
expression cannot run code, only arithmetic. The text length and the node count are bounded
(the node count bounds the depth too), so checking and evaluating stay small and fast.
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
from sweep.problem.functions import (
    CONSTANTS,
    FUNCTIONS,
    INTEGER_FUNCTIONS,
    FloatArray,
    evaluate_tree,
)

__all__ = [
    "EXPRESSION_GRAMMAR",
    "MAX_EXPRESSION_CONSTANT",
    "MAX_EXPRESSION_LENGTH",
    "MAX_EXPRESSION_NODES",
    "MAX_INPUTS",
    "ParsedExpression",
    "parse_expression",
    "show",
]

MAX_EXPRESSION_LENGTH = 400
MAX_EXPRESSION_NODES = 100
MAX_EXPRESSION_CONSTANT = 1e6
MAX_INPUTS = 10


def _function_list(arity: int) -> str:
    return " ".join(name for name, function in FUNCTIONS.items() if function.arity == arity)


EXPRESSION_GRAMMAR = (
    f"allowed: numbers up to 1e6, pi, e, up to {MAX_INPUTS} inputs named like a, T or m1, "
    f"+ - * / // % **, unary minus, parentheses, {_function_list(1)} of one argument, "
    f"{_function_list(2)} of two"
)

# An input's name: ASCII only (Python would accept and NFKC-fold other letters, so two
# different-looking names could be one input), no leading _ (no dunders), short.
_INPUT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_INPUT_NAME_RULE = "an input is named by an ASCII letter, then up to 31 letters, digits or _"
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
_ALLOWED_BINARY = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.FloorDiv, ast.Mod)
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


def _spelled(node: ast.AST, text: str) -> str:
    """The node as the user wrote it (a Name's ``id`` is NFKC-folded, the text is not)."""
    segment = ast.get_source_segment(text, node)
    if segment is not None:
        return segment
    return node.id if isinstance(node, ast.Name) else "?"


def _describe(node: ast.AST, text: str) -> str:
    """Name a construct for a message, quoting its text unless it is the whole expression."""
    construct = _CONSTRUCT_NAMES.get(type(node), f"the construct {type(node).__name__}")
    where = ast.get_source_segment(text, node)
    if where is not None and where != text:
        return f"{construct} {show(where, 40)}"
    return construct


def _name_problem(node: ast.Name, text: str) -> str | None:
    spelled = _spelled(node, text)
    if spelled in FUNCTIONS:
        example = "x" if FUNCTIONS[spelled].arity == 1 else "x, y"
        return f"{spelled!r} is a function and must be called, as in {spelled}({example})"
    if spelled in CONSTANTS or (spelled == node.id and _INPUT_NAME.fullmatch(spelled)):
        return None
    return f"the name {show(spelled, 40)} is not allowed ({_INPUT_NAME_RULE})"


def _call_problem(node: ast.Call, text: str) -> str | None:
    """Why a call is refused: only a function of the table, by name, with its argument count."""
    func = node.func
    if isinstance(func, ast.Constant):
        return f"calling the constant {show(_spelled(func, text), 40)} is not allowed"
    if not isinstance(func, ast.Name):
        what = _describe(func, text)
        if isinstance(func, ast.Call):
            what = f"the result of {what}"
        return f"calling {what} is not allowed (only a listed function can be called, by name)"
    name = _spelled(func, text)
    if name in CONSTANTS:
        return f"calling the constant {name!r} is not allowed"
    if name not in FUNCTIONS:
        return f"unknown function {show(name, 40)}"
    call = show(_spelled(node, text), 40)
    for keyword in node.keywords:
        if keyword.arg is None:
            return f"unpacking (**) in {call} is not allowed"
        return f"the keyword argument {keyword.arg!r} in {call} is not allowed"
    if any(isinstance(argument, ast.Starred) for argument in node.args):
        return f"unpacking (*) in {call} is not allowed"
    arity = FUNCTIONS[name].arity
    if len(node.args) != arity:
        plural = "" if arity == 1 else "s"
        return f"{name} takes {arity} argument{plural}, got {len(node.args)}"
    return None


def _problem(node: ast.AST, text: str) -> str | None:
    """Describe why ``node`` is outside the grammar, or None when it is allowed."""
    if isinstance(node, ast.Name):
        return _name_problem(node, text)
    if isinstance(node, ast.Call):
        return _call_problem(node, text)
    if isinstance(node, ast.Constant):
        value = node.value
        segment = _spelled(node, text)
        if isinstance(value, bool):
            return f"the boolean {value!r} is not allowed"
        if isinstance(value, int | float):
            if math.isfinite(value) and abs(value) <= MAX_EXPRESSION_CONSTANT:
                return None
            return f"the constant {show(segment, 40)} (too large) is not allowed"
        if isinstance(value, complex):
            return f"the complex number {show(segment, 40)} is not allowed"
        if isinstance(value, str | bytes):
            return f"the string {show(segment, 40)} is not allowed"
        return f"the constant {show(segment, 40)} is not allowed"
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, _ALLOWED_BINARY):
            return None
        symbol = _BINARY_SYMBOLS.get(type(node.op), type(node.op).__name__)
        hint = " (write powers as **)" if isinstance(node.op, ast.BitXor) else ""
        return f"the operator {symbol!r}{hint} is not allowed"
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, _ALLOWED_UNARY):
            return None
        symbol = _UNARY_SYMBOLS.get(type(node.op), type(node.op).__name__)
        return f"the operator {symbol!r} is not allowed"
    if isinstance(node, _NEUTRAL_NODES):
        return None
    return f"{_describe(node, text)} is not allowed"


def _check(tree: ast.Expression, text: str) -> list[ast.Name]:
    """Refuse the first construct outside the grammar; return the Name nodes that are inputs.

    ``ast.walk`` is breadth first, so the outermost forbidden construct is the one reported. A
    call is checked as a whole, so the function's own Name is skipped afterwards.
    """
    callees: set[int] = set()
    inputs: list[ast.Name] = []
    for node in ast.walk(tree):
        if id(node) in callees:
            continue
        problem = _problem(node, text)
        if problem is not None:
            raise ExpressionError(f"expression {show(text)}: {problem}; {EXPRESSION_GRAMMAR}")
        if isinstance(node, ast.Call):
            callees.add(id(node.func))
        elif isinstance(node, ast.Name) and node.id not in CONSTANTS:
            inputs.append(node)
    return inputs


def _parse_tree(text: str) -> ast.Expression:
    """Parse to an AST only; the parser's own failures become one-line ExpressionErrors."""
    try:
        with warnings.catch_warnings():
            # Odd literals (e.g. invalid string escapes, ``2(a)``) warn at parse time; they are
            # refused by the whitelist anyway, so the warning would only be noise.
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
        return node.id not in CONSTANTS
    if isinstance(node, ast.UnaryOp):
        return _is_integer_valued(node.operand)
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Add | ast.Sub | ast.Mult | ast.FloorDiv | ast.Mod):
            return _is_integer_valued(node.left) and _is_integer_valued(node.right)
        if isinstance(node.op, ast.Pow):
            return _is_integer_valued(node.left) and _constant_exponent(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id in INTEGER_FUNCTIONS and all(map(_is_integer_valued, node.args))
    return False


@dataclass(frozen=True)
class ParsedExpression:
    """A user expression that passed the whitelist, ready to evaluate on numpy arrays.

    ``variables`` are the input names in order of first appearance in the text (``pi`` and
    ``e`` are constants, not inputs).
    """

    text: str
    tree: ast.Expression = field(repr=False, compare=False)
    variables: tuple[str, ...]
    integer_valued: bool

    @property
    def arity(self) -> int:
        """2 when ``b`` appears, else 1 (an expression of ``a`` alone is a unary operation)."""
        return 2 if "b" in self.variables else 1

    def evaluate_columns(self, columns: Mapping[str, npt.ArrayLike]) -> FloatArray:
        """Evaluate elementwise in float64, broadcasting the inputs against each other.

        Args:
            columns: A value or array for each of ``variables``; other keys are ignored.

        Returns:
            The values; nan wherever the expression is undefined (any intermediate is not
            finite, e.g. a division by 0 or ``sqrt`` of a negative) or any input is not finite.

        Raises:
            ValueError: a variable has no column (a programming error).
        """
        missing = [name for name in self.variables if name not in columns]
        if missing:
            raise ValueError(
                f"expression {show(self.text)} uses {', '.join(missing)}, "
                "but no column of that name was given"
            )
        return self._run({name: np.asarray(columns[name], np.float64) for name in self.variables})

    def evaluate(self, a: npt.ArrayLike, b: npt.ArrayLike | None = None) -> FloatArray:
        """Evaluate an expression over ``a`` and ``b`` elementwise in float64; undefined or
        non-finite points come out as nan (a given ``b`` counts even when unused).

        Raises:
            ValueError: the expression uses ``b`` but no ``b`` was given, or uses other inputs
                (evaluate those with `evaluate_columns`); a programming error either way.
        """
        if "b" in self.variables and b is None:
            raise ValueError(f"expression {show(self.text)} uses b, but no b was given")
        others = [name for name in self.variables if name not in ("a", "b")]
        if others:
            raise ValueError(
                f"expression {show(self.text)} uses {', '.join(others)}, not only a and b; "
                "evaluate it with evaluate_columns"
            )
        arrays = {"a": np.asarray(a, dtype=np.float64)}
        if b is not None:
            arrays["b"] = np.asarray(b, dtype=np.float64)
        return self._run(arrays)

    def _run(self, arrays: Mapping[str, FloatArray]) -> FloatArray:
        """Evaluate over ``arrays``, every one of which shapes the result and must be finite."""
        shape = np.broadcast_shapes(*(array.shape for array in arrays.values()))
        defined = np.ones(shape, dtype=np.bool_)
        # Inputs that are already nan/inf cannot give a meaningful result either.
        for array in arrays.values():
            np.logical_and(defined, np.isfinite(array), out=defined)
        with np.errstate(all="ignore"):
            values = evaluate_tree(self.tree.body, arrays, defined)
        return np.where(defined, values, np.nan).astype(np.float64, copy=False)


def parse_expression(text: str) -> ParsedExpression:
    """Parse user text into a ParsedExpression, refusing anything outside the grammar.

    Args:
        text: An expression such as ``"a*b+a"`` or ``"n*R*T/V"``.

    Returns:
        The checked expression (surrounding whitespace removed).

    Raises:
        ExpressionError: empty, too long, not valid syntax, outside the grammar (an unknown
            name or function, a bad call, a constant beyond ±1e6), more than
            ``MAX_EXPRESSION_NODES`` operands and operators, or more than ``MAX_INPUTS``
            inputs. Always one line.
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
            f"expression is empty; write one such as 'a*b+a' or 'n*R*T/V' ({EXPRESSION_GRAMMAR})"
        )
    if len(stripped) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(
            f"expression {show(stripped)} is {len(stripped)} characters long; "
            f"the limit is {MAX_EXPRESSION_LENGTH}"
        )
    tree = _parse_tree(stripped)
    names = _check(tree, stripped)
    count = sum(isinstance(node, ast.expr) for node in ast.walk(tree))
    if count > MAX_EXPRESSION_NODES:
        # This bounds the depth too, so evaluating (recursive) cannot run out of stack.
        raise ExpressionError(
            f"expression {show(stripped)} has {count} operands and operators; "
            f"the limit is {MAX_EXPRESSION_NODES}"
        )
    names.sort(key=lambda node: (node.lineno, node.col_offset))
    variables = tuple(dict.fromkeys(node.id for node in names))
    if len(variables) > MAX_INPUTS:
        raise ExpressionError(
            f"expression {show(stripped)} uses {len(variables)} inputs "
            f"({show(', '.join(variables))}); the limit is {MAX_INPUTS}"
        )
    return ParsedExpression(
        text=stripped,
        tree=tree,
        variables=variables,
        integer_valued=_is_integer_valued(tree.body),
    )
