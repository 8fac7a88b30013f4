"""What several commands' arguments share: the one-line parser, value types, common flags.

Each type names the bad value in argparse's one error line, cut short: a 50 MB argument must
not come back as a 50 MB error line. The common flags are added here so that every command's
`--help` describes them in the same words.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn

__all__ = [
    "DEFAULT_CAMPAIGN",
    "EXIT_USAGE",
    "SweepParser",
    "add_common_arguments",
    "add_log_format",
    "add_output_format",
    "add_storage_argument",
    "int_in",
    "number",
    "port",
    "positive_float",
    "shown",
]

DEFAULT_CAMPAIGN = "arith"  # sweep.search.config.DEFAULT_CAMPAIGN (checked in the tests)

EXIT_USAGE = 2


class SweepParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def shown(text: str) -> str:
    """`text` quoted for an error message, cut to 40 characters."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def int_in(minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse type: an integer from `minimum` to `maximum`, both included."""

    def parse(text: str) -> int:
        try:
            value = int(text) if len(text) <= 40 else None
        except ValueError:
            value = None
        if value is None:
            raise argparse.ArgumentTypeError(f"{shown(text)} is not an integer")
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(
                f"{shown(text)} is out of range; allowed {minimum} to {maximum}"
            )
        return value

    return parse


def positive_float(text: str) -> float:
    """An argparse type: a finite number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{shown(text)} must be a positive number of seconds")
    return value


def number(text: str) -> float:
    """An argparse type: a finite number (no NaN, no infinity)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a finite number")
    return value


def port(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535 (0 lets the system pick one)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535; 0 picks one)")
    return value


def add_storage_argument(parser: argparse.ArgumentParser) -> None:
    """`--storage URL`; `sweep.cli.main` resolves it with the environment."""
    parser.add_argument(
        "--storage",
        help="database URL (default: $SWEEP_STORAGE, else sqlite:///sweeps.db)",
    )


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """`--storage URL` and `--campaign NAME`, taken by every command but `dashboard`."""
    add_storage_argument(parser)
    parser.add_argument(
        "--campaign", default=None,
        help=f"campaign name (default: $SWEEP_CAMPAIGN, else {DEFAULT_CAMPAIGN})",
    )


def add_output_format(parser: argparse.ArgumentParser) -> None:
    """`--format text|json` for the commands that print data a script may read."""
    parser.add_argument(
        "--format", choices=("text", "json"), default="text",
        help="text (default) or json on stdout",
    )


def add_log_format(parser: argparse.ArgumentParser) -> None:
    """`--log-format text|json` for the commands that run trials (`run`, `worker`)."""
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text",
        help="progress on stderr: text (default; live bars on a terminal, else one timestamped "
        "line per trial, promotion and operation) or json (one JSON object per line)",
    )
