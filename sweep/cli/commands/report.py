"""`sweep report`: write a self-contained HTML report of a campaign."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from sweep.cli.arguments import add_common_arguments
from sweep.cli.commands.base import Command
from sweep.cli.text import say

if TYPE_CHECKING:
    from storage import Database

__all__ = ["ReportCommand"]


class ReportCommand(Command):
    """The report reads storage only; building it lives in `sweep.publishing.report`."""

    name = "report"
    help = "write a self-contained HTML report"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_common_arguments(parser)
        parser.add_argument(
            "-o", "--output", default="report.html",
            help="HTML file to write (default: %(default)s)",
        )
        parser.add_argument("--force", action="store_true", help="overwrite an existing file")

    def take_action(self, args: argparse.Namespace, database: Database, campaign: str) -> int:
        from sweep.publishing.report import build_report

        path = build_report(database, campaign, args.output, force=args.force)
        say(f"wrote {path}")
        return 0
