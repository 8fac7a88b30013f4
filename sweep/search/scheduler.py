"""The loop that fills a prepared campaign's budgets, trial by trial, with any number of workers.

KerasTuner's split: the campaign (`sweep.search.campaign`) prepares what the trials are
drawn from (studies, datasets, storage); the scheduler runs them. Per operation it reserves a
slot under the study's lock (`budget`), runs one Optuna trial, rides out database trouble
(`retry`) and promotes the trial's model (`promotion`); a worker whose operations' slots are
all taken elsewhere moves on and comes back.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import optuna

from storage import Database, ModelEntry, ModelRegistry, StorageError
from storage.locks import NamedLock
from sweep import settings
from sweep.errors import FatalSweepError, SweepError, describe
from sweep.nets import TrainedModel, Trainer
from sweep.problem.data import Dataset
from sweep.problem.operations import Operation
from sweep.search._optuna.internals import find_trial, still_running
from sweep.search._signals import deferred_interrupts, interrupting_signal, raise_if_interrupted
from sweep.search.budget import (
    AllTaken,
    BudgetMet,
    Busy,
    Reserved,
    SlotLock,
    StoppedExact,
    exact_trial,
    progress,
    reserve_slot,
    trial_counts,
)
from sweep.search.config import CampaignConfig
from sweep.search.objective import Objective
from sweep.search.promotion import PromotedModel, Promoter, PromotionHook
from sweep.search.reporting import (
    BUDGET_MET,
    EXACT,
    TIME_UP,
    OperationStatus,
    Reporter,
    SilentReporter,
)
from sweep.search.retry import DatabasePatience, FailureCount, database_error, is_database_error
from sweep.search.samplers import operation_seed
from sweep.search.storage import backend_of

__all__ = ["FIRST_WAIT_SECONDS", "WAIT_SECONDS", "PreparedCampaign", "Scheduler"]

# How long a worker waits before it looks again at operations whose slots are all RUNNING
# elsewhere: FIRST_WAIT_SECONDS, doubling up to WAIT_SECONDS while nothing changes. The
# first looks come soon because the usual case is the end of a sweep, where the last trials
# are about to finish and the sweep ends when this worker does (a flat 2 s wait made 2 local
# workers end 1-2 s after their last trial); a failed trial's slot is also taken sooner.
FIRST_WAIT_SECONDS = 0.1
WAIT_SECONDS = 2.0



class PreparedCampaign(Protocol):
    """What the scheduler needs of a prepared campaign (`sweep.search.campaign.Campaign`)."""

    config: CampaignConfig
    operations: list[Operation]
    datasets: dict[str, Dataset]
    studies: dict[str, optuna.Study]
    trainer: Trainer
    on_promoted: PromotionHook | None

    @property
    def database(self) -> Database: ...

    @property
    def registry(self) -> ModelRegistry: ...


class Scheduler:
    """Runs a prepared campaign's trials until every operation's budget is met (or, with
    ``stop_when_exact``, until its best model is exact).

    Keeps, per operation and across visits, this worker's deadline (its first trial plus the
    timeout), its failure count and its progress line.
    """

    def __init__(self, campaign: PreparedCampaign) -> None:
        self.campaign = campaign
        self.config = campaign.config
        self.studies: Mapping[str, optuna.Study] = campaign.studies
        self._deadlines: dict[str, float] = {}
        self._failures: dict[str, FailureCount] = {}
        self._status: dict[str, OperationStatus] = {}
        # Seconds this process spent waiting for slot locks (the scale benchmark's contention).
        self.slot_lock_seconds = 0.0
        self.trials_run = 0  # trials this process started (reserved a slot for)
        database = campaign.database
        self._patience = DatabasePatience(
            check=database.check_reachable, patience=settings.current().database_patience
        )
        self._promoter = Promoter(
            campaign.registry, campaign.trainer, self.config.name, self.config.objective
        )

    @property
    def operations(self) -> Sequence[Operation]:
        return self.campaign.operations

    def run(self, reporter: Reporter | None = None) -> list[ModelEntry]:
        """Fill every operation's budget; returns the registry's best per operation.

        Operations are taken in order. When every free slot of an operation is held by other
        workers, this worker moves on and comes back, so K workers never idle while any
        operation still has budget.
        """
        reporter = reporter or SilentReporter()
        pending = list(self.operations)
        wait = False  # a first pass takes only slot locks that are free: workers spread out
        idle = 0  # consecutive looks at operations whose slots were all RUNNING elsewhere
        while pending:
            ran = busy = False
            for operation in list(pending):
                before = self.trials_run
                status = self.run_operation(operation, reporter, wait=wait)
                ran = ran or self.trials_run > before
                if status.done:
                    pending.remove(operation)
                elif status.busy:
                    busy = True
                    if wait:  # queued behind one lock, got a trial: spread out again
                        break
            if not pending or ran:
                wait = False
                idle = 0
                continue
            if busy:  # every free slot is being reserved by others: queue for one
                wait = True
                continue
            for operation in pending:  # every slot RUNNING elsewhere: retry the stale ones
                self._fail_stale(self.studies[operation.name])
            time.sleep(min(WAIT_SECONDS, FIRST_WAIT_SECONDS * 2**idle))
            idle += 1
        return self.best()

    def best(self) -> list[ModelEntry]:
        names = {op.name for op in self.operations}
        return [
            e for e in self.campaign.registry.best_all(self.config.name) if e.operation in names
        ]

    def run_operation(
        self, operation: Operation, reporter: Reporter, *, wait: bool = True
    ) -> OperationStatus:
        """Run trials for one operation until its budget is met, with any number of workers.

        Returns early (not done) when every remaining slot is RUNNING on other workers, and
        (`busy`) when another worker holds the operation's slot lock: with `wait` only after
        a first trial (the first reservation queues for the lock), else at once. Done (with
        `exact_trial` set) once the registry's best for the operation is exact, if the
        campaign stops when exact: any worker's exact model stops every worker.
        """
        config = self.config
        study = self.studies[operation.name]
        status = self._started(operation, study, reporter)
        # Per operation across calls: this worker may leave and come back between trials.
        failures = self._failures.setdefault(operation.name, FailureCount())
        on_model = self._promotion_hook(operation, study, reporter)
        exact = functools.partial(self._exact_trial, operation) if config.stop_when_exact else None
        ran = False
        while True:
            raise_if_interrupted()
            deadline = self._deadlines.get(operation.name)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                status.stopped = TIME_UP
                break
            reservation = self._patience.call(
                functools.partial(
                    reserve_slot, lambda: trial_counts(study), config.trials,
                    lambda: self._slot_lock(study), wait=wait and not ran, exact=exact,
                )
            )
            status.busy = isinstance(reservation, Busy)
            if isinstance(reservation, StoppedExact):
                status.exact_trial = reservation.trial
                status.stopped = EXACT
                break
            if isinstance(reservation, BudgetMet):
                status.stopped = BUDGET_MET
                break
            if isinstance(reservation, AllTaken | Busy):
                return status
            assert isinstance(reservation, Reserved)
            ran = True
            self.trials_run += 1
            if config.timeout and deadline is None:  # the clock starts at the first trial
                self._deadlines[operation.name] = time.monotonic() + config.timeout
                remaining = config.timeout
            objective = Objective(
                self.campaign.datasets[operation.name],
                config.space_for(operation.name),
                self.campaign.trainer,
                objective=config.objective,
                multi_objective=config.multi_objective,
                max_trial_seconds=min(config.max_trial_seconds, remaining or math.inf),
                seed=operation_seed(config.seed, operation.name),
                on_model=on_model,
            )
            started: list[int] = []  # the number of the trial this worker runs now
            try:
                # Deferred from here: a signal while Optuna creates the trial (before it
                # calls the objective, outside its own handler) would leave it RUNNING; the
                # runner's first checkpoint turns it into a FAIL instead.
                with deferred_interrupts(), _released_once_started(study, reservation.lock):
                    study.optimize(
                        _trial_runner(objective, reservation.lock, started.append), n_trials=1
                    )
            except FatalSweepError:
                raise
            except Exception as e:
                if is_database_error(e):
                    self._patience.trouble(operation.name, e, reporter.warning)
                    continue
                if isinstance(e, StorageError):
                    raise
                raise_if_interrupted()  # a signal can surface as another exception type
                lost = database_error(e)  # Optuna may hide a lost database behind its own error
                if lost is not None:
                    self._patience.trouble(operation.name, lost, reporter.warning)
                    continue
                # A crashed trial: Optuna has marked it FAIL already.
                reporter.warning(f"{operation.name}: trial failed: {describe(e)}")
                failures.failed(operation.name, e)
            else:
                failures.succeeded()
                self._patience.succeeded()
            finally:
                reservation.lock.release()
            counts, status.best_value = self._patience.call(lambda: progress(study))
            status.finished = counts.counted
            status.last_state = counts.last_state
            status.ran(
                self._patience.call(functools.partial(find_trial, study, started[0]))
                if started else None
            )
            reporter.trial_finished(status)
        # The closing figure is the study's, read now (every worker's trials), not this
        # worker's last view: two workers print the same best for one study.
        counts, status.best_value = self._patience.call(lambda: progress(study))
        status.finished = counts.counted
        status.done = True
        reporter.operation_finished(status)
        return status

    def _started(
        self, operation: Operation, study: optuna.Study, reporter: Reporter
    ) -> OperationStatus:
        """The operation's status, created on the first visit."""
        if operation.name not in self._status:
            counts, best = self._patience.call(lambda: progress(study))
            self._status[operation.name] = OperationStatus(
                operation.name, study.study_name, counts.counted, self.config.trials, best
            )
            reporter.operation_started(self._status[operation.name])
        return self._status[operation.name]

    def _promotion_hook(
        self, operation: Operation, study: optuna.Study, reporter: Reporter
    ) -> Callable[[optuna.Trial, TrainedModel, dict[str, float]], None]:
        dataset = self.campaign.datasets[operation.name]

        def on_model(trial: optuna.Trial, model: TrainedModel, metrics: dict[str, float]) -> None:
            try:
                entry = self._promoter.promote(
                    guard=still_running(trial),
                    dataset=dataset,
                    study_name=study.study_name,
                    trial_number=trial.number,
                    model=model,
                    metrics=metrics,
                    params={
                        **trial.user_attrs.get("model_spec", {}),
                        "architecture": trial.user_attrs.get("architecture"),
                        "parameters": trial.user_attrs.get("parameters"),
                        **({"structure": trial.user_attrs["structure"]}
                           if "structure" in trial.user_attrs else {}),
                    },
                )
            except (SweepError, StorageError, OSError) as e:
                reporter.warning(f"{operation.name} trial {trial.number}: not promoted: {e}")
                # The trial may be finished already (a refused promotion says so).
                with contextlib.suppress(Exception):
                    trial.set_user_attr("promotion_error", str(e))
                return
            if entry is None:
                return
            trial.set_user_attr("registry_version", entry.version)
            if self.campaign.on_promoted is None:
                return
            # While the trial is still RUNNING: Optuna refuses artifacts on a finished trial.
            try:
                self.campaign.on_promoted(PromotedModel(study, trial.number, entry, model, dataset))
            except SweepError as e:
                reporter.warning(f"{operation.name} trial {trial.number}: {e}")

        return on_model

    def _exact_trial(self, operation: Operation) -> int | None:
        """The trial of the operation's registry best if it is exact: what every worker of the
        campaign, on any host, reads from the database before it reserves a slot."""
        return exact_trial(self.campaign.registry.best(self.config.name, operation.name))

    def _fail_stale(self, study: optuna.Study) -> None:
        self._patience.call(lambda: optuna.storages.fail_stale_trials(study))

    def _slot_lock(self, study: optuna.Study) -> SlotLock:
        return _TimedLock(self.campaign.database.lock(f"{study.study_name}:slots"), self)


