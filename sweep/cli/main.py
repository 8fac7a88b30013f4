"""The `sweep` command: the only code that parses arguments, prints or exits.

Every user error (SweepError, StorageError) becomes one line on stderr and exit code 2. Each
command is a `sweep.cli.commands.Command` in its own module, which imports the floors below
only when it runs, so `sweep --help`, `sweep best` and `sweep models` never start TensorFlow;
the CLI is also where the floors' dependencies are built and passed in (`sweep.cli.runtime`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from collections.abc import Sequence

from sweep import settings
from sweep.cli.arguments import DEFAULT_CAMPAIGN, EXIT_USAGE, SweepParser
from sweep.cli.commands import COMMANDS, command_named
from sweep.cli.commands.pull import MAX_VERSION
from sweep.cli.commands.run import MAX_LOCAL_WORKERS, MAX_SEED, MAX_TRIALS
from sweep.cli.interrupts import is_interruption
from sweep.cli.text import say
from sweep.errors import SweepError
from sweep.search._signals import forget_interrupt

__all__ = [
    "DEFAULT_CAMPAIGN",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "MAX_LOCAL_WORKERS",
    "MAX_SEED",
    "MAX_TRIALS",
    "MAX_VERSION",
    "build_parser",
    "main",
]

EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The `sweep` parser: one subparser per command, each filled in by its `Command`."""
    from sweep._version import __version__

    parser = SweepParser(
        prog="sweep",
        description="Find small Keras networks that compute arithmetic, by hyperparameter search.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=SweepParser)
    for command in COMMANDS:
        command().add_arguments(subparsers.add_parser(command.name, help=command.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The `sweep` command; returns its exit code (0, 2 for a user error, 130 when stopped)."""
    try:
        return _main(argv)
    except BaseException as error:
        if not is_interruption(error):
            raise
        # Ctrl-C at any moment (argument parsing, a TensorFlow import, a trial) ends here.
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt this
        if not os.environ.get("SWEEP_PARENT_PID"):
            # (A worker of `run --workers K` stays quiet: its parent says this once.)
            say(
                "sweep: interrupted; finished trials and promoted models are kept. "
                "Run the same command to resume.",
                err=True,
            )
        return EXIT_INTERRUPTED
    finally:
        forget_interrupt()  # the signal `run` or `worker` recorded stopped this command only


def _main(argv: Sequence[str] | None) -> int:
    if not sys.warnoptions:
        # Library warnings (matplotlib, NumPy, zipfile, Keras) are for developers; a user sees
        # one line per problem from the sweep itself. `python -W ...` still shows them.
        warnings.simplefilter("ignore")
    args = build_parser().parse_args(argv)
    from storage import StorageError

    try:
        environment = settings.refresh()
        from storage import Database
        from sweep.search.config import validate_campaign_name

        # An explicit `--campaign ''` is refused, not silently read as the default campaign.
        campaign = validate_campaign_name(
            args.campaign
            if args.campaign is not None
            else environment.campaign or DEFAULT_CAMPAIGN
        )
        # The boundary: the URL is parsed here, once, into the process's database handle.
        command = command_named(args.command)
        with Database.resolve(
            args.storage,
            environment.storage,
            read_only=not command.writes,
            patience=environment.database_patience,
        ) as database:
            return command.take_action(args, database, campaign)
    except (SweepError, StorageError) as e:
        say(f"sweep: error: {_one_line(e)}", err=True)
        return EXIT_USAGE
    except BrokenPipeError:
        # `sweep predict --input big.csv | head`: the reader left; that is not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0


def _one_line(error: BaseException) -> str:
    """An error as one line of at most 1000 characters (messages quote user values)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 1000 else text[:997] + "..."


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
