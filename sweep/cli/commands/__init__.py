"""The `sweep` commands, one module each, in the order `sweep --help` lists them.

Each module imports only argparse-level code at the top; what a command needs (Optuna,
TensorFlow, rich) it imports when it runs, so that `sweep --help` stays fast and `sweep best`
never starts TensorFlow.
"""

from __future__ import annotations

from sweep.cli.commands.base import Command
from sweep.cli.commands.best import BestCommand
from sweep.cli.commands.dashboard import DashboardCommand
from sweep.cli.commands.models import ModelsCommand
from sweep.cli.commands.predict import PredictCommand
from sweep.cli.commands.pull import PullCommand
from sweep.cli.commands.report import ReportCommand
from sweep.cli.commands.run import RunCommand
from sweep.cli.commands.serve import ServeCommand
from sweep.cli.commands.worker import WorkerCommand

__all__ = ["COMMANDS", "Command", "command_named"]

COMMANDS: tuple[type[Command], ...] = (
    RunCommand,
    WorkerCommand,
    BestCommand,
    PullCommand,
    PredictCommand,
    ModelsCommand,
    ServeCommand,
    DashboardCommand,
    ReportCommand,
)


def command_named(name: str) -> Command:
    """The command `sweep NAME` runs (argparse has already refused any other name)."""
    return next(command for command in COMMANDS if command.name == name)()
