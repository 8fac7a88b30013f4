"""What a worker does when something fails: ride out the database, count failed trials.

Two policies, each testable on its own (tests/sweep/search/test_retry.py):

- `DatabasePatience`: a dropped connection or a database restart is waited out (the server is
  polled until it answers, up to ``SWEEP_DATABASE_PATIENCE`` seconds) and the call retried with
  backoff; errors that persist while the database answers (a value it refuses) become fatal
  after `DATABASE_RETRIES` in a row, instead of a retry loop that never ends.
- `FailureCount`: a crashed trial is recorded and the sweep goes on; `MAX_CONSECUTIVE_FAILURES`
  in a row mean the search itself is broken and stop it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from storage import StorageError, StorageUnavailable
from sweep.errors import FatalSweepError, describe
from sweep.search.storage import DATABASE_ERRORS

__all__ = [
    "DATABASE_RETRIES",
    "MAX_CONSECUTIVE_FAILURES",
    "DatabasePatience",
    "FailureCount",
    "database_error",
    "is_database_error",
]

_T = TypeVar("_T")

DATABASE_RETRIES = 8
MAX_CONSECUTIVE_FAILURES = 5
_RETRYABLE = (*DATABASE_ERRORS, StorageUnavailable)


def is_database_error(error: BaseException) -> bool:
    """A lost or refused database call, as SQLAlchemy, Optuna or our storage raise it."""
    return isinstance(error, _RETRYABLE)


def database_error(error: BaseException) -> BaseException | None:
    """The innermost database error in `error`'s chain of causes and contexts, if any.

    Innermost, because Optuna wraps a dropped connection in a StorageInternalError whose own
    message blames "invalid data in the commit".
    """
    seen: set[int] = set()
    found: BaseException | None = None
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if is_database_error(current):
            found = current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return found


@dataclass
class DatabasePatience:
    """Riding out a lost database: `call` retries one storage call, `trouble` counts a failed
    trial-level operation.

    Args:
        check: Raises a `StorageError` while the database does not answer.
        patience: Seconds to wait for the database before giving up.
        sleep, clock: Injected for tests.
    """

    check: Callable[[], None]
    patience: float
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    retries: int = DATABASE_RETRIES
    errors_in_a_row: int = field(default=0, init=False)

    def call(self, action: Callable[[], _T]) -> _T:
        """Run a storage call, riding out a dropped connection or a database restart."""
        for attempt in range(self.retries):
            try:
                return action()
            except _RETRYABLE:
                if attempt == self.retries - 1:
                    raise
                self.wait_for_database()
                self.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def trouble(self, what: str, error: BaseException, warn: Callable[[str], None]) -> None:
        """A database error ended a trial's storage work: warn, wait, back off; or give up.

        Raises:
            FatalSweepError: more than `retries` database errors in a row.
            StorageUnavailable: the database did not come back within `patience`.
        """
        self.errors_in_a_row += 1
        if self.errors_in_a_row > self.retries:
            raise FatalSweepError(
                f"{what}: {self.errors_in_a_row - 1} database errors in a row; "
                f"last: {describe(error)}"
            ) from error
        warn(f"{what}: database error, retrying: {describe(error)}")
        self.wait_for_database()
        self.sleep(min(0.5 * 2 ** (self.errors_in_a_row - 1), 10.0))

    def succeeded(self) -> None:
        self.errors_in_a_row = 0

    def wait_for_database(self) -> None:
        """Back off until the database answers again, up to `patience` seconds."""
        deadline = self.clock() + self.patience
        delay = 0.5
        while True:
            try:
                self.check()
                return
            except StorageError as e:
                if self.clock() + delay > deadline:
                    raise StorageUnavailable(
                        f"gave up after {self.patience:g} s without the database: {e}"
                    ) from None
                self.sleep(delay)
                delay = min(delay * 2, 10.0)


@dataclass
class FailureCount:
    """Consecutive crashed trials of one operation; too many in a row stop the sweep."""

    limit: int = MAX_CONSECUTIVE_FAILURES
    in_a_row: int = 0

    def failed(self, what: str, error: BaseException) -> None:
        """Raises FatalSweepError when this is the `limit`-th failure in a row."""
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            raise FatalSweepError(
                f"{what}: {self.in_a_row} trials in a row failed; last error: {describe(error)}"
            ) from error

    def succeeded(self) -> None:
        self.in_a_row = 0
