"""`sweep models`: the registry's history, every promoted version, as a table or JSON."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from sweep.cli.arguments import add_common_arguments, add_output_format
from sweep.cli.commands.base import Command
from sweep.errors import ConfigError

if TYPE_CHECKING:
    from storage import Database

__all__ = ["ModelsCommand"]


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

        entries = model_history(args.operation, database=database, campaign=campaign)
        if args.format == "json":
            from sweep.publishing.summary import history_json

            print(json.dumps(history_json(entries), indent=2, default=str))
            return 0
        if not entries:
            what = f"operation {args.operation!r}" if args.operation else f"campaign {campaign!r}"
            raise ConfigError(f"no models yet for {what} on {database.masked}")
        from sweep.cli.display import print_history

        print_history(entries)
        return 0
