"""The retry policies as units, with a fake clock: no sleeping, no database."""

from __future__ import annotations

import pytest
import sqlalchemy.exc

from storage import StorageInternalError, StorageUnavailable
from sweep.errors import FatalSweepError
from sweep.search.retry import DatabasePatience, FailureCount, database_error


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def _lost() -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionError("server closed"))


def _patience(time: FakeTime, down_for: float = 0.0, patience: float = 120.0) -> DatabasePatience:
    def check() -> None:
        if time.now < down_for:
            raise StorageUnavailable("down")

    return DatabasePatience(check, patience, sleep=time.sleep, clock=time.clock)


def test_a_call_rides_out_a_restart_and_returns_its_result() -> None:
    time = FakeTime()
    attempts: list[int] = []

    def action() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise _lost()
        return "done"

    assert _patience(time, down_for=5.0).call(action) == "done"
    assert len(attempts) == 3 and time.now >= 5.0


def test_a_database_that_never_returns_is_given_up_after_the_patience() -> None:
    time = FakeTime()
    with pytest.raises(StorageUnavailable, match="gave up after 30 s"):
        _patience(time, down_for=1e9, patience=30.0).wait_for_database()
    assert time.now <= 30.0


def test_persistent_errors_with_the_database_up_become_fatal() -> None:
    time = FakeTime()
    policy = _patience(time)
    warnings: list[str] = []
    for _ in range(policy.retries):
        policy.trouble("multiply", _lost(), warnings.append)
    with pytest.raises(FatalSweepError, match="8 database errors in a row"):
        policy.trouble("multiply", _lost(), warnings.append)
    assert len(warnings) == policy.retries
    assert all("\n" not in w for w in warnings)
    assert max(time.slept) <= 10.0  # backoff is capped


def test_a_success_resets_the_count() -> None:
    policy = _patience(FakeTime())
    for _ in range(policy.retries):
        policy.trouble("add", _lost(), lambda _: None)
    policy.succeeded()
    policy.trouble("add", _lost(), lambda _: None)  # counting starts again: not fatal


def test_consecutive_trial_failures_stop_the_search_at_the_limit() -> None:
    failures = FailureCount(limit=3)
    failures.failed("add", ValueError("one"))
    failures.succeeded()
    failures.failed("add", ValueError("one"))
    failures.failed("add", ValueError("two"))
    with pytest.raises(FatalSweepError, match="3 trials in a row failed; last error: ValueError"):
        failures.failed("add", ValueError("three"))


def test_the_innermost_database_error_is_found_behind_optunas_wrapper() -> None:
    lost = _lost()
    try:
        try:
            raise lost
        except sqlalchemy.exc.OperationalError as e:
            raise StorageInternalError("invalid data in the commit") from e
    except StorageInternalError as wrapped:
        assert database_error(wrapped) is lost
    assert database_error(ValueError("not a database problem")) is None
