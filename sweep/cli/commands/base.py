"""What a `sweep` command is: its arguments and its action, read together in one module.

Optuna's CLI shape (`optuna/cli.py`: one class per command, `add_arguments` and
`take_action`): `sweep.cli.main` only assembles the parsers and dispatches.
"""

from __future__ import annotations

import abc
import argparse
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from storage import Database

__all__ = ["Command"]


class Command(abc.ABC):
    """One subcommand of `sweep`.

    Attributes:
        name: The word on the command line (`sweep NAME ...`).
        help: Its line in `sweep --help`.
    """

    name: ClassVar[str]
    help: ClassVar[str]
    writes: ClassVar[bool] = False
    """Whether the command may create the sweep's tables; readers refuse a database that has
    none (`storage.Database(read_only=True)`)."""

    @abc.abstractmethod
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this command's arguments to its subparser."""

    @abc.abstractmethod
    def take_action(self, args: argparse.Namespace, database: Database, campaign: str) -> int:
        """Run the command and return its exit code.

        Args:
            args: The parsed command line.
            url: The storage URL, resolved from `--storage`, the environment or the default.
            campaign: The campaign name, validated, resolved the same way.

        Raises:
            SweepError: a user error; `sweep.cli.main` prints it as one line, exit code 2.
        """
