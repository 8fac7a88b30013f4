"""The command line: the only floor that parses arguments, prints (rich) or exits."""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading

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
    if code == 0 and "tensorflow" in sys.modules:
        _leave_without_tensorflows_teardown()
    sys.exit(code)


def _leave_without_tensorflows_teardown() -> None:
    """Exit 0 now, skipping the interpreter's teardown, which TensorFlow makes slow.

    Measured here: `import tensorflow`, one op and a normal exit 3.3-3.5 s; the same with this
    exit 2.4-2.6 s (the exit handlers themselves take under 10 ms). For a worker that is the
    end of every sweep (the parent of `run --workers K` waits for it). Everything is committed
    and closed by now; the exit handlers (logging's flush, temporary folders) still run. Not
    taken while a non-daemon thread is alive (the normal exit waits for those), nor when the
    output cannot be flushed (the normal exit reports that).
    """
    if any(not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(0)
