"""`sweep models`: the registry's history, every promoted version, as a table or JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sweep.cli.arguments import add_common_arguments, add_output_format
from sweep.cli.commands.base import Command
from sweep.errors import ConfigError

if TYPE_CHECKING:
    from storage import Database, ModelEntry
    from sweep.publishing.summary import OperationsByEntry

__all__ = ["ModelsCommand", "print_inputs"]


class ModelsCommand(Command):
    """Reads SQL only: it must never start TensorFlow (tests/test_layers.py checks)."""

    name = "models"
    help = "registry history: versions, metrics, sizes"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_common_arguments(parser)
        parser.add_argument("operation", nargs="?")
        add_output_format(parser)

    def take_action(self, args: argparse.Namespace, database: Database, campaign: str) -> int:
        from sweep.publishing.models import model_history
        from sweep.publishing.summary import operations_for

        entries = model_history(args.operation, database=database, campaign=campaign)
        operations = operations_for(database.campaigns, entries)
        if args.format == "json":
            from sweep.publishing.summary import history_json

            print(json.dumps(history_json(entries, operations), indent=2, default=str))
            return 0
        if not entries:
            what = f"operation {args.operation!r}" if args.operation else f"campaign {campaign!r}"
            raise ConfigError(f"no models yet for {what} on {database.masked}")
        from sweep.cli.display import print_history

        print_history(entries)
        print_inputs(entries, operations)
        return 0


def print_inputs(entries: Sequence[ModelEntry], operations: OperationsByEntry) -> None:
    """Under a table, one short line per operation: the inputs `sweep predict` takes (in their
    order) and whether answers are rounded. Kept out of the table, which stays readable in 80
    columns however many inputs an operation has; wrapped at spaces to the console's width."""
    from sweep.cli.text import print_wrapped

    lines: list[str] = []
    seen: set[tuple[str, str]] = set()
    for entry in entries:
        key = (entry.campaign, entry.operation)
        if key in seen:
            continue
        seen.add(key)
        operation = operations.get(key)
        if operation is None:
            lines.append(f"{entry.operation}: inputs unknown (its campaign cannot be read)")
            continue
        rounding = (
            "answers rounded for whole-number inputs"
            if operation.integer_valued
            else "answers not rounded"
        )
        lines.append(f"{entry.operation}({', '.join(operation.inputs)}): {rounding}")
    print_wrapped(lines)
