"""Slot reservation as a unit: what the two reads decide, and that the lock is never leaked."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from storage import ModelEntry
from sweep.search.budget import (
    AllTaken,
    BudgetMet,
    Busy,
    Reserved,
    StoppedExact,
    TrialCounts,
    exact_trial,
    reserve_slot,
)


class RecordingLock:
    def __init__(self, free: bool = True) -> None:
        self.events: list[str] = []
        self.free = free

    def acquire(self) -> None:
        self.events.append("acquire")

    def try_acquire(self) -> bool:
        self.events.append("try" if self.free else "try: held elsewhere")
        return self.free

    def release(self) -> None:
        self.events.append("release")


def _reads(*counts: tuple[int, int]) -> Callable[[], TrialCounts]:
    queue = [TrialCounts(counted, reserved, None) for counted, reserved in counts]
    return lambda: queue.pop(0)


def test_a_time_budget_reserves_without_counting_or_locking() -> None:
    def never() -> TrialCounts:
        raise AssertionError("a time budget must not count trials")

    lock = RecordingLock()
    result = reserve_slot(never, None, lambda: lock)
    assert isinstance(result, Reserved) and lock.events == []
    result.lock.release()  # releasing the no-op lock is harmless


@pytest.mark.parametrize(
    ("first", "expected"),
    [((5, 5), BudgetMet), ((3, 5), AllTaken)],
    ids=["spent", "all-running"],
)
def test_a_known_answer_needs_no_lock(first: tuple[int, int], expected: type) -> None:
    lock = RecordingLock()
    assert isinstance(reserve_slot(_reads(first), 5, lambda: lock), expected)
    assert lock.events == []


def test_a_free_slot_is_returned_with_its_lock_held() -> None:
    lock = RecordingLock()
    result = reserve_slot(_reads((2, 3), (2, 3)), 5, lambda: lock)
    assert isinstance(result, Reserved) and result.lock is lock
    assert lock.events == ["acquire"]


@pytest.mark.parametrize(
    ("second", "expected"),
    [((5, 5), BudgetMet), ((4, 5), AllTaken)],
    ids=["spent-meanwhile", "taken-meanwhile"],
)
def test_the_read_under_the_lock_decides(second: tuple[int, int], expected: type) -> None:
    lock = RecordingLock()
    assert isinstance(reserve_slot(_reads((2, 3), second), 5, lambda: lock), expected)
    assert lock.events == ["acquire", "release"]


def test_a_failed_read_under_the_lock_releases_it() -> None:
    lock = RecordingLock()
    calls = iter([TrialCounts(0, 0, None)])

    def counts() -> TrialCounts:
        try:
            return next(calls)
        except StopIteration:
            raise ConnectionError("lost") from None

    with pytest.raises(ConnectionError):
        reserve_slot(counts, 5, lambda: lock)
    assert lock.events == ["acquire", "release"]


def test_not_waiting_a_held_lock_is_busy_and_a_free_one_reserves() -> None:
    held = RecordingLock(free=False)
    assert isinstance(reserve_slot(_reads((2, 3)), 5, lambda: held, wait=False), Busy)
    assert held.events == ["try: held elsewhere"]  # no release: it was never ours

    free = RecordingLock()
    result = reserve_slot(_reads((2, 3), (2, 3)), 5, lambda: free, wait=False)
    assert isinstance(result, Reserved) and result.lock is free
    assert free.events == ["try"]


def test_not_waiting_still_decides_under_the_lock() -> None:
    lock = RecordingLock()
    assert isinstance(reserve_slot(_reads((2, 3), (4, 5)), 5, lambda: lock, wait=False), AllTaken)
    assert lock.events == ["try", "release"]


def _never() -> TrialCounts:
    raise AssertionError("an exact study needs no count")


@pytest.mark.parametrize("budget", [5, None], ids=["trials", "time"])
def test_an_exact_best_stops_without_counting_or_locking(budget: int | None) -> None:
    lock = RecordingLock()
    result = reserve_slot(_never, budget, lambda: lock, exact=lambda: 4)
    assert result == StoppedExact(4) and lock.events == []


def test_no_exact_best_reserves_as_before() -> None:
    lock = RecordingLock()
    result = reserve_slot(_reads((2, 3), (2, 3)), 5, lambda: lock, exact=lambda: None)
    assert isinstance(result, Reserved) and lock.events == ["acquire"]
    assert isinstance(reserve_slot(_reads((5, 5)), 5, lambda: lock, exact=lambda: None), BudgetMet)


def test_the_exact_trial_is_the_registry_best_s_when_it_is_exact() -> None:
    def entry(extrapolation_hit_rate: float) -> ModelEntry:
        metrics = {"val_hit_rate": 1.0, "test_hit_rate": 1.0,
                   "extrapolation_hit_rate": extrapolation_hit_rate}
        return ModelEntry(
            campaign="c", operation="add", version=1, study_name="c.add", trial_number=7,
            objective_value=0.1, metrics=metrics, params={}, size_bytes=1, sha256="0" * 64,
            keras_version="", tensorflow_version="", created_at=datetime(2026, 1, 1),
            is_best=True,
        )

    assert exact_trial(entry(1.0)) == 7
    assert exact_trial(entry(0.99)) is None
    assert exact_trial(None) is None
