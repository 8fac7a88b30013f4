"""Stop signals: SIGINT (Ctrl-C) and SIGTERM end a sweep cleanly, and are remembered.

Outside a trial the handler raises KeyboardInterrupt at once. Inside a trial it only records the
signal: an exception raised from a signal handler while TensorFlow runs is mangled on its way
through C code (it surfaces as a SystemError, which looks like an ordinary crashed trial) or
lost in a garbage-collector callback ("Exception ignored ..."), and the sweep would go on. The
trial's own checkpoints (after every epoch) and the campaign loop (between trials) then raise
KeyboardInterrupt from plain Python code. A second signal during a trial raises at once.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_received: int | None = None
_deferring = 0


def install_signal_handlers() -> None:
    """SIGTERM behaves like Ctrl-C: Optuna marks the trial in flight FAIL, then we exit.

    A command starts with no signal on record (one called in-process after another stopped).
    """
    global _received
    _received = None
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    global _received
    repeated = _received is not None
    _received = signum
    if not _deferring or repeated:
        raise KeyboardInterrupt(interrupting_signal())


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Inside, a first stop signal is recorded only; `raise_if_interrupted` acts on it."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1


def forget_swallowed_interrupt() -> int | None:
    """The KeyboardInterrupt raised for the last signal never propagated (it hit a finaliser).

    Returns that signal (None if these handlers did not see it). The program sends it again
    (`sweep.cli.run`); it must then count as a first signal, which inside a trial is only
    recorded, not as a repeat, which raises at once.
    """
    global _received
    received, _received = _received, None
    return received


def forget_interrupt() -> None:
    """The command that saw a stop signal is over: a caller embedding `sweep.cli.main` goes
    on, and its next `Campaign.run` must not stop at its first checkpoint on that signal."""
    global _received
    _received = None


def interrupting_signal() -> str | None:
    """The name of the signal that asked this process to stop (``SIGTERM``), else None."""
    if _received is None:
        return None
    try:
        return signal.Signals(_received).name
    except ValueError:
        return f"signal {_received}"


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if a stop signal has arrived (a checkpoint in plain Python)."""
    name = interrupting_signal()
    if name is not None:
        raise KeyboardInterrupt(name)
