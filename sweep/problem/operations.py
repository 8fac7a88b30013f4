"""Operations the sweep can learn: six built-ins and user expressions over ``a`` and ``b``.

An expression's text is checked and evaluated by `sweep.problem.expressions` (a whitelist over
Python's ``ast``; nothing is ever ``eval``'d).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from sweep.errors import ConfigError, ExpressionError
from sweep.problem.expressions import ParsedExpression, parse_expression
from sweep.problem.expressions import show as _show

__all__ = [
    "BUILTIN_OPERATIONS",
    "Operation",
    "is_operation_name",
    "make_operation",
    "parse_expr_flag",
    "resolve_operations",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

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
