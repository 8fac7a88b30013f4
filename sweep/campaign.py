"""A campaign: one Optuna study per operation, its budget, and the loop that fills it.

Study names are ``<campaign>.<operation>`` (e.g. ``arith.multiply``), visible to
``optuna studies --storage URL`` and to optuna-dashboard.

Budget: a trial counts toward an operation's budget when it ends COMPLETE or PRUNED (pruned
includes diverged trials: they are an outcome of their hyperparameters). FAIL trials (crashes,
a worker killed mid-trial) do not count; they are retried. Re-running the same command resumes:
the budget is the total number of counted trials, not "this many more".
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import os
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar, cast

import keras
import optuna
from optuna.search_space.group_decomposed import (
    _GroupDecomposedSearchSpace,
    _SearchSpaceGroup,
)
from optuna.study import StudyDirection
from optuna.trial import TrialState

from storage import (
    ModelEntry,
    ModelRegistry,
    StorageError,
    StorageUnavailable,
    check_reachable,
    create_engine,
    enable_sqlite_wal,
    engine_options,
    mask_url,
)
from storage.locks import NamedLock
from sweep._optuna_storage import DATABASE_ERRORS, SweepStorage, backend_of
from sweep._signals import deferred_interrupts, interrupting_signal, raise_if_interrupted
from sweep.config import CampaignConfig
from sweep.dashboard import default_artifact_dir, publish_best
from sweep.data import Dataset, make_dataset
from sweep.errors import ConfigError, FatalSweepError, SweepError
from sweep.export import promote
from sweep.objective import Objective
from sweep.operations import Operation
from sweep.space import Dimension, SearchSpace

COUNTED_STATES: tuple[TrialState, ...] = (TrialState.COMPLETE, TrialState.PRUNED)
RESERVED_STATES: tuple[TrialState, ...] = (TrialState.RUNNING,)
WAIT_SECONDS = 2.0


def _seconds_from_env(name: str, default: float) -> float:
    """A positive number of seconds from the environment; the default when unset or invalid."""
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if math.isfinite(value) and value > 0 else default


# How long a worker rides out a lost database (server restart) before it gives up.
DATABASE_PATIENCE = _seconds_from_env("SWEEP_DATABASE_PATIENCE", 120.0)
_WAIT = object()
_T = TypeVar("_T")
_DATABASE_ERRORS = DATABASE_ERRORS
_DATABASE_RETRIES = 8
MAX_CONSECUTIVE_FAILURES = 5
# A worker killed mid-trial (SIGKILL, machine loss) stops beating; after the grace period any
# worker marks its trial FAIL and the retry callback queues a copy. Overridable for tests.
HEARTBEAT_INTERVAL = max(1, int(_seconds_from_env("SWEEP_HEARTBEAT_INTERVAL", 10)))
GRACE_PERIOD = max(1, int(_seconds_from_env("SWEEP_GRACE_PERIOD", 30)))


def study_name(campaign: str, operation: str) -> str:
    return f"{campaign}.{operation}"


@dataclass
class OperationStatus:
    """What a progress display needs after each trial."""

    operation: str
    study_name: str
    finished: int
    budget: int | None
    best_value: float | None
    last_state: str | None = None
    done: bool = False


class Reporter(Protocol):
    def operation_started(self, status: OperationStatus) -> None: ...
    def trial_finished(self, status: OperationStatus) -> None: ...
    def operation_finished(self, status: OperationStatus) -> None: ...
    def warning(self, message: str) -> None: ...


class SilentReporter:
    """Reporter for library use: collects warnings, shows nothing."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def operation_started(self, status: OperationStatus) -> None:
        pass

    def trial_finished(self, status: OperationStatus) -> None:
        pass

    def operation_finished(self, status: OperationStatus) -> None:
        pass

    def warning(self, message: str) -> None:
        self.warnings.append(message)


