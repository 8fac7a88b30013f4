"""The command line: the only floor that parses arguments, prints (rich) or exits."""

from __future__ import annotations

import os
import signal
import sys

from sweep.cli.main import build_parser, main

__all__ = ["build_parser", "main", "run"]


def run() -> None:
    """The program `sweep` (and `python -m sweep`): `main`, then exit with its code.

    Once `main` has returned, a late Ctrl-C is ignored: the process is exiting anyway, and
    Python's shutdown (TensorFlow's exit handlers) must not turn it into a traceback or a
    death by signal.
    """
    try:
        code = main()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if code == 130:
        # Interrupted: what was finished is committed. Leave at once, so nothing in Python's
        # shutdown (TensorFlow's exit handlers, a KeyboardInterrupt CPython noted inside a C
        # extension) can re-raise SIGINT and turn exit code 130 into a death by signal.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
