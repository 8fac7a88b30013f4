"""Operations the sweep can learn: six built-ins, user expressions over named inputs, and
tables of measured data with no formula.

An expression's text is checked and evaluated by `sweep.problem.expressions` (a whitelist over
Python's ``ast``; nothing is ever ``eval``'d). Inputs come in a fixed order, the order a model
takes its columns in: ``a`` then ``b`` for expressions over those two (as always), else the
order of first appearance in the expression, and a table's column order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from sweep.errors import ConfigError, ExpressionError
from sweep.problem.expressions import MAX_INPUTS, ParsedExpression, parse_expression
from sweep.problem.expressions import show as _show
from sweep.problem.inputs import InputRange

__all__ = [
    "BUILTIN_OPERATIONS",
    "Operation",
    "check_new_name",
    "expression_inputs",
    "is_operation_name",
    "make_operation",
    "make_table_operation",
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


def check_new_name(name: object) -> str:
    """The name of an operation a user defines (an expression or a table): refused when it
    could not be used on the command line or would hide a built-in."""
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
            f"operation {name!r}: expression {_show(parsed.text)} uses no input; "
            "an operation must depend on at least one input"
        )
    return parsed


def expression_inputs(parsed: ParsedExpression) -> tuple[str, ...]:
    """The order a model takes an expression's inputs in.

    Over ``a`` and ``b`` alone it is today's: ``(a,)`` or ``(a, b)`` (an expression of ``b``
    alone still takes ``a`` first, as it always did); otherwise first appearance in the text.
    """
    if set(parsed.variables) <= {"a", "b"}:
        return ("a", "b") if "b" in parsed.variables else ("a",)
    return parsed.variables


def _builtin_inputs(arity: int) -> tuple[str, ...]:
    return ("a", "b")[:arity]


@dataclass(frozen=True)
class Operation:
    """One function the sweep trains networks to compute.

    Construction checks the fields against each other (a built-in must match the registry, an
    expression must parse to the stated inputs), so an edited campaign config cannot describe
    an operation that does not exist. `integer_valued` is decided from the operation's data
    (`sweep.problem.sampling.decide_integer_valued`); built on its own, an operation carries
    its definition's (conservative) flag until a campaign resolves it over its ranges.
    `ranges` holds one entry per input once resolved; empty means today's default, integers
    in ``[data] low/high``. A table's operation (`table`) has no formula: only its rows.
    """

    name: str
    arity: int
    integer_valued: bool
    expression: str | None
    description: str
    inputs: tuple[str, ...] = ()
    ranges: tuple[InputRange, ...] = ()
    table: bool = False
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
        if self.table:
            if self.expression is not None:
                raise ConfigError(f"operation {self.name!r} cannot have a table and a formula")
            check_new_name(self.name)
            expected = tuple(self.inputs)
        elif self.expression is None:
            builtin = _BUILTINS.get(self.name)
            if builtin is None:
                raise ConfigError(
                    f"unknown built-in operation {self.name!r}; choose from {_builtin_list()} "
                    "or give an expression"
                )
            expected = _builtin_inputs(builtin.arity)
        else:
            parsed = _parse_for(check_new_name(self.name), self.expression)
            object.__setattr__(self, "_parsed", parsed)
            expected = expression_inputs(parsed)
        inputs = tuple(self.inputs) or expected
        if sorted(inputs) != sorted(expected) or len(set(inputs)) != len(inputs):
            raise ConfigError(
                f"operation {self.name!r} is stated with inputs {', '.join(inputs) or 'none'}, "
                f"but its definition uses {', '.join(expected) or 'none'}"
            )
        if not 1 <= len(inputs) <= MAX_INPUTS:
            raise ConfigError(
                f"operation {self.name!r} has {len(inputs)} inputs; it needs 1 to {MAX_INPUTS}"
            )
        object.__setattr__(self, "inputs", inputs)
        if self.arity != len(inputs):
            raise ConfigError(
                f"operation {self.name!r} is stated as arity={self.arity!r}, but its "
                f"definition takes {len(inputs)} input(s) ({', '.join(inputs)})"
            )
        if self.ranges and tuple(r.name for r in self.ranges) != inputs:
            raise ConfigError(
                f"operation {self.name!r}: ranges are given for "
                f"{', '.join(r.name for r in self.ranges)}, not its inputs {', '.join(inputs)}"
            )

    @property
    def kind(self) -> str:
        """``builtin``, ``expression`` or ``table``."""
        if self.table:
            return "table"
        return "builtin" if self.expression is None else "expression"

    def _columns(self, columns: tuple[npt.ArrayLike | None, ...]) -> list[FloatArray]:
        given = list(columns)
        while given and given[-1] is None:  # compute(a, None): the unary call of old
            given.pop()
        if len(given) != self.arity or any(c is None for c in given):
            raise ValueError(
                f"operation {self.name!r} takes {self.arity} input(s) "
                f"({', '.join(self.inputs)}); {len(given)} given"
            )
        return [np.asarray(c, dtype=np.float64) for c in given]

    def compute(self, *columns: npt.ArrayLike | None) -> FloatArray:
        """Compute the operation elementwise in float64, one array per input in `inputs` order.

        Never raises for numeric input of the right arity: results outside the domain come out
        as nan or inf (for expressions always nan) without numpy warnings, so callers can
        filter with ``valid`` instead of guarding every call.

        Raises:
            ValueError: the wrong number of inputs, or a table's operation (no formula).
        """
        if self.table:
            raise ValueError(f"operation {self.name!r} is a table: it has no formula to compute")
        values = self._columns(columns)
        if self._parsed is not None:
            return self._parsed.evaluate_columns(dict(zip(self.inputs, values, strict=True)))
        with np.errstate(all="ignore"):
            if len(values) == 1:
                result = _UNARY_BUILTINS[self.name](values[0])
            else:
                result = _BINARY_BUILTINS[self.name](values[0], values[1])
        return np.asarray(result, dtype=np.float64)

    def compute_rows(self, x: npt.ArrayLike) -> FloatArray:
        """`compute` on rows: ``x`` of shape (n, arity), inputs in `inputs` order."""
        rows = np.asarray(x, dtype=np.float64)
        return self.compute(*[rows[:, k] for k in range(self.arity)])

    def valid(self, *columns: npt.ArrayLike | None) -> BoolArray:
        """Mask of inputs in the operation's domain whose result is finite.

        Divide excludes b == 0, sqrt excludes a < 0; an expression excludes every point where
        any step is undefined or overflows (division by zero, 0 ** negative,
        negative ** non-integer, log of 0, ...).
        """
        values = self._columns(columns)
        mask = np.isfinite(self.compute(*values))
        for value in values:
            np.logical_and(mask, np.isfinite(value), out=mask)
        if self.expression is None and self.name == "divide":
            np.logical_and(mask, values[1] != 0, out=mask)
        if self.expression is None and self.name == "sqrt":
            np.logical_and(mask, values[0] >= 0, out=mask)
        return mask

    def valid_rows(self, x: npt.ArrayLike) -> BoolArray:
        rows = np.asarray(x, dtype=np.float64)
        return self.valid(*[rows[:, k] for k in range(self.arity)])

    def to_dict(self) -> dict[str, Any]:
        """Plain fields for a campaign config (JSON/TOML friendly)."""
        return {
            "name": self.name,
            "arity": self.arity,
            "integer_valued": self.integer_valued,
            "expression": self.expression,
            "description": self.description,
            "inputs": list(self.inputs),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Operation:
        """Rebuild a built-in or expression stored with ``to_dict``, re-checking it.

        Only ``name`` is required (plus ``expression`` for user expressions); ``arity`` and
        ``inputs`` are derived, and when present must agree with the definition.

        Raises:
            ConfigError: unknown fields, wrong types, or fields that contradict the definition.
        """
        allowed = ("name", "arity", "integer_valued", "expression", "description", "inputs")
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
            if type(stored) is not kind or (key == "arity" and stored != operation.arity):
                raise ConfigError(
                    f"operation {name!r} is stored with {key}={stored!r}, but its definition "
                    f"gives {key}={getattr(operation, key)!r}; fix or remove the field"
                )
            if key == "integer_valued":
                operation = replace(operation, integer_valued=bool(stored))
        if "inputs" in data:
            stored_inputs = data["inputs"]
            if not isinstance(stored_inputs, list | tuple) or not all(
                isinstance(i, str) for i in stored_inputs
            ):
                raise ConfigError(
                    f"operation {name!r} is stored with inputs={stored_inputs!r}; a list of names"
                )
            operation = replace(operation, inputs=tuple(stored_inputs))
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
    parsed = _parse_for(check_new_name(name), expression)
    inputs = expression_inputs(parsed)
    return Operation(
        name=name,
        arity=len(inputs),
        integer_valued=parsed.integer_valued,
        expression=parsed.text,
        description=parsed.text,
        inputs=inputs,
    )


def make_table_operation(
    name: str, inputs: Sequence[str], target: str, integer_valued: bool
) -> Operation:
    """The operation a table defines: its inputs are the table's input columns, in order.

    Raises:
        ConfigError: the name is malformed, a built-in or reserved, or there are no (or over
            `MAX_INPUTS`) inputs.
    """
    return Operation(
        name=check_new_name(name),
        arity=len(inputs),
        integer_valued=integer_valued,
        expression=None,
        description=f"{target} from a table of {', '.join(inputs)}",
        inputs=tuple(inputs),
        table=True,
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
    return check_new_name(name), expression


def resolve_operations(
    names: Sequence[str],
    expressions: Mapping[str, str],
    tables: Mapping[str, Operation] | None = None,
) -> list[Operation]:
    """Turn the operations a user named, plus the expressions and tables they defined, into a
    list.

    ``names`` may hold ``"all"`` (the six built-ins, then every defined expression and table),
    built-in names and defined names. Every defined expression or table is swept even if it
    is not named: defining one means you want it swept. Duplicates are dropped and
    first-mention order is kept.

    Raises:
        ConfigError: an unknown name, a bad expression name, or nothing selected at all.
        ExpressionError: a defined expression is refused.
    """
    defined = {name: make_operation(name, text) for name, text in expressions.items()}
    for name, operation in (tables or {}).items():
        if name in defined:
            raise ConfigError(
                f"operation {name!r} is defined twice, by an expression and by a table; "
                "rename one"
            )
        defined[name] = operation
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
                "--expr NAME=EXPRESSION or --data NAME=FILE"
            )
    for operation in defined.values():
        selected.setdefault(operation.name, operation)
    if not selected:
        raise ConfigError(
            f"no operation chosen; name one of all, {_builtin_list()} or define one with "
            "--expr NAME=EXPRESSION"
        )
    return list(selected.values())
