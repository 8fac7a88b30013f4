"""`sweep best`: the registry's best model per operation, as a table or JSON."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from sweep.cli.arguments import add_common_arguments, add_output_format
from sweep.cli.commands.base import Command
from sweep.errors import ConfigError

if TYPE_CHECKING:
    from storage import Database

__all__ = ["BestCommand"]


class BestCommand(Command):
    """Reads SQL only: it must never start TensorFlow (tests/test_layers.py checks)."""

    name = "best"
    help = "best model per operation (from the registry)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_common_arguments(parser)
        add_output_format(parser)
        parser.add_argument(
            "--json", action="store_true", help="print a JSON array (= --format json)"
        )

    def take_action(self, args: argparse.Namespace, database: Database, campaign: str) -> int:
        from sweep.publishing.models import best_models
        from sweep.publishing.summary import json_rows, operations_for

        entries = best_models(database=database, campaign=campaign)
        operations = operations_for(database.campaigns, entries)
        if args.json or args.format == "json":
            print(json.dumps(json_rows(entries, operations), indent=2, default=str))
            return 0
        if not entries:
            raise ConfigError(
                f"no models yet in campaign {campaign!r} on {database.masked}; run `sweep run` "
                "first"
            )
        from sweep.cli.commands.models import print_inputs
        from sweep.cli.display import print_best_table

        print_best_table(entries, None)
        print_inputs(entries, operations)
        return 0
