"""An operation's trial budget: what counts, and reserving a slot so K workers never overshoot.

A trial counts toward the budget when it ends COMPLETE or PRUNED (pruned includes diverged
trials: they are an outcome of their hyperparameters). FAIL trials (crashes, a worker killed
mid-trial) do not count; they are retried. The budget is a total, not "this many more".

A slot is reserved under the study's named lock: the lock is held while Optuna creates (or
dequeues) the trial and released as soon as the objective starts, so RUNNING trials count as
taken and K workers never start more trials than the budget has left.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import optuna
from optuna.trial import TrialState

from sweep.search._optuna.internals import study_id
from sweep.search.storage import backend_of

__all__ = [
    "COUNTED_STATES",
    "AllTaken",
    "BudgetMet",
    "Reservation",
    "Reserved",
    "SlotLock",
    "TrialCounts",
    "best_value",
    "progress",
    "reserve_slot",
    "trial_counts",
]

COUNTED_STATES: tuple[TrialState, ...] = (TrialState.COMPLETE, TrialState.PRUNED)
RESERVED_STATES: tuple[TrialState, ...] = (TrialState.RUNNING,)


@dataclass(frozen=True)
class TrialCounts:
    counted: int  # COMPLETE + PRUNED: what the budget is measured in
    # counted + RUNNING: slots taken. WAITING trials (startup designs, retries of a dead
    # worker's trial) are not taken: Optuna hands them out before it creates a new trial, so
    # starting a trial while counted + RUNNING < budget never exceeds the budget.
    reserved: int
    last_state: str | None


def trial_counts(study: optuna.Study) -> TrialCounts:
    """The study's counts: one aggregate query on a SweepStorage, else a load of the trials."""
    if backend_of(study) is not None:
        return progress(study)[0]
    trials = study.get_trials(deepcopy=False)
    counted = sum(t.state in COUNTED_STATES for t in trials)
    reserved = counted + sum(t.state in RESERVED_STATES for t in trials)
    return TrialCounts(counted, reserved, trials[-1].state.name if trials else None)


def progress(study: optuna.Study) -> tuple[TrialCounts, float | None]:
    """Counts and best value together: one summary query on a SweepStorage."""
    backend = backend_of(study)
    if backend is None:
        return trial_counts(study), best_value(study)
    summary = backend.summary(study_id(study))
    counted = summary.count(*COUNTED_STATES)
    last = summary.last_state.name if summary.last_state is not None else None
    counts = TrialCounts(counted, counted + summary.count(*RESERVED_STATES), last)
    return counts, summary.best_value


def best_value(study: optuna.Study) -> float | None:
    """The lowest finite first objective among COMPLETE trials."""
    backend = backend_of(study)
    if backend is not None:
        return backend.summary(study_id(study)).best_value
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    values = [t.values[0] for t in trials if t.values and math.isfinite(t.values[0])]
    return min(values) if values else None


class SlotLock(Protocol):
    """A lock that guards an operation's slots (`storage.locks.NamedLock`, or none)."""

    def acquire(self) -> None: ...
    def release(self) -> None: ...


class _NoLock:
    """A time budget only: nothing to count, nothing to lock."""

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass


@dataclass(frozen=True)
class Reserved:
    """A slot is ours; `lock` is held until the trial exists (release it then, idempotently)."""

    lock: SlotLock


@dataclass(frozen=True)
class AllTaken:
    """Every remaining slot is RUNNING on some worker: come back later (a dead worker's trial
    turns stale after the grace period and is retried)."""


@dataclass(frozen=True)
class BudgetMet:
    """The budget is spent: no more trials for this operation."""


Reservation = Reserved | AllTaken | BudgetMet


def reserve_slot(
    counts: Callable[[], TrialCounts],
    budget: int | None,
    make_lock: Callable[[], SlotLock],
) -> Reservation:
    """Reserve one trial slot of `budget`, reading `counts` before and again under the lock.

    The first read lets a worker skip the lock when the answer is already known; the second,
    under the lock, is the one that decides.
    """
    if budget is None:
        return Reserved(_NoLock())
    decided = _decide(counts(), budget)
    if decided is not None:
        return decided
    lock = make_lock()
    lock.acquire()
    try:
        decided = _decide(counts(), budget)
    except BaseException:
        lock.release()
        raise
    if decided is not None:
        lock.release()
        return decided
    return Reserved(lock)


def _decide(counts: TrialCounts, budget: int) -> BudgetMet | AllTaken | None:
    if counts.counted >= budget:
        return BudgetMet()
    if counts.reserved >= budget:
        return AllTaken()
    return None
