"""A campaign: one Optuna study per operation, its budget, and the loop that fills it.

Study names are ``<campaign>.<operation>`` (e.g. ``arith.multiply``), visible to
``optuna studies --storage URL`` and to optuna-dashboard.

Budget: a trial counts toward an operation's budget when it ends COMPLETE or PRUNED (pruned
includes diverged trials: they are an outcome of their hyperparameters). FAIL trials (crashes,
a worker killed mid-trial) do not count; they are retried. Re-running the same command resumes:
the budget is the total number of counted trials, not "this many more".
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import keras
import optuna
from optuna.trial import TrialState

from storage import ModelEntry, ModelRegistry, StorageError, check_reachable, engine_options
from sweep.config import CampaignConfig
from sweep.data import Dataset, make_dataset
from sweep.errors import ConfigError, FatalSweepError, SweepError
from sweep.export import promote
from sweep.objective import Objective
from sweep.operations import Operation

COUNTED_STATES: tuple[TrialState, ...] = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_CONSECUTIVE_FAILURES = 5
HEARTBEAT_INTERVAL = 10
GRACE_PERIOD = 30


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
    return optuna.storages.RDBStorage(
        url,
        engine_kwargs=engine_options(url),
        heartbeat_interval=HEARTBEAT_INTERVAL,
        grace_period=GRACE_PERIOD,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
            max_retry=3
        ),
    )


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
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, n_startup_trials=8
        )
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


def _require(sampler: str, module: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"sampler {sampler!r} needs the {module!r} package, which is not installed; "
            f"pip install 'neural-arithmetic-sweep[{extra}]' (see README for a CPU-only torch)"
        )


def make_pruner(config: CampaignConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    if config.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5)
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=3, max_resource=max(max_epochs, 3))
    return optuna.pruners.NopPruner()


def counted_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED_STATES))


def best_value(study: optuna.Study) -> float | None:
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    values = [t.values[0] for t in trials if t.values and math.isfinite(t.values[0])]
    return min(values) if values else None


def load_campaign_config(registry: ModelRegistry, name: str) -> CampaignConfig | None:
    stored = registry.load_campaign(name)
    return CampaignConfig.from_dict(stored) if stored is not None else None


class Campaign:
    """A validated campaign bound to a storage: datasets built, studies created or loaded."""

    def __init__(self, config: CampaignConfig, url: str) -> None:
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
        self.registry.save_campaign(config.name, self._merged_config(stored).to_dict())
        self.studies: dict[str, optuna.Study] = {
            op.name: self._study(op) for op in operations
        }

    def _merged_config(self, stored: CampaignConfig | None) -> CampaignConfig:
        if stored is None:
            return self.config
        ops = list(stored.operations)
        ops += [name for name in self.config.operations if name not in ops]
        expressions = {**stored.expressions, **self.config.expressions}
        from dataclasses import replace

        return replace(self.config, operations=tuple(ops), expressions=expressions)

    def _study(self, operation: Operation) -> optuna.Study:
        config = self.config
        space = config.space_for(operation.name)
        max_epochs = int(max(space.epochs.values()))
        directions = ["minimize", "minimize"] if config.multi_objective else ["minimize"]
        study = optuna.create_study(
            storage=self.storage,
            study_name=study_name(config.name, operation.name),
            sampler=make_sampler(config, operation.name),
            pruner=make_pruner(config, max_epochs),
            directions=directions,
            load_if_exists=True,
        )
        if "operation" not in study.user_attrs:
            dataset = self.datasets[operation.name]
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
        """Fill every operation's budget in turn; returns the registry's best per operation."""
        reporter = reporter or SilentReporter()
        for operation in self.operations:
            self.run_operation(operation, reporter)
        return self.best()

    def best(self) -> list[ModelEntry]:
        names = {op.name for op in self.operations}
        return [e for e in self.registry.best_all(self.config.name) if e.operation in names]

    def run_operation(self, operation: Operation, reporter: Reporter) -> OperationStatus:
        config = self.config
        study = self.studies[operation.name]
        dataset = self.datasets[operation.name]
        deadline = time.monotonic() + config.timeout if config.timeout else None
        status = OperationStatus(
            operation.name, study.study_name, counted_trials(study), config.trials,
            best_value(study),
        )
        reporter.operation_started(status)
        failures = 0

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
            if entry is not None:
                trial.set_user_attr("registry_version", entry.version)

        while True:
            if config.trials is not None and status.finished >= config.trials:
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            objective = Objective(
                dataset,
                config.space_for(operation.name),
                objective=config.objective,
                multi_objective=config.multi_objective,
                max_trial_seconds=min(config.max_trial_seconds, remaining or math.inf),
                seed=operation_seed(config.seed, operation.name),
                on_model=on_model,
            )
            try:
                study.optimize(objective, n_trials=1)
            except (FatalSweepError, StorageError):
                raise
            except Exception as e:  # a crashed trial: Optuna has marked it FAIL already
                failures += 1
                reporter.warning(f"{operation.name}: trial failed: {_one_line(e)}")
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    raise FatalSweepError(
                        f"{operation.name}: {failures} trials in a row failed; last error: "
                        f"{_one_line(e)}"
                    ) from e
            else:
                failures = 0
            trials = study.get_trials(deepcopy=False)
            last = trials[-1] if trials else None
            status.finished = counted_trials(study)
            status.best_value = best_value(study)
            status.last_state = last.state.name if last is not None else None
            reporter.trial_finished(status)
        reporter.operation_finished(status)
        return status


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
