"""Operations the sweep can learn: six built-ins and user expressions over ``a`` and ``b``.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from sweep.errors import ConfigError, ExpressionError

__all__ = [
    "BUILTIN_OPERATIONS",
    "EXPRESSION_GRAMMAR",
    "MAX_EXPRESSION_CONSTANT",
    "MAX_EXPRESSION_LENGTH",
    "MAX_EXPRESSION_NODES",
    "Operation",
    "ParsedExpression",
    "is_operation_name",
    "make_operation",
    "parse_expr_flag",
    "parse_expression",
    "resolve_operations",
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
_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")
# "all" selects every operation on the command line, so no expression may be called that.
_RESERVED_NAMES = frozenset({"all"})
_EXPR_FLAG_EXAMPLE = "--expr 'mix=a*b+a'"


# --------------------------------------------------------------------------------------------
# Built-ins


@dataclass(frozen=True)
class _Builtin:
    arity: int
    integer_valued: bool
    description: str


_BUILTINS: dict[str, _Builtin] = {
    "add": _Builtin(2, True, "a + b"),
    "subtract": _Builtin(2, True, "a - b"),
    "multiply": _Builtin(2, True, "a * b"),
    "divide": _Builtin(2, False, "a / b where b != 0"),
    "square": _Builtin(1, True, "a ** 2"),
    "sqrt": _Builtin(1, False, "sqrt(a) where a >= 0"),
}

_BINARY_BUILTINS: dict[str, Callable[[FloatArray, FloatArray], FloatArray]] = {
    "add": np.add,
    "subtract": np.subtract,
    "multiply": np.multiply,
    "divide": np.true_divide,
}
_UNARY_BUILTINS: dict[str, Callable[[FloatArray], FloatArray]] = {
    "square": np.square,
    "sqrt": np.sqrt,
}


def _builtin_list() -> str:
    return ", ".join(_BUILTINS)


# --------------------------------------------------------------------------------------------
# Expressions


def _show(text: str, limit: int = 60) -> str:
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
        return f"the name {_show(node.id, 40)}"
    if isinstance(node, ast.Constant):
        value = node.value
        segment = ast.get_source_segment(text, node) or "?"
        if isinstance(value, bool):
            return f"the boolean {value!r}"
        if isinstance(value, int | float):
            if math.isfinite(value) and abs(value) <= MAX_EXPRESSION_CONSTANT:
                return None
            return f"the constant {_show(segment, 40)} (too large)"
        if isinstance(value, complex):
            return f"the complex number {_show(segment, 40)}"
        if isinstance(value, str | bytes):
            return f"the string {_show(segment, 40)}"
        return f"the constant {_show(segment, 40)}"
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
        return f"{construct} {_show(where, 40)}"
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
            f"expression {_show(text)} is not valid syntax ({_one_line(error.msg)}{where}); "
            f"{EXPRESSION_GRAMMAR}"
        ) from None
    except (ValueError, MemoryError, RecursionError, OverflowError) as error:
        # Null bytes, lone surrogates and pathological nesting end up here.
        raise ExpressionError(
            f"expression {_show(text)} cannot be parsed ({_one_line(str(error))}); "
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
            raise ValueError(f"expression {_show(self.text)} uses b, but no b was given")
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
    if not stripped:
        raise ExpressionError(
            f"expression is empty; write one over a and b such as 'a*b+a' ({EXPRESSION_GRAMMAR})"
        )
    if len(stripped) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(
            f"expression {_show(stripped)} is {len(stripped)} characters long; "
            f"the limit is {MAX_EXPRESSION_LENGTH}"
        )
    tree = _parse_tree(stripped)
    # ast.walk is breadth first, so the outermost forbidden construct is the one reported.
    for node in ast.walk(tree):
        problem = _problem(node, stripped)
        if problem is not None:
            raise ExpressionError(
                f"expression {_show(stripped)}: {problem} is not allowed; {EXPRESSION_GRAMMAR}"
            )
    nodes = [node for node in ast.walk(tree) if isinstance(node, ast.expr)]
    if len(nodes) > MAX_EXPRESSION_NODES:
        raise ExpressionError(
            f"expression {_show(stripped)} has {len(nodes)} operands and operators; "
            f"the limit is {MAX_EXPRESSION_NODES}"
        )
    names = {node.id for node in nodes if isinstance(node, ast.Name)}
    return ParsedExpression(
        text=stripped,
        tree=tree,
        variables=tuple(name for name in _VARIABLES if name in names),
        integer_valued=_is_integer_valued(tree.body),
    )


# --------------------------------------------------------------------------------------------
# Operations


def is_operation_name(name: object) -> bool:
    """Whether `name` could name an operation (a built-in, or a valid expression name)."""
    return isinstance(name, str) and _NAME_PATTERN.fullmatch(name) is not None  # built-ins too


def _check_name(name: object) -> str:
    """Refuse names that could not be used on the command line or would hide a built-in."""
    if not isinstance(name, str):
        raise ConfigError(f"operation name must be text, got {name!r}")
    if name in _BUILTINS:
        raise ConfigError(
            f"operation name {name!r} is a built-in operation; give your expression another "
            f"name (built-ins: {_builtin_list()})"
        )
    if name in _RESERVED_NAMES:
        raise ConfigError(
            f"operation name {name!r} is reserved (it selects every operation); "
            "give your expression another name"
        )
    if not _NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"operation name {_show(name)} is not allowed; use 1 to 32 characters: a lowercase "
            "letter, then lowercase letters, digits or _"
        )
    return name


def _parse_for(name: str, expression: str) -> ParsedExpression:
    """Parse an operation's expression, naming the operation in any error."""
    try:
        parsed = parse_expression(expression)
    except ExpressionError as error:
        raise ExpressionError(f"operation {name!r}: {error}") from None
    if not parsed.variables:
        raise ExpressionError(
            f"operation {name!r}: expression {_show(parsed.text)} uses neither a nor b; "
            "an operation must depend on at least one input"
        )
    return parsed


