"""An operation's trial budget: what counts, and reserving a slot so K workers never overshoot.

A trial counts toward the budget when it ends COMPLETE or PRUNED (pruned includes diverged
trials: they are an outcome of their hyperparameters). FAIL trials (crashes, a worker killed
mid-trial) do not count; they are retried. The budget is a total, not "this many more".

A slot is reserved under the study's named lock: the lock is held while Optuna creates (or
dequeues) the trial and released the moment the trial is RUNNING in the database (before
Optuna samples its parameters), so RUNNING trials count as taken and K workers never start
more trials than the budget has left.

A study also stops, whatever budget is left, once its best model is exact (`StoppedExact`,
unless the campaign sets ``stop_when_exact = false``): the registry's best entry for the
operation has hit rate 1.0 on validation, test and extrapolation (`exact_trial`). Every worker
reads that from the database at each reservation, so all of them stop once any has found it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import optuna
from optuna.trial import TrialState

from storage import ModelEntry
from sweep.problem.metrics import is_exact
from sweep.search._optuna.internals import study_id
from sweep.search.storage import backend_of

__all__ = [
    "COUNTED_STATES",
    "AllTaken",
    "BudgetMet",
    "Busy",
    "Reservation",
    "Reserved",
    "SlotLock",
    "StoppedExact",
    "TrialCounts",
    "best_value",
    "exact_trial",
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
    last_state: str | None = None  # the newest trial's (`progress` reads it; `trial_counts` not)


def trial_counts(study: optuna.Study) -> TrialCounts:
    """The study's counts: one aggregate query on a SweepStorage, else a load of the trials."""
    backend = backend_of(study)
    if backend is not None:
        return _counts(backend.state_counts(study_id(study)))
    return _counts(Counter(t.state for t in study.get_trials(deepcopy=False)))


def progress(study: optuna.Study) -> tuple[TrialCounts, float | None]:
    """Counts and best value together: one summary query on a SweepStorage."""
    backend = backend_of(study)
    if backend is None:
        trials = study.get_trials(deepcopy=False)
        last = trials[-1].state.name if trials else None
        return _counts(Counter(t.state for t in trials), last), best_value(study)
    summary = backend.summary(study_id(study))
    last = summary.last_state.name if summary.last_state is not None else None
    return _counts(summary.states, last), summary.best_value


def _counts(states: Mapping[TrialState, int], last_state: str | None = None) -> TrialCounts:
    counted = sum(states.get(state, 0) for state in COUNTED_STATES)
    reserved = counted + sum(states.get(state, 0) for state in RESERVED_STATES)
    return TrialCounts(counted, reserved, last_state)


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
    def try_acquire(self) -> bool: ...
    def release(self) -> None: ...


class _NoLock:
    """A time budget only: nothing to count, nothing to lock."""

    def acquire(self) -> None:
        pass

    def try_acquire(self) -> bool:
        return True

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


@dataclass(frozen=True)
class Busy:
    """Another worker is reserving a slot of this operation right now (asked not to wait):
    reserve one of another operation meanwhile."""


@dataclass(frozen=True)
class StoppedExact:
    """The operation's best model is exact (trial `trial`): no more trials, whatever budget is
    left. The study is done, as with `BudgetMet`."""

    trial: int


Reservation = Reserved | AllTaken | BudgetMet | Busy | StoppedExact


def exact_trial(best: ModelEntry | None) -> int | None:
    """The trial of `best` (an operation's registry best) if it is exact, else None."""
    if best is None or not is_exact(best.metrics):
        return None
    return best.trial_number


def reserve_slot(
    counts: Callable[[], TrialCounts],
    budget: int | None,
    make_lock: Callable[[], SlotLock],
    *,
    wait: bool = True,
    exact: Callable[[], int | None] | None = None,
) -> Reservation:
    """Reserve one trial slot of `budget`, reading `counts` before and again under the lock.

    The first read lets a worker skip the lock when the answer is already known; the second,
    under the lock, is the one that decides. With `wait` false, a lock another worker holds
    gives `Busy` at once instead of a place in its queue.

    `exact` (given when the campaign stops when exact) returns the trial of the study's exact
    best, if any; it is read once, before the lock: it is no count the lock keeps exact, and a
    trial reserved just before another worker finds the answer is like one already in flight.
    """
    if exact is not None:
        found = exact()
        if found is not None:
            return StoppedExact(found)
    if budget is None:
        return Reserved(_NoLock())
    decided = _decide(counts(), budget)
    if decided is not None:
        return decided
    lock = make_lock()
    if wait:
        lock.acquire()
    elif not lock.try_acquire():
        return Busy()
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
