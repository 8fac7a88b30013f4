"""`sweep predict`: run the best model on raw inputs, one row or a CSV file of them.

    sweep predict add 2 3                          # in the operation's input order
    sweep predict gas n=1.5 R=8.3 T=300 V=2        # by name, any order, every input once
    sweep predict gas --input rows.csv             # a header of names maps columns by name

An answer is rounded only where the operation is integer-valued and every input of its row is
a whole number; an answer beyond 2**53 comes with a warning on stderr (float64 no longer holds
every whole number there).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from sweep.cli.arguments import add_common_arguments, add_output_format, number
from sweep.cli.commands.base import Command
from sweep.cli.runtime import training_runtime
from sweep.cli.text import say
from sweep.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from storage import Database
    from sweep.problem.operations import Operation
    from sweep.publishing.models import Predictions

__all__ = ["PredictCommand"]

# NAME=VALUE: a table's column may be named with spaces or dashes (never with '='); a number
# has no '='.
_NAMED = re.compile(r"([^=]+)=(.*)", re.DOTALL)
_LIMIT = 2**53
_LISTED_LINES = 5


class PredictCommand(Command):
    """Every input is checked before TensorFlow starts (about 8 s), as `predict_many` would."""

    name = "predict"
    help = "run the best model on raw inputs"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_common_arguments(parser)
        parser.add_argument("operation")
        parser.add_argument(
            "values", nargs="*", metavar="INPUT", type=_input_token,
            help="the inputs in the operation's order (2 3), or by name (n=1.5 R=8.3 ...)",
        )
        parser.add_argument(
            "--input", metavar="FILE",
            help="many inputs: CSV, one row per line, an optional header of input names "
            "('-': stdin)",
        )
        add_output_format(parser)

    def take_action(self, args: argparse.Namespace, database: Database, campaign: str) -> int:
        from sweep.publishing.lookup import check_operation_name

        check_operation_name(args.operation)
        if args.input is not None and args.values:
            raise ConfigError(
                "give the inputs either on the command line or with --input, not both"
            )
        # Every input is checked before TensorFlow starts (8 s): the same checks as
        # predict_many's.
        from sweep.publishing.lookup import resolve_operation

        op = resolve_operation(database.campaigns, campaign, args.operation)
        if args.input is None and not args.values:
            raise ConfigError(
                f"give the inputs: sweep predict {op.name} {_usage(op)}, or --input FILE"
            )
        import numpy as np

        from sweep.publishing.models import check_pairs

        numbers: list[int] | None = None
        if args.input is not None:
            from sweep.cli.inputs import read_rows

            rows, numbers = read_rows(args.input, op.inputs, op.name)
            x = np.asarray(rows, dtype=np.float64).reshape(len(rows), op.arity)
            check_pairs(op, x, what="line", numbers=numbers)
        else:
            x = np.asarray([_command_line_row(op, args.values)], dtype=np.float64)
        # The model too: an archive that would not load is refused before TensorFlow starts
        # (its bounds are read from the archive alone), and the version checked is the one run.
        from sweep.nets.archive import check_archive
        from sweep.publishing.lookup import fetch_model

        entry, data = fetch_model(database, campaign, args.operation)
        check_archive(data, label=f"{entry.operation} version {entry.version}")
        training_runtime(1)
        from sweep.publishing.models import predict_many

        result = predict_many(
            args.operation, x, database=database, campaign=campaign, fetched=(entry, data)
        )
        _warn_beyond(op, result, numbers)
        if args.format == "json":
            print(json.dumps(_json(result)))
        elif args.input is not None:
            lines = [
                _answer_text(float(v), bool(r), exact=True)
                for v, r in zip(result.answers, result.rounded, strict=True)
            ]
            if lines:
                sys.stdout.write("\n".join(lines) + "\n")
        else:
            one = result.row(0)
            exact = "n/a (a table has no formula)" if one.exact is None else f"{one.exact:.9g}"
            say(
                f"{_call(op, one.inputs)} = {_answer_text(one.answer, one.rounded)}    "
                f"[network output {one.output:.9g}; exact {exact}; version {one.version}]"
            )
        return 0


def _usage(op: Operation) -> str:
    if _positional_names(op):
        return " ".join(name.upper() for name in op.inputs)
    return _by_name(op)


def _positional_names(op: Operation) -> bool:
    """The built-in names ``a``, ``b``: shown as ``add(2, 3)`` rather than by name."""
    return op.inputs == ("a", "b")[: op.arity]


def _input_token(text: str) -> tuple[str | None, float]:
    """An argparse type: ``NUMBER`` or ``NAME=NUMBER`` (checked before storage is opened)."""
    match = _NAMED.fullmatch(text)
    if match is None:
        return None, number(text)
    name, value = match.groups()
    try:
        return name, number(value)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"input {name}: {e}") from None


def _command_line_row(
    op: Operation, tokens: Sequence[tuple[str | None, float]]
) -> tuple[float, ...]:
    """The inputs typed after the operation: all in order, or all as NAME=VALUE."""
    from sweep.publishing.models import check_inputs

    named = [name is not None for name, _ in tokens]
    if any(named) and not all(named):
        raise ConfigError(
            f"give {op.name}'s inputs all in order ({', '.join(op.inputs)}) or all by name "
            f"({_by_name(op)}), not mixed"
        )
    if all(named):
        from sweep.publishing.models import arrange_named

        # arrange_named refuses a name given twice (a mapping would keep the last).
        values = arrange_named(op, [(str(name), value) for name, value in tokens])
        return check_inputs(op, *values)
    if len(tokens) != op.arity:
        wanted = "one input" if op.arity == 1 else f"{op.arity} inputs"
        raise ConfigError(
            f"{op.name} takes {wanted} ({', '.join(op.inputs)}), got {len(tokens)}; give them "
            f"in that order or by name ({_by_name(op)})"
        )
    return check_inputs(op, *[value for _, value in tokens])


def _by_name(op: Operation) -> str:
    return " ".join(f"{name}=.." for name in op.inputs)


def _call(op: Operation, inputs: Sequence[float]) -> str:
    """``add(2, 3)``, ``gas(n=1.5, R=8.3, T=300, V=2)``: each input as typed (shortest form)."""
    if _positional_names(op):
        return f"{op.name}({', '.join(_input_text(float(v)) for v in inputs)})"
    shown_inputs = ", ".join(
        f"{n}={_input_text(float(v))}" for n, v in zip(op.inputs, inputs, strict=True)
    )
    return f"{op.name}({shown_inputs})"


def _input_text(value: float) -> str:
    """A whole number in full (123456789, not 1.23457e+08); else the shortest exact form."""
    if value.is_integer() and abs(value) <= _LIMIT:
        return str(int(value))
    return repr(value)


def _answer_text(value: float, rounded: bool, *, exact: bool = False) -> str:
    """A rounded answer as a whole number; else 9 significant digits (all of them, `exact`,
    for --input, where a script reads the answers)."""
    if not math.isfinite(value):
        return repr(value)
    if rounded:
        return f"{value + 0.0:.0f}"
    return repr(value) if exact else f"{value:.9g}"


def _warn_beyond(op: Operation, result: Predictions, numbers: Sequence[int] | None) -> None:
    """One stderr line when an answer is beyond 2**53."""
    beyond = result.beyond_2_53
    if not beyond.any():
        return
    import numpy as np

    rows = np.flatnonzero(beyond)
    answers = result.answers
    spacing = float(np.spacing(np.abs(answers[rows]).min()))
    why = (
        f"beyond 2**53 = {_LIMIT}, where float64 no longer holds every whole number "
        f"(neighbours there are {spacing:g}{' or more' if len(rows) > 1 else ''} apart)"
    )
    if numbers is None:
        i = int(rows[0])
        text = _answer_text(float(answers[i]), bool(result.rounded[i]))
        say(
            f"warning: {_call(op, result.inputs[i])} = {text} is {why}: its last digits are "
            "not exact",
            err=True,
        )
        return
    lines = ", ".join(str(numbers[i]) for i in rows[:_LISTED_LINES])
    more = ", ..." if len(rows) > _LISTED_LINES else ""
    count = f"{len(rows)} answers are" if len(rows) > 1 else "1 answer is"
    say(
        f"warning: {count} {why} (line{'s' if len(rows) > 1 else ''} {lines}{more}): their "
        "last digits are not exact",
        err=True,
    )


def _json(result: Predictions) -> dict[str, object]:
    exact = result.exact
    return {
        "operation": result.operation,
        "model_version": result.version,
        "inputs": list(result.names),
        "integer_valued": result.integer_valued,
        "instances": result.inputs.tolist(),
        "predictions": _finite_or_none(result.outputs),
        "answers": _finite_or_none(result.answers),
        "rounded": [bool(v) for v in result.rounded],
        "beyond_2_53": [bool(v) for v in result.beyond_2_53],
        "exact": [None] * len(result.outputs) if exact is None else _finite_or_none(exact),
    }


def _finite_or_none(values: Iterable[float] | npt.NDArray[np.float64]) -> list[float | None]:
    """JSON has no NaN or infinity: a non-finite answer is written as null."""
    return [float(v) if math.isfinite(v) else None for v in values]

