"""A campaign: one Optuna study per operation, and the loop that fills their budgets.

Study names are ``<campaign>.<operation>`` (e.g. ``arith.multiply``), visible to
``optuna studies --storage URL`` and to optuna-dashboard. The policies the loop applies live in
their own modules: what counts and how a slot is reserved (`budget`), riding out the database
and counting failed trials (`retry`), promotion into the registry (`promotion`). The campaign
knows nothing of Keras: it trains through the `sweep.nets.Trainer` it is given, and tells the
caller about each promoted model through `on_promoted` (the CLI publishes it to the dashboard).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from storage import (
    ModelEntry,
    ModelRegistry,
    StorageError,
    check_reachable,
    create_engine,
    mask_url,
)
from storage.locks import NamedLock
from sweep import settings
from sweep.errors import ConfigError, FatalSweepError, SweepError, describe
from sweep.nets import TrainedModel, Trainer
from sweep.problem.data import Dataset, make_dataset
from sweep.problem.operations import Operation
from sweep.search._optuna import quiet_optuna
from sweep.search._optuna.internals import still_running
from sweep.search._signals import deferred_interrupts, interrupting_signal, raise_if_interrupted
from sweep.search.budget import (
    AllTaken,
    BudgetMet,
    Busy,
    Reserved,
    SlotLock,
    progress,
    reserve_slot,
    trial_counts,
)
from sweep.search.config import CampaignConfig, load_campaign_config, study_name
from sweep.search.designs import startup_designs
from sweep.search.objective import Objective
from sweep.search.promotion import Promoter
from sweep.search.pruners import make_pruner
from sweep.search.reporting import OperationStatus, Reporter, SilentReporter
from sweep.search.retry import DatabasePatience, FailureCount, database_error, is_database_error
from sweep.search.samplers import make_sampler, operation_seed
from sweep.search.storage import SweepStorage, backend_of, optuna_storage

__all__ = ["Campaign", "PromotedModel", "PromotionHook", "open_storage", "run_campaign"]

# How long a worker waits before it looks again at operations whose slots are all RUNNING
# elsewhere: FIRST_WAIT_SECONDS, doubling up to WAIT_SECONDS while nothing changes. The
# first looks come soon because the usual case is the end of a sweep, where the last trials
# are about to finish and the sweep ends when this worker does (a flat 2 s wait made 2 local
# workers end 1-2 s after their last trial); a failed trial's slot is also taken sooner.
FIRST_WAIT_SECONDS = 0.1
WAIT_SECONDS = 2.0


@dataclass(frozen=True)
class PromotedModel:
    """A model that just entered the registry, while its trial still runs."""

    study: optuna.Study
    trial_number: int
    entry: ModelEntry
    model: TrainedModel
    dataset: Dataset


# Publishes a promoted model (the study note, artifacts); may raise SweepError, which is
# reported as a warning: the model is in the registry already.
PromotionHook = Callable[[PromotedModel], None]


class Campaign:
    """A validated campaign bound to a storage: datasets built, studies created or loaded.

    Opens Optuna's storage, a model registry and the named locks on one engine (on a server:
    one small pool, at most 2 connections per process); `close` (or ``with``) closes them.
    """

    def __init__(
        self,
        config: CampaignConfig,
        url: str,
        trainer: Trainer,
        *,
        on_promoted: PromotionHook | None = None,
        update_settings: bool = True,
        opened: tuple[SweepStorage, ModelRegistry] | None = None,
    ) -> None:
        """Validate, build datasets, then register the campaign and create its studies.

        `opened` is what `open_storage` returned (the campaign closes it); left out, the
        campaign opens it. `update_settings` stores this config's run settings (budgets,
        sampler, operations) over an existing campaign's, so workers that join later follow
        the newest `sweep run`.

        Raises:
            ConfigError: invalid settings, or an identity that conflicts with the stored one.
            storage.StorageError: the database cannot be reached or refuses a write.
        """
        config.validate()
        quiet_optuna()
        operations = config.resolved_operations()
        # Build every dataset before touching storage: an impossible range is refused up front.
        self.datasets: dict[str, Dataset] = {
            op.name: make_dataset(op, config.data) for op in operations
        }
        self.operations: list[Operation] = operations
        self.config = config
        self.url = url
        self.trainer = trainer
        self.on_promoted = on_promoted
        self.studies: dict[str, optuna.Study] = {}
        # Per operation: when this worker's time for it ends (its first trial + timeout).
        self._deadlines: dict[str, float] = {}
        self._failures: dict[str, FailureCount] = {}
        self._status: dict[str, OperationStatus] = {}
        self._storage: SweepStorage | None = None
        self._lock_engine: Any = None
        self._owns_lock_engine = False
        # Seconds this process spent waiting for slot locks (the scale benchmark's contention).
        self.slot_lock_seconds = 0.0
        self.trials_run = 0  # trials this process started (reserved a slot for)
        # Optuna's storage first: a database Optuna refuses (a newer schema, another
        # application's SQLite file, a full disk) must be refused before our tables or the
        # campaign row are written into it.
        self._storage, self.registry = opened if opened is not None else open_storage(url)
        try:
            self._open(update_settings)
        except BaseException:
            self.close()
            raise
        self._patience = DatabasePatience(
            check=lambda: check_reachable(self.url),
            patience=settings.current().database_patience,
        )
        self._promoter = Promoter(self.registry, trainer, config.name, config.objective)

    def _open(self, update_settings: bool) -> None:
        config = self.config
        stored = load_campaign_config(self.registry, config.name)
        if stored is not None:
            conflicts = config.identity_conflicts(stored)
            if conflicts:
                raise ConfigError(
                    f"campaign {config.name!r} already exists with a different "
                    f"{', '.join(conflicts)}; use --campaign NEW_NAME for a new campaign"
                )
        shared = self.registry.engine if self.registry.engine.dialect.name != "sqlite" else None
        self._owns_lock_engine = shared is None
        self._lock_engine = shared if shared is not None else create_engine(self.url)

        def merge(raw: dict[str, Any] | None) -> dict[str, Any] | None:
            """Decided in the registry's transaction: another run may have created the
            campaign since it was read above."""
            if raw is None:
                return config.to_dict()
            current = CampaignConfig.from_dict(raw)
            conflicts = config.identity_conflicts(current)
            if conflicts:
                raise ConfigError(
                    f"campaign {config.name!r} already exists with a different "
                    f"{', '.join(conflicts)}; use --campaign NEW_NAME for a new campaign"
                )
            return self._merged_config(current).to_dict() if update_settings else None

        self.registry.register_campaign(config.name, merge)
        self.studies = {op.name: self._study(op) for op in self.operations}

    @property
    def storage(self) -> SweepStorage:
        assert self._storage is not None, "the campaign is closed"
        return self._storage

    def close(self) -> None:
        """Release every connection the campaign opened; idempotent."""
        self.registry.close()
        if self._lock_engine is not None and self._owns_lock_engine:
            self._lock_engine.dispose()
        self._lock_engine = None
        self._close_storage()

    def _close_storage(self) -> None:
        if self._storage is not None:
            self._storage.remove_session()
            self._storage.engine.dispose()

    def __enter__(self) -> Campaign:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @classmethod
    def join(
        cls,
        url: str,
        name: str,
        trainer: Trainer,
        fallback: CampaignConfig | None = None,
        *,
        on_promoted: PromotionHook | None = None,
    ) -> Campaign:
        """A worker's view: the stored campaign, created from `fallback` if it does not exist.

        Several workers may start at once with the same `fallback`; the first one creates the
        campaign and the others join it (their fallback must agree on the campaign identity).
        """
        opened = open_storage(url)  # once: the campaign goes on with the same engine
        try:
            stored = load_campaign_config(opened[1], name)
            if stored is None and fallback is None:
                raise ConfigError(
                    f"campaign {name!r} does not exist on {mask_url(url)}; create it with "
                    "`sweep run` or pass --config FILE"
                )
            if stored is not None and fallback is not None:
                conflicts = fallback.identity_conflicts(stored)
                if conflicts:
                    raise ConfigError(
                        f"campaign {name!r} exists with a different {', '.join(conflicts)} "
                        "than --config gives"
                    )
            config = stored if stored is not None else fallback
            assert config is not None
            return cls(
                config, url, trainer, on_promoted=on_promoted, update_settings=False, opened=opened
            )
        except BaseException:
            _close_opened(opened)  # idempotent: a campaign that failed has closed it already
            raise

    def _merged_config(self, stored: CampaignConfig | None) -> CampaignConfig:
        if stored is None:
            return self.config
        ops = list(stored.operations)
        ops += [name for name in self.config.operations if name not in ops]
        expressions = {**stored.expressions, **self.config.expressions}
        return replace(self.config, operations=tuple(ops), expressions=expressions)

    def _slot_lock(self, study: optuna.Study) -> SlotLock:
        return _TimedLock(NamedLock(self._lock_engine, f"{study.study_name}:slots"), self)

    def _study(self, operation: Operation) -> optuna.Study:
        config = self.config
        space = config.space_for(operation.name)
        max_epochs = int(max(space.epochs.values()))
        directions: list[StudyDirection] = [StudyDirection.MINIMIZE] * (
            2 if config.multi_objective else 1
        )
        name = study_name(config.name, operation.name)
        if self._seeded(name):
            # Joining a study that is created and seeded: no slot lock (behind dozens of
            # reserving workers its wait could outlast the lock's timeout) and no load of
            # every trial to see whether it has any.
            study = optuna.load_study(
                study_name=name,
                storage=self.storage,
                sampler=make_sampler(config, operation.name),
                pruner=make_pruner(config, max_epochs),
            )
            # Load its trials into Optuna's cache now: the first trial needs them (WAITING
            # ones first, then the sampler all), and here the load overlaps the worker's
            # TensorFlow import (sweep.nets.background).
            study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        else:
            study = self._create_study(operation, name, max_epochs, directions)
        return self._checked(operation, study)

    def _seeded(self, name: str) -> bool:
        """The study exists and its attributes are written (`objective` is the last of them)."""
        try:
            study_id = self.storage.get_study_id_from_name(name)
        except KeyError:
            return False
        return "objective" in self.storage.get_study_user_attrs(study_id)

    def _create_study(
        self,
        operation: Operation,
        name: str,
        max_epochs: int,
        directions: list[StudyDirection],
    ) -> optuna.Study:
        config = self.config
        space = config.space_for(operation.name)
        # Under the study's slot lock: workers starting together create and seed it once.
        with NamedLock(self._lock_engine, f"{name}:slots"):
            study = optuna.create_study(
                storage=self.storage,
                study_name=name,
                sampler=make_sampler(config, operation.name),
                pruner=make_pruner(config, max_epochs),
                directions=directions,
                load_if_exists=True,
            )
            if config.startup_designs and not study.get_trials(deepcopy=False):
                designs = startup_designs(space)
                if config.trials is not None:
                    designs = designs[: config.trials]
                for params in designs:
                    study.enqueue_trial(params, user_attrs={"startup_design": True})
        return study

    def _checked(self, operation: Operation, study: optuna.Study) -> optuna.Study:
        """Refuse a study swept on other data; write its attributes on first use."""
        config = self.config
        name = study.study_name
        dataset = self.datasets[operation.name]
        recorded = study.user_attrs.get("data_fingerprint")
        if recorded is not None and recorded != dataset.fingerprint:
            # Another NumPy, or a changed generator: trials here would not be comparable.
            raise ConfigError(
                f"study {name!r} was swept on data with fingerprint {recorded[:12]}, but this "
                f"host generates {dataset.fingerprint[:12]} from the same settings; "
                "use the same package versions as the campaign's other workers"
            )
        if "operation" not in study.user_attrs:
            attrs: dict[str, Any] = {
                "campaign": config.name,
                "operation": operation.name,
                "expression": operation.expression,
                "arity": operation.arity,
                "integer_valued": operation.integer_valued,
                "seed": config.seed,
                "data": config.data.to_dict(),
                "data_fingerprint": dataset.fingerprint,
                "objective": f"validation {config.objective}",
            }
            for key, value in attrs.items():
                study.set_user_attr(key, value)
        return study

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
        return [e for e in self.registry.best_all(self.config.name) if e.operation in names]

    def run_operation(
        self, operation: Operation, reporter: Reporter, *, wait: bool = True
    ) -> OperationStatus:
        """Run trials for one operation until its budget is met, with any number of workers.

        Returns early (not done) when every remaining slot is RUNNING on other workers, and
        (`busy`) when another worker holds the operation's slot lock: with `wait` only after
        a first trial (the first reservation queues for the lock), else at once.
        """
        config = self.config
        study = self.studies[operation.name]
        status = self._started(operation, study, reporter)
        # Per operation across calls: this worker may leave and come back between trials.
        failures = self._failures.setdefault(operation.name, FailureCount())
        on_model = self._promotion_hook(operation, study, reporter)
        ran = False
        while True:
            raise_if_interrupted()
            deadline = self._deadlines.get(operation.name)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            reservation = self._patience.call(
                functools.partial(
                    reserve_slot, lambda: trial_counts(study), config.trials,
                    lambda: self._slot_lock(study), wait=wait and not ran,
                )
            )
            status.busy = isinstance(reservation, Busy)
            if isinstance(reservation, BudgetMet):
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
                self.datasets[operation.name],
                config.space_for(operation.name),
                self.trainer,
                objective=config.objective,
                multi_objective=config.multi_objective,
                max_trial_seconds=min(config.max_trial_seconds, remaining or math.inf),
                seed=operation_seed(config.seed, operation.name),
                on_model=on_model,
            )
            try:
                with _released_once_started(study, reservation.lock):
                    study.optimize(_trial_runner(objective, reservation.lock), n_trials=1)
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
            reporter.trial_finished(status)
        status.finished = self._patience.call(lambda: trial_counts(study)).counted
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
        dataset = self.datasets[operation.name]

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
            if self.on_promoted is None:
                return
            # While the trial is still RUNNING: Optuna refuses artifacts on a finished trial.
            try:
                self.on_promoted(PromotedModel(study, trial.number, entry, model, dataset))
            except SweepError as e:
                reporter.warning(f"{operation.name} trial {trial.number}: {e}")

        return on_model

    def _fail_stale(self, study: optuna.Study) -> None:
        self._patience.call(lambda: optuna.storages.fail_stale_trials(study))


class _TimedLock:
    """A slot lock that adds the time spent taking it to its campaign's `slot_lock_seconds`."""

    def __init__(self, lock: NamedLock, campaign: Campaign) -> None:
        self._lock = lock
        self._campaign = campaign

    def acquire(self) -> None:
        started = time.monotonic()
        try:
            self._lock.acquire()
        finally:
            self._campaign.slot_lock_seconds += time.monotonic() - started

    def try_acquire(self) -> bool:
        return self._lock.try_acquire()

    def release(self) -> None:
        self._lock.release()


