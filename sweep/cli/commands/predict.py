"""`sweep predict`: run the best model on raw inputs, one pair or a CSV file of them."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sweep.cli.arguments import add_common_arguments, add_output_format, number
from sweep.cli.commands.base import Command
from sweep.cli.runtime import training_runtime
from sweep.cli.text import say
from sweep.errors import ConfigError

if TYPE_CHECKING:
    from storage import Database

__all__ = ["PredictCommand"]


class PredictCommand(Command):
    """Every input is checked before TensorFlow starts (about 8 s), as `predict_many` would."""

    name = "predict"
    help = "run the best model on raw inputs"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_common_arguments(parser)
        parser.add_argument("operation")
        parser.add_argument("a", type=number, nargs="?")
        parser.add_argument("b", type=number, nargs="?")
        parser.add_argument(
            "--input", metavar="FILE", help="many inputs: CSV, one pair per line ('-': stdin)"
        )
        add_output_format(parser)

    def take_action(self, args: argparse.Namespace, database: Database, campaign: str) -> int:
        from sweep.publishing.lookup import check_operation_name

        check_operation_name(args.operation)
        if args.input is not None and args.a is not None:
            raise ConfigError("give inputs either as A [B] or with --input, not both")
        if args.input is None and args.a is None:
            raise ConfigError(
                f"give the inputs: sweep predict {args.operation} A [B], or --input FILE"
            )
        # Every input is checked before TensorFlow starts (8 s): the same checks as
        # predict_many's.
        from sweep.publishing.lookup import resolve_operation
        from sweep.publishing.models import check_inputs, check_pairs

        op = resolve_operation(database.campaigns, campaign, args.operation)
        import numpy as np

        if args.input is not None:
            from sweep.cli.inputs import read_pairs

            rows, numbers = read_pairs(args.input, op.arity)
            x = np.asarray(rows, dtype=np.float64).reshape(len(rows), op.arity)
            check_pairs(op, x, what="line", numbers=numbers)
        else:
            x = np.asarray([check_inputs(op, args.a, args.b)], dtype=np.float64)
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
        if args.format == "json":
            print(json.dumps({
                "operation": result.operation,
                "model_version": result.version,
                "integer_valued": result.integer_valued,
                "instances": result.inputs.tolist(),
                "predictions": _finite_or_none(result.outputs),
                "answers": _finite_or_none(result.answers),
                "exact": _finite_or_none(result.exact),
            }))
            return 0
        if args.input is not None:
            lines = [
                (f"{v + 0.0:.0f}" if result.integer_valued else repr(float(v)))
                if math.isfinite(v)
                else repr(float(v))
                for v in result.answers
            ]
            if lines:
                sys.stdout.write("\n".join(lines) + "\n")
            return 0
        one = result.row(0)
        inputs = ", ".join(f"{v:g}" for v in one.inputs)
        answer = f"{one.answer + 0.0:.0f}" if one.integer_valued else f"{one.answer:.9g}"
        say(
            f"{one.operation}({inputs}) = {answer}    "
            f"[network output {one.output:.9g}; exact {one.exact:.9g}; version {one.version}]"
        )
        return 0


def _finite_or_none(values: Iterable[float]) -> list[float | None]:
    """JSON has no NaN or infinity: a non-finite answer is written as null."""
    return [float(v) if math.isfinite(v) else None for v in values]