def open_optuna_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage with our engine options and heartbeats for crashed workers."""
    check_reachable(url)
    enable_sqlite_wal(url)
    # Optuna creates its tables on first use; workers starting together on a fresh database
    # would race on CREATE TABLE (PostgreSQL: duplicate pg_type rows), so serialise that step.
    engine = create_engine(url)
    try:
        with NamedLock(engine, "optuna-schema"):
            return SweepStorage(
                url,
                engine_kwargs=engine_options(url),
                heartbeat_interval=HEARTBEAT_INTERVAL,
                grace_period=GRACE_PERIOD,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=3
                ),
            )
    finally:
        engine.dispose()


def operation_seed(seed: int, operation: str) -> int:
    """A stable per-operation seed (Python's hash() is salted per process)."""
    digest = hashlib.sha256(f"{seed}:{operation}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def make_sampler(config: CampaignConfig, operation: str) -> optuna.samplers.BaseSampler:
    seed = operation_seed(config.seed, operation)
    name = config.sampler
    if name == "auto":
        name = "nsga2" if config.multi_objective else "tpe"
    if name == "tpe":
        sampler = _OneReadTPESampler(
            seed=seed, multivariate=True, group=True, n_startup_trials=8
        )
        sampler._group_decomposed_search_space = _IncrementalGroups(include_pruned=True)
        return sampler
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)
    if name == "cmaes":
        _require("cmaes", "cmaes", "cmaes")
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        _require("gp", "torch", "gp")
        return optuna.samplers.GPSampler(seed=seed)
    raise ConfigError(f"unknown sampler {name!r}")


class _OneReadTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPE (constant liar on, its default), without a reread of the study per group.

    With the constant liar, TPE rereads the study, running trials included, for every group
    of parameters: 4 reads of ~8 ms each per trial on PostgreSQL here. The read Optuna caches
    for this trial (made when its search space was inferred, milliseconds earlier, running
    trials included) serves every group instead.
    """

    def sample_relative(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        search_space: dict[str, optuna.distributions.BaseDistribution],
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        read = _SnapshotStudy(study, study._get_trials(deepcopy=False, use_cache=True))
        return super().sample_relative(cast(optuna.Study, read), trial, search_space)


class _IncrementalGroups(_GroupDecomposedSearchSpace):
    """Optuna's grouped search space, adding each finished trial's parameters once.

    Optuna's version re-adds every finished trial on every sample, from a fresh read of the
    study: ~25 ms per trial at 1000 trials (profiled on this machine). Adding a trial's
    parameter names twice leaves the groups as they were, so skipping the trials already
    added gives the same groups. The trials come from the per-trial cache the sampler reads
    anyway.
    """

    def __init__(self, include_pruned: bool) -> None:
        super().__init__(include_pruned)
        self._added: set[int] = set()

    def calculate(self, study: optuna.Study, use_cache: bool = False) -> _SearchSpaceGroup:
        states = COUNTED_STATES if self._include_pruned else (TrialState.COMPLETE,)
        for trial in study._get_trials(deepcopy=False, states=states, use_cache=True):
            if trial.number not in self._added:
                self._added.add(trial.number)
                self._search_space.add_distributions(trial.distributions)
        return copy.deepcopy(self._search_space)


def _require(sampler: str, module: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"sampler {sampler!r} needs the {module!r} package, which is not installed; "
            f"pip install 'neural-arithmetic-sweep[{extra}]' (see README for a CPU-only torch)"
        )


class _SnapshotStudy:
    """A study whose uncached trial reads return the trials of one earlier read; everything
    else (the per-trial cache, storage, directions) is the study's."""

    def __init__(self, study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> None:
        self._study = study
        self._trials = trials

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[optuna.trial.FrozenTrial]:
        return self._get_trials(deepcopy, states)

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[optuna.trial.FrozenTrial]:
        if use_cache:
            return self._study._get_trials(deepcopy, states, use_cache)
        trials = [t for t in self._trials if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class SnapshotPruner(optuna.pruners.BasePruner):
    """Asks its pruner with the study's trials as they were when the trial was sampled.

    A pruning check per epoch would otherwise reload the study's unfinished trials every
    epoch (~13 queries); the trials that finish elsewhere during one trial change a median
    little. With one worker the snapshot is exactly what a fresh read would return.
    """

    def __init__(self, pruner: optuna.pruners.BasePruner) -> None:
        self.pruner = pruner
        self._number: int | None = None
        self._trials: list[optuna.trial.FrozenTrial] = []

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if trial.number != self._number:
            # The trials the sampler read for this trial (Optuna caches them per trial, so
            # this is no extra read unless the sampler did not read any).
            self._trials = [
                t
                for t in study._get_trials(deepcopy=False, use_cache=True)
                if t.state.is_finished()
            ]
            self._number = trial.number
        return self.pruner.prune(cast(optuna.Study, _SnapshotStudy(study, self._trials)), trial)


def make_pruner(config: CampaignConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    if config.pruner == "median":
        return SnapshotPruner(optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5))
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=3, max_resource=max(max_epochs, 3))
    return optuna.pruners.NopPruner()


@dataclass(frozen=True)
class TrialCounts:
    counted: int  # COMPLETE + PRUNED: what the budget is measured in
    # counted + RUNNING: slots taken. WAITING trials (startup designs, retries of a dead
    # worker's trial) are not taken: Optuna hands them out before it creates a new trial, so
    # starting a trial while counted + RUNNING < budget never exceeds the budget.
    reserved: int
    last_state: str | None


def trial_counts(study: optuna.Study) -> TrialCounts:
    if backend_of(study) is not None:  # one aggregate query, not a load of the trials
        return progress(study)[0]
    trials = study.get_trials(deepcopy=False)
    counted = sum(t.state in COUNTED_STATES for t in trials)
    reserved = counted + sum(t.state in RESERVED_STATES for t in trials)
    return TrialCounts(counted, reserved, trials[-1].state.name if trials else None)


def counted_trials(study: optuna.Study) -> int:
    return trial_counts(study).counted


def progress(study: optuna.Study) -> tuple[TrialCounts, float | None]:
    """Counts and best value together: one summary query on a SweepStorage."""
    backend = backend_of(study)
    if backend is None:
        return trial_counts(study), best_value(study)
    summary = backend.summary(study._study_id)
    counted = summary.count(*COUNTED_STATES)
    last = summary.last_state.name if summary.last_state is not None else None
    counts = TrialCounts(counted, counted + summary.count(*RESERVED_STATES), last)
    return counts, summary.best_value


def best_value(study: optuna.Study) -> float | None:
    backend = backend_of(study)
    if backend is not None:
        return backend.summary(study._study_id).best_value
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    values = [t.values[0] for t in trials if t.values and math.isfinite(t.values[0])]
    return min(values) if values else None


# Linear models under each normalisation pair, tried first in every study (the same list for
# every operation: the objective, not the code, decides which pair fits which operation).
# A linear model with a closing least-squares fit is exact for add and subtract without
# normalisation, and for multiply, divide, square and sqrt in the log_abs domain.
_DESIGN_PAIRS: tuple[tuple[str, str], ...] = (
    ("none", "none"),
    ("log_abs", "log_abs"),
    ("standard", "standard"),
    ("log", "log"),
)


def startup_designs(space: SearchSpace) -> list[dict[str, Any]]:
    """The startup designs that fit in `space`, as Optuna params (fixed dimensions left out)."""
    if 0 not in _layer_values(space):
        return []
    preferred = {
        "loss": "mse",
        "lr_schedule": "cosine",
        "refit_output": True,
    }
    base: dict[str, Any] = {}
    if not space.layers.is_fixed:
        base["layers"] = 0
    for dim_name, value in preferred.items():
        dim: Dimension = getattr(space, dim_name)
        if dim.is_fixed:
            continue
        if value not in dim.values():
            return []  # the user narrowed the space away from these designs
        base[dim_name] = value
    if not space.learning_rate.is_fixed:
        low, high = space.learning_rate.values()
        base["learning_rate"] = min(max(0.01, float(low)), float(high))
    if not space.batch_size.is_fixed:
        base["batch_size"] = max(space.batch_size.values())
    if not space.precision.is_fixed:
        base["precision"] = "float64" if "float64" in space.precision.values() else None
    designs = []
    for input_scheme, target_scheme in _DESIGN_PAIRS:
        inputs, targets = space.input_normalization, space.target_normalization
        if input_scheme not in inputs.values() or target_scheme not in targets.values():
            continue
        params = dict(base)
        if not inputs.is_fixed:
            params["input_normalization"] = input_scheme
        if not targets.is_fixed:
            params["target_normalization"] = target_scheme
        designs.append({k: v for k, v in params.items() if v is not None})
    return designs


def _layer_values(space: SearchSpace) -> range | tuple[Any, ...]:
    if space.layers.choices is not None:
        return space.layers.choices
    low, high = space.layers.values()
    return range(int(low), int(high) + 1)


def load_campaign_config(registry: ModelRegistry, name: str) -> CampaignConfig | None:
    stored = registry.load_campaign(name)
    return CampaignConfig.from_dict(stored) if stored is not None else None


class Campaign:
    """A validated campaign bound to a storage: datasets built, studies created or loaded."""

    def __init__(
        self, config: CampaignConfig, url: str, *, update_settings: bool = True
    ) -> None:
        """Validate, build datasets, then register the campaign and create its studies.

        `update_settings` stores this config's run settings (budgets, sampler, operations)
        over an existing campaign's, so workers that join later follow the newest `sweep run`.
        """
        config.validate()
        operations = config.resolved_operations()
        # Build every dataset before touching storage: an impossible range is refused up front.
        self.datasets: dict[str, Dataset] = {
            op.name: make_dataset(op, config.data) for op in operations
        }
        self.operations: list[Operation] = operations
        self.config = config
        self.url = url
        self.registry = ModelRegistry(url)
        stored = load_campaign_config(self.registry, config.name)
        if stored is not None:
            conflicts = config.identity_conflicts(stored)
            if conflicts:
                raise ConfigError(
                    f"campaign {config.name!r} already exists with a different "
                    f"{', '.join(conflicts)}; use --campaign NEW_NAME for a new campaign"
                )
        self.storage = open_optuna_storage(url)
        self._lock_engine = create_engine(url)
        # Shared with the dashboard (`sweep dashboard --artifacts`, the compose volume).
        self.artifact_dir = default_artifact_dir()
        self._deadlines: dict[str, float | None] = {}
        self._database_errors = 0
        self._status: dict[str, OperationStatus] = {}
        merged = self._merged_config(stored).to_dict()
        if not self.registry.save_campaign(config.name, merged) and update_settings:
            self.registry.update_campaign(config.name, merged)
        self.studies: dict[str, optuna.Study] = {
            op.name: self._study(op) for op in operations
        }

    @classmethod
    def join(cls, url: str, name: str, fallback: CampaignConfig | None = None) -> Campaign:
        """A worker's view: the stored campaign, created from `fallback` if it does not exist.

        Several workers may start at once with the same `fallback`; the first one creates the
        campaign and the others join it (their fallback must agree on the campaign identity).
        """
        with ModelRegistry(url) as registry:
            stored = load_campaign_config(registry, name)
        if stored is None:
            if fallback is None:
                raise ConfigError(
                    f"campaign {name!r} does not exist on {mask_url(url)}; create it with "
                    "`sweep run` or pass --config FILE"
                )
            return cls(fallback, url, update_settings=False)
        if fallback is not None:
            conflicts = fallback.identity_conflicts(stored)
            if conflicts:
                raise ConfigError(
                    f"campaign {name!r} exists with a different {', '.join(conflicts)} than "
                    "--config gives"
                )
        return cls(stored, url, update_settings=False)

    def _merged_config(self, stored: CampaignConfig | None) -> CampaignConfig:
        if stored is None:
            return self.config
        ops = list(stored.operations)
        ops += [name for name in self.config.operations if name not in ops]
        expressions = {**stored.expressions, **self.config.expressions}
        return replace(self.config, operations=tuple(ops), expressions=expressions)

    def _study(self, operation: Operation) -> optuna.Study:
        config = self.config
        space = config.space_for(operation.name)
        max_epochs = int(max(space.epochs.values()))
        directions: list[StudyDirection] = [StudyDirection.MINIMIZE] * (
            2 if config.multi_objective else 1
        )
        name = study_name(config.name, operation.name)
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
        while pending:
            for operation in list(pending):
                if self.run_operation(operation, reporter).done:
                    pending.remove(operation)
            if pending:
                for operation in pending:
                    self._fail_stale(self.studies[operation.name])
                time.sleep(WAIT_SECONDS)
        return self.best()

    def best(self) -> list[ModelEntry]:
        names = {op.name for op in self.operations}
        return [e for e in self.registry.best_all(self.config.name) if e.operation in names]

    def run_operation(self, operation: Operation, reporter: Reporter) -> OperationStatus:
        """Run trials for one operation until its budget is met, with any number of workers.

        A trial slot is reserved under the study's named lock: the lock is held while Optuna
        creates (or dequeues) the trial and released as soon as the objective starts, so
        RUNNING trials count as taken and K workers never overshoot the budget.
        """
        config = self.config
        study = self.studies[operation.name]
        dataset = self.datasets[operation.name]
        if operation.name not in self._deadlines:
            self._deadlines[operation.name] = (
                time.monotonic() + config.timeout if config.timeout else None
            )
            counts, best = self._with_database(lambda: progress(study))
            self._status[operation.name] = OperationStatus(
                operation.name, study.study_name, counts.counted, config.trials, best
            )
            reporter.operation_started(self._status[operation.name])
        deadline = self._deadlines[operation.name]
        status = self._status[operation.name]
        failures = 0
        on_model = self._promotion_hook(operation, study, dataset, reporter)
        while True:
            raise_if_interrupted()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            slot = self._with_database(lambda: self._reserve(study))
            if slot is None:  # budget met
                break
            if slot is _WAIT:
                # Every remaining slot is RUNNING elsewhere. Come back later: a dead worker's
                # trial turns stale after the grace period and is retried.
                return status
            assert isinstance(slot, NamedLock | _NoLock)
            lock = slot
            objective = Objective(
                dataset,
                config.space_for(operation.name),
                objective=config.objective,
                multi_objective=config.multi_objective,
                max_trial_seconds=min(config.max_trial_seconds, remaining or math.inf),
                seed=operation_seed(config.seed, operation.name),
                on_model=on_model,
            )

            def run_trial(
                trial: optuna.Trial,
                objective: Objective = objective,
                lock: NamedLock | _NoLock = lock,
            ) -> Any:
                lock.release()  # the trial exists now: the slot is reserved
                try:
                    with deferred_interrupts():  # stops at the next epoch, from Python code
                        return objective(trial)
                except optuna.TrialPruned:
                    raise
                except BaseException as e:  # Ctrl-C and SIGTERM too: the trial ends FAIL
                    _record_failure(trial, e)
                    raise

            try:
                study.optimize(run_trial, n_trials=1)
            except FatalSweepError:
                raise
            except (*_DATABASE_ERRORS, StorageUnavailable) as e:
                self._database_trouble(operation, e, reporter)
                continue
            except StorageError:
                raise
            except Exception as e:  # a crashed trial: Optuna has marked it FAIL already
                raise_if_interrupted()  # a signal can surface as another exception type
                lost = _database_error(e)  # Optuna may hide a lost database behind its own error
                if lost is not None:
                    self._database_trouble(operation, lost, reporter)
                    continue
                failures += 1
                reporter.warning(f"{operation.name}: trial failed: {_one_line(e)}")
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    raise FatalSweepError(
                        f"{operation.name}: {failures} trials in a row failed; last error: "
                        f"{_one_line(e)}"
                    ) from e
            else:
                failures = 0
                self._database_errors = 0
            finally:
                lock.release()
            counts, status.best_value = self._with_database(lambda: progress(study))
            status.finished = counts.counted
            status.last_state = counts.last_state
            reporter.trial_finished(status)
        status.finished = self._with_database(lambda: trial_counts(study)).counted
        status.done = True
        reporter.operation_finished(status)
        return status

    def _database_trouble(
        self, operation: Operation, error: BaseException, reporter: Reporter
    ) -> None:
        """Wait for a lost database; give up when errors persist with the database reachable
        (e.g. a value the database refuses), instead of retrying forever."""
        self._database_errors += 1
        if self._database_errors > _DATABASE_RETRIES:
            raise FatalSweepError(
                f"{operation.name}: {self._database_errors - 1} database errors in a row; "
                f"last: {_one_line(error)}"
            ) from error
        reporter.warning(f"{operation.name}: database error, retrying: {_one_line(error)}")
        self._wait_for_database()
        time.sleep(min(0.5 * 2 ** (self._database_errors - 1), 10.0))

    def _reserve(self, study: optuna.Study) -> NamedLock | _NoLock | object | None:
        """A held lock when a slot is free, `_WAIT` when all are reserved, None when done."""
        budget = self.config.trials
        if budget is None:  # a time budget only: nothing to count, nothing to lock
            return _NoLock()
        counts = trial_counts(study)
        if counts.counted >= budget:
            return None
        if counts.reserved >= budget:
            return _WAIT
        lock = NamedLock(self._lock_engine, f"{study.study_name}:slots")
        lock.acquire()
        try:
            counts = trial_counts(study)  # again, under the lock
        except BaseException:
            lock.release()
            raise
        if counts.counted >= budget:
            lock.release()
            return None
        if counts.reserved >= budget:
            lock.release()
            return _WAIT
        return lock

    def _promotion_hook(
        self, operation: Operation, study: optuna.Study, dataset: Dataset, reporter: Reporter
    ) -> Callable[[optuna.Trial, keras.Model, dict[str, float]], None]:
        config = self.config

        def on_model(trial: optuna.Trial, model: keras.Model, metrics: dict[str, float]) -> None:
            try:
                entry = promote(
                    self.registry,
                    campaign=config.name,
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
                    objective=config.objective,
                )
            except (SweepError, StorageError, OSError) as e:
                trial.set_user_attr("promotion_error", str(e))
                reporter.warning(f"{operation.name} trial {trial.number}: not promoted: {e}")
                return
            if entry is None:
                return
            trial.set_user_attr("registry_version", entry.version)
            # While the trial is still RUNNING: Optuna refuses artifacts on a finished trial.
            try:
                publish_best(study, trial.number, entry, model, dataset, self.artifact_dir)
            except SweepError as e:
                reporter.warning(f"{operation.name} trial {trial.number}: {e}")

        return on_model

    def _fail_stale(self, study: optuna.Study) -> None:
        self._with_database(lambda: optuna.storages.fail_stale_trials(study))

    def _with_database(self, action: Callable[[], _T]) -> _T:
        """Run a storage call, riding out a dropped connection or a database restart."""
        for attempt in range(_DATABASE_RETRIES):
            try:
                return action()
            except (*_DATABASE_ERRORS, StorageUnavailable):
                if attempt == _DATABASE_RETRIES - 1:
                    raise
                self._wait_for_database()
                time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait_for_database(self) -> None:
        """Back off until the database answers again, up to `DATABASE_PATIENCE` seconds."""
        deadline = time.monotonic() + DATABASE_PATIENCE
        delay = 0.5
        while True:
            try:
                check_reachable(self.url)
                return
            except StorageError as e:
                if time.monotonic() + delay > deadline:
                    raise StorageUnavailable(
                        f"gave up after {DATABASE_PATIENCE:g} s without the database: {e}"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 10.0)


class _NoLock:
    def release(self) -> None:
        pass


def _record_failure(trial: optuna.Trial, error: BaseException) -> None:
    """Store why a trial failed on the trial itself (Optuna 5 only logs the reason)."""
    signal_name = interrupting_signal()
    reason = f"interrupted by {signal_name}" if signal_name else _one_line(error)
    with contextlib.suppress(Exception):  # the database itself may be what failed
        trial.set_user_attr("fail_reason", reason)


def _database_error(error: BaseException) -> BaseException | None:
    """The innermost database error in `error`'s chain of causes and contexts, if any.

    Innermost, because Optuna wraps a dropped connection in a StorageInternalError whose own
    message blames "invalid data in the commit".
    """
    seen: set[int] = set()
    found: BaseException | None = None
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, (*_DATABASE_ERRORS, StorageUnavailable)):
            found = current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return found


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


def run_campaign(
    config: CampaignConfig, url: str, reporter: Reporter | None = None
) -> list[ModelEntry]:
    """Public entry point: prepare and run a campaign, return the best model per operation."""
    return Campaign(config, url).run(reporter)


def summary_rows(entries: Sequence[ModelEntry]) -> list[dict[str, Any]]:
    """The `best` table / JSON: one object per operation, from registry entries."""
    rows = []
    for entry in entries:
        m: Callable[[str], float | None] = entry.metrics.get
        rows.append(
            {
                "operation": entry.operation,
                "campaign": entry.campaign,
                "study": entry.study_name,
                "trial": entry.trial_number,
                "version": entry.version,
                "params": entry.params,
                "architecture": entry.params.get("architecture"),
                "mae": m("test_mae"),
                "median_relative_error": m("test_median_relative_error"),
                "hit_rate": m("test_hit_rate"),
                "extrapolation_mae": m("extrapolation_mae"),
                "extrapolation_median_relative_error": m("extrapolation_median_relative_error"),
                "extrapolation_hit_rate": m("extrapolation_hit_rate"),
                "validation_objective": entry.objective_value,
            }
        )
    return rows