@dataclass(frozen=True)
class Operation:
    """One arithmetic function the sweep trains networks to compute.

    Construction checks the fields against each other (a built-in must match the registry, an
    expression must parse to the stored arity and integer flag), so an edited campaign config
    cannot describe an operation that does not exist.
    """

    name: str
    arity: int
    integer_valued: bool
    expression: str | None
    description: str
    _parsed: ParsedExpression | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if type(self.arity) is not int or type(self.integer_valued) is not bool:
            raise ConfigError(
                f"operation {self.name!r} needs an int arity and a bool integer_valued, got "
                f"arity={self.arity!r}, integer_valued={self.integer_valued!r}"
            )
        if not isinstance(self.description, str):
            raise ConfigError(
                f"description of operation {self.name!r} must be text, got {self.description!r}"
            )
        if self.expression is None:
            builtin = _BUILTINS.get(self.name)
            if builtin is None:
                raise ConfigError(
                    f"unknown built-in operation {self.name!r}; choose from {_builtin_list()} "
                    "or give an expression"
                )
            actual: tuple[int, bool] = (builtin.arity, builtin.integer_valued)
        else:
            parsed = _parse_for(_check_name(self.name), self.expression)
            object.__setattr__(self, "_parsed", parsed)
            actual = (parsed.arity, parsed.integer_valued)
        if (self.arity, self.integer_valued) != actual:
            raise ConfigError(
                f"operation {self.name!r} is stated as arity={self.arity!r}, "
                f"integer_valued={self.integer_valued!r}, but its definition gives "
                f"arity={actual[0]}, integer_valued={actual[1]}"
            )

    def _inputs(
        self, a: npt.ArrayLike, b: npt.ArrayLike | None
    ) -> tuple[FloatArray, FloatArray | None]:
        if self.arity == 2 and b is None:
            raise ValueError(f"operation {self.name!r} takes two inputs (a and b); b is missing")
        if self.arity == 1 and b is not None:
            raise ValueError(f"operation {self.name!r} takes one input (a); b was given")
        fa = np.asarray(a, dtype=np.float64)
        return fa, None if b is None else np.asarray(b, dtype=np.float64)

    def compute(self, a: npt.ArrayLike, b: npt.ArrayLike | None = None) -> FloatArray:
        """Compute the operation elementwise in float64.

        Never raises for numeric input of the right arity: results outside the domain come out
        as nan or inf (for expressions always nan) without numpy warnings, so callers can
        filter with ``valid`` instead of guarding every call.

        Raises:
            ValueError: ``b`` missing for a binary operation or given to a unary one.
        """
        fa, fb = self._inputs(a, b)
        if self._parsed is not None:
            return self._parsed.evaluate(fa, fb)
        with np.errstate(all="ignore"):
            if fb is None:
                result = _UNARY_BUILTINS[self.name](fa)
            else:
                result = _BINARY_BUILTINS[self.name](fa, fb)
        return np.asarray(result, dtype=np.float64)

    def valid(self, a: npt.ArrayLike, b: npt.ArrayLike | None = None) -> BoolArray:
        """Mask of inputs in the operation's domain whose result is finite.

        Divide excludes b == 0, sqrt excludes a < 0; an expression excludes every point where
        any step is undefined or overflows (division by zero, 0 ** negative,
        negative ** non-integer).
        """
        fa, fb = self._inputs(a, b)
        mask = np.isfinite(self.compute(fa, fb))
        np.logical_and(mask, np.isfinite(fa), out=mask)
        if fb is not None:
            np.logical_and(mask, np.isfinite(fb), out=mask)
        if self.expression is None and self.name == "divide" and fb is not None:
            np.logical_and(mask, fb != 0, out=mask)
        if self.expression is None and self.name == "sqrt":
            np.logical_and(mask, fa >= 0, out=mask)
        return mask

    def to_dict(self) -> dict[str, Any]:
        """Plain fields for a campaign config (JSON/TOML friendly)."""
        return {
            "name": self.name,
            "arity": self.arity,
            "integer_valued": self.integer_valued,
            "expression": self.expression,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Operation:
        """Rebuild an operation stored with ``to_dict``, re-checking it.

        Only ``name`` is required (plus ``expression`` for user expressions); ``arity`` and
        ``integer_valued`` are derived, and when present must agree with the definition.

        Raises:
            ConfigError: unknown fields, wrong types, or fields that contradict the definition.
        """
        allowed = ("name", "arity", "integer_valued", "expression", "description")
        unknown = sorted(str(key) for key in data if key not in allowed)
        if unknown:
            raise ConfigError(
                f"unknown operation field {unknown[0]!r}; allowed: {', '.join(allowed)}"
            )
        name = data.get("name")
        if not isinstance(name, str):
            raise ConfigError(f"operation name must be text, got {name!r}")
        expression = data.get("expression")
        if expression is None:
            if name not in BUILTIN_OPERATIONS:
                raise ConfigError(
                    f"unknown operation {name!r} stored without an expression; built-ins are "
                    f"{_builtin_list()}"
                )
            operation = BUILTIN_OPERATIONS[name]
        elif isinstance(expression, str):
            operation = make_operation(name, expression)
        else:
            raise ConfigError(f"expression of operation {name!r} must be text, got {expression!r}")
        for key, kind in (("arity", int), ("integer_valued", bool)):
            if key not in data:
                continue
            stored = data[key]
            if type(stored) is not kind or stored != getattr(operation, key):
                raise ConfigError(
                    f"operation {name!r} is stored with {key}={stored!r}, but its definition "
                    f"gives {key}={getattr(operation, key)!r}; fix or remove the field"
                )
        description = data.get("description", operation.description)
        if description != operation.description:
            operation = replace(operation, description=description)
        return operation


BUILTIN_OPERATIONS: dict[str, Operation] = {
    name: Operation(
        name=name,
        arity=builtin.arity,
        integer_valued=builtin.integer_valued,
        expression=None,
        description=builtin.description,
    )
    for name, builtin in _BUILTINS.items()
}


def make_operation(name: str, expression: str) -> Operation:
    """Build a user-defined operation from its name and expression text.

    Args:
        name: ``^[a-z][a-z0-9_]{0,31}$``, not a built-in and not ``all``.
        expression: Text in the restricted grammar using ``a``, ``b`` or both.

    Raises:
        ConfigError: the name is malformed, a built-in or reserved.
        ExpressionError: the expression is refused by ``parse_expression`` or uses no input.
    """
    parsed = _parse_for(_check_name(name), expression)
    return Operation(
        name=name,
        arity=parsed.arity,
        integer_valued=parsed.integer_valued,
        expression=parsed.text,
        description=parsed.text,
    )


def parse_expr_flag(text: str) -> tuple[str, str]:
    """Split the CLI form ``NAME=EXPRESSION`` at the first '=' (the grammar has no '=').

    Raises:
        ConfigError: no '=', an empty or malformed name, or an empty expression.
    """
    name, separator, expression = text.partition("=")
    name, expression = name.strip(), expression.strip()
    if not separator:
        raise ConfigError(
            f"--expr {_show(text)} has no '='; write NAME=EXPRESSION, e.g. {_EXPR_FLAG_EXAMPLE}"
        )
    if not name:
        raise ConfigError(
            f"--expr {_show(text)} has no name before '='; write NAME=EXPRESSION, "
            f"e.g. {_EXPR_FLAG_EXAMPLE}"
        )
    if not expression:
        raise ConfigError(
            f"--expr {_show(text)} has no expression after '='; write NAME=EXPRESSION, "
            f"e.g. {_EXPR_FLAG_EXAMPLE}"
        )
    return _check_name(name), expression


def resolve_operations(names: Sequence[str], expressions: Mapping[str, str]) -> list[Operation]:
    """Turn the operations a user named, plus the expressions they defined, into a list.

    ``names`` may hold ``"all"`` (the six built-ins, then every defined expression), built-in
    names and names defined in ``expressions``. Every defined expression is swept even if it is
    not named: defining one with ``--expr`` means you want it swept. Duplicates are dropped and
    first-mention order is kept.

    Raises:
        ConfigError: an unknown name, a bad expression name, or nothing selected at all.
        ExpressionError: a defined expression is refused.
    """
    defined = {name: make_operation(name, text) for name, text in expressions.items()}
    selected: dict[str, Operation] = {}
    for raw in names:
        name = raw.strip() if isinstance(raw, str) else raw
        if name == "all":
            for operation in (*BUILTIN_OPERATIONS.values(), *defined.values()):
                selected.setdefault(operation.name, operation)
        elif name in BUILTIN_OPERATIONS:
            selected.setdefault(name, BUILTIN_OPERATIONS[name])
        elif name in defined:
            selected.setdefault(name, defined[name])
        else:
            known = ", ".join((*BUILTIN_OPERATIONS, *defined))
            raise ConfigError(
                f"unknown operation {name!r}; choose from {known} or define it with "
                "--expr NAME=EXPRESSION"
            )
    for operation in defined.values():
        selected.setdefault(operation.name, operation)
    if not selected:
        raise ConfigError(
            f"no operation chosen; name one of all, {_builtin_list()} or define one with "
            "--expr NAME=EXPRESSION"
        )
    return list(selected.values())
