"""The command line: the only floor that parses arguments, prints (rich) or exits."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
import time

from sweep.cli.main import build_parser, main
from sweep.search._signals import forget_swallowed_interrupt

__all__ = ["build_parser", "main", "run"]

REDELIVERY_DELAY_SECONDS = 0.01
"""How long after a lost Ctrl-C it comes again: long enough for the finaliser to end."""


def run() -> None:
    """The program `sweep` (and `python -m sweep`): `main`, then exit with its code.

    Once `main` has returned, a late Ctrl-C is ignored: the process is exiting anyway, and
    Python's shutdown (TensorFlow's exit handlers) must not turn it into a traceback or a
    death by signal.
    """
    _deliver_interrupts_that_hit_a_finaliser()
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
    if code == 0 and _tensorflow_loaded_or_loading():
        _leave_without_tensorflows_teardown()
    if code != 0 and _importing_tensorflow():
        # A refusal printed while TensorFlow still imports in a thread: the interpreter's
        # teardown would wait for the import (or break it midway); nothing is left to save.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _deliver_interrupts_that_hit_a_finaliser() -> None:
    """Re-send a Ctrl-C that landed inside a finaliser, so that it lands in ordinary code.

    Python runs a signal's handler wherever the main thread is; when that is a weakref callback
    or a `__del__` (SQLAlchemy's event registry, during the garbage collection an error path
    starts), the KeyboardInterrupt cannot propagate: Python prints "Exception ignored in ..."
    with a traceback and carries on as if Ctrl-C never came (seen in CI: `sweep pull` stopped
    at 0.3 s). Now nothing is printed and the signal comes again from a helper thread a moment
    later, when the finaliser is over. Raising it from the hook itself would not do: Python
    checks for signals after each call there and the interrupt would land in the hook. Other
    unraisable errors go to the usual hook.
    """
    previous = sys.unraisablehook

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        if not (isinstance(unraisable.exc_type, type)
                and issubclass(unraisable.exc_type, KeyboardInterrupt)):
            previous(unraisable)
            return
        while True:
            # (`run` and `worker` record the signal, SIGTERM too: the same comes again, and
            # as a first one, not a repeat.)
            signum = forget_swallowed_interrupt() or signal.SIGINT
            try:
                threading.Thread(
                    target=_send_to_the_main_thread, args=(signum,), daemon=True
                ).start()
                return
            except KeyboardInterrupt:
                # The helper's signal arrived while this one started: that one is used up.
                continue

    sys.unraisablehook = hook


def _send_to_the_main_thread(signum: int) -> None:
    """A real signal (not a flag), so that a blocking call in the main thread returns too."""
    time.sleep(REDELIVERY_DELAY_SECONDS)
    main_thread = threading.main_thread().ident
    if main_thread is not None:
        with contextlib.suppress(OSError):  # (the process is already leaving)
            signal.pthread_kill(main_thread, signum)


def _importing_tensorflow() -> bool:
    background = sys.modules.get("sweep.nets.background")
    return background is not None and bool(background.importing())


def _tensorflow_loaded_or_loading() -> bool:
    """TensorFlow is imported, or its import runs in a thread (a worker that was not needed):
    the interpreter's teardown would wait on it, or tear it down mid-import."""
    background = sys.modules.get("sweep.nets.background")
    return "tensorflow" in sys.modules or (background is not None and background.importing())


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