class _TimedLock:
    """A slot lock that adds the time spent taking it to its scheduler's `slot_lock_seconds`."""

    def __init__(self, lock: NamedLock, scheduler: Scheduler) -> None:
        self._lock = lock
        self._scheduler = scheduler

    def acquire(self) -> None:
        started = time.monotonic()
        try:
            self._lock.acquire()
        finally:
            self._scheduler.slot_lock_seconds += time.monotonic() - started

    def try_acquire(self) -> bool:
        return self._lock.try_acquire()

    def release(self) -> None:
        self._lock.release()


def _released_once_started(
    study: optuna.Study, lock: SlotLock
) -> contextlib.AbstractContextManager[None]:
    """Release the slot lock the moment the reserved trial is RUNNING in the database, before
    Optuna reads it back and starts its heartbeat (every other worker of the study waits for
    the lock meanwhile); on a storage that cannot tell, when the objective starts."""
    backend = backend_of(study)
    if backend is None:
        return contextlib.nullcontext()
    return backend.when_trial_starts(lock.release)


def _trial_runner(
    objective: Objective, lock: SlotLock, started: Callable[[int], None]
) -> Callable[[optuna.Trial], Any]:
    """The function Optuna runs: the trial exists once it is called, so the slot lock goes
    (if the storage has not released it already); `started` is told its number."""

    def run_trial(trial: optuna.Trial) -> Any:
        lock.release()
        started(trial.number)
        try:
            raise_if_interrupted()  # a signal that came while the trial was being created
            with deferred_interrupts():  # stops at the next epoch, from Python code
                return objective(trial)
        except optuna.TrialPruned:
            raise
        except BaseException as e:  # Ctrl-C and SIGTERM too: the trial ends FAIL
            _record_failure(trial, e)
            raise

    return run_trial


def _record_failure(trial: optuna.Trial, error: BaseException) -> None:
    """Store why a trial failed on the trial itself (Optuna 5 only logs the reason)."""
    signal_name = interrupting_signal()
    reason = f"interrupted by {signal_name}" if signal_name else describe(error)
    with contextlib.suppress(Exception):  # the database itself may be what failed
        trial.set_user_attr("fail_reason", reason)