def open_storage(url: str) -> tuple[SweepStorage, ModelRegistry]:
    """Optuna's storage and the model registry, sharing Optuna's engine on a server.

    One engine per process, so a worker's connections are bounded by one small pool
    (`storage.engine.SERVER_POOL_SIZE` + overflow), not three.
    """
    optuna_side = optuna_storage(url)
    try:
        engine = optuna_side.engine
        registry = ModelRegistry(url, engine=engine if engine.dialect.name != "sqlite" else None)
    except BaseException:
        optuna_side.remove_session()
        optuna_side.engine.dispose()
        raise
    return optuna_side, registry


def _close_opened(opened: tuple[SweepStorage, ModelRegistry]) -> None:
    optuna_side, registry = opened
    registry.close()
    optuna_side.remove_session()
    optuna_side.engine.dispose()


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


def _trial_runner(objective: Objective, lock: SlotLock) -> Callable[[optuna.Trial], Any]:
    """The function Optuna runs: the trial exists once it is called, so the slot lock goes
    (if the storage has not released it already)."""

    def run_trial(trial: optuna.Trial) -> Any:
        lock.release()
        try:
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


def run_campaign(
    config: CampaignConfig,
    url: str,
    trainer: Trainer,
    reporter: Reporter | None = None,
    *,
    on_promoted: PromotionHook | None = None,
) -> list[ModelEntry]:
    """Prepare and run a campaign, return the best model per operation; closes what it opens."""
    with Campaign(config, url, trainer, on_promoted=on_promoted) as campaign:
        return campaign.run(reporter)
