"""One trial: suggest a spec, train it (through the networks' `Trainer`), report, prune, record.

Failure taxonomy (after KerasTuner): a trial that diverges or produces non-finite predictions
is an *outcome* of its hyperparameters: it ends PRUNED with the reason in its user attributes
and counts toward the budget. Any other exception marks the trial FAIL (Optuna records it) and
the campaign decides whether too many failures in a row are fatal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import socket
import time
from collections.abc import Callable

import numpy as np
import optuna

from sweep.errors import TrialFailure
from sweep.nets import ModelSpec, TrainedModel, Trainer
from sweep.nets.formula import with_input_names
from sweep.problem.data import Dataset
from sweep.problem.metrics import Metrics, evaluate, evaluate_splits
from sweep.search._optuna.internals import trial_id
from sweep.search._signals import raise_if_interrupted
from sweep.search.space import SearchSpace
from sweep.search.storage import DATABASE_ERRORS, SweepStorage, backend_of

# Which host and process ran a trial: for users chasing a slow or crashed worker.
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"

# Reports are buffered (sweep.search._optuna.storage); written at least this often so the
# dashboard shows a running trial's curve while it trains.
FLUSH_SECONDS = 5.0

# Called with a trained model that passed its evaluation, while its trial still runs.
ModelHook = Callable[[optuna.Trial, TrainedModel, dict[str, float]], None]
ObjectiveValue = float | tuple[float, float]


def objective_metric(metrics: Metrics, objective: str) -> float:
    value = metrics.mae if objective == "mae" else metrics.median_relative_error
    return value if math.isfinite(value) else math.inf


class Objective:
    """Callable objective for one operation's study."""

    def __init__(
        self,
        dataset: Dataset,
        space: SearchSpace,
        trainer: Trainer,
        *,
        objective: str = "mae",
        multi_objective: bool = False,
        max_trial_seconds: float = 120.0,
        seed: int = 0,
        on_model: ModelHook | None = None,
    ) -> None:
        self.dataset = dataset
        self.space = space
        self.trainer = trainer
        self.objective = objective
        self.multi_objective = multi_objective
        self.max_trial_seconds = max_trial_seconds
        self.seed = seed
        self.on_model = on_model

    def __call__(self, trial: optuna.Trial) -> ObjectiveValue:
        spec = self.space.suggest(trial)
        arity = self.dataset.operation.arity
        trial.set_user_attr("worker", WORKER_ID)
        trial.set_user_attr("architecture", spec.architecture(arity))
        trial.set_user_attr("parameters", spec.parameter_count(arity))
        trial.set_user_attr("model_spec", dataclasses.asdict(spec))
        storage = backend_of(trial.study)
        if storage is not None:
            # Parameters now, not with the result: a worker killed mid-trial leaves them for
            # the retry of its trial.
            storage.flush(trial_id(trial))
        clock = _TrialClock(time.monotonic())
        try:
            return self._run(trial, spec, clock, storage)
        except TrialFailure as failure:
            trial.set_user_attr("pruned_reason", str(failure))
            raise optuna.TrialPruned(str(failure)) from failure
        finally:
            # Pruned and failed trials too: the share of time outside training is measured
            # over every trial (BENCHMARKS.md).
            trial.set_user_attr("train_seconds", round(clock.training(), 3))
            trial.set_user_attr("storage_seconds", round(clock.storage, 3))
            if storage is not None:
                # The trial's writes inside the objective, as Optuna's own storage makes them:
                # a trial another worker failed as stale meanwhile refuses them here, and Optuna
                # ends this one as it would (not with its "Should not reach" assertion). A
                # lost database keeps them for the trial's end.
                with contextlib.suppress(*DATABASE_ERRORS):
                    storage.flush(trial_id(trial))

    def _run(
        self,
        trial: optuna.Trial,
        spec: ModelSpec,
        clock: _TrialClock,
        storage: SweepStorage | None,
    ) -> ObjectiveValue:
        data = self.dataset
        integer = data.operation.integer_valued
        flushed = [time.monotonic()]

        def on_epoch(epoch: int, predictions: np.ndarray) -> None:
            raise_if_interrupted()  # Ctrl-C or SIGTERM arrived during this epoch
            value = objective_metric(evaluate(predictions, data.y_val, integer), self.objective)
            if not math.isfinite(value):
                raise TrialFailure(f"diverged: non-finite validation error at epoch {epoch + 1}")
            # Optuna cannot prune multi-objective studies; only report for single objective.
            if self.multi_objective:
                return
            started = time.monotonic()
            try:
                trial.report(value, epoch)
                if storage is not None and started - flushed[0] >= FLUSH_SECONDS:
                    storage.flush(trial_id(trial))
                    flushed[0] = started
                prune = trial.should_prune()
            finally:
                clock.storage += time.monotonic() - started
            if prune:
                trial.set_user_attr("pruned_reason", f"pruned at epoch {epoch + 1}")
                raise optuna.TrialPruned(f"validation {self.objective} {value:.6g}")

        result = self.trainer.train(
            spec,
            data.x_train,
            data.y_train,
            data.x_val,
            data.y_val,
            on_epoch=on_epoch,
            max_seconds=self.max_trial_seconds,
            seed=self.seed + trial.number,
        )
        metrics = evaluate_splits(result.predict, data)
        clock.trained()
        trial.set_user_attr("epochs_run", result.epochs_run)
        trial.set_user_attr("refitted_output", result.refitted)
        # Optional in a trained model: a family that finds its structure (a formula) says it.
        found = getattr(result, "structure", None)
        structure = with_input_names(found if isinstance(found, str) else None,
                                     data.operation.inputs)
        if structure:
            # What a formula trial found is its architecture: shown by best, notes, report.
            trial.set_user_attr("structure", structure)
            trial.set_user_attr(
                "architecture", f"{spec.architecture(data.operation.arity)}: {structure}"
            )
        if result.stopped_reason:
            trial.set_user_attr("stopped_reason", result.stopped_reason)
        for key, value in metrics.items():
            # JSON has no inf: store None so the dashboard and `best --json` stay valid.
            trial.set_user_attr(key, value if math.isfinite(value) else None)
        value = metrics[f"val_{self.objective}"]
        if not math.isfinite(value):
            raise TrialFailure("diverged: non-finite validation error after training")
        if self.on_model is not None:
            self.on_model(trial, result, metrics)
        if self.multi_objective:
            return value, float(spec.parameter_count(data.operation.arity))
        return value


@dataclasses.dataclass
class _TrialClock:
    """Where a trial's time went: model work (build, fit, refit, evaluation) and the storage
    calls made from inside training (reports, pruning checks), which are not model work."""

    started: float
    storage: float = 0.0
    ended: float | None = None

    def trained(self) -> None:
        self.ended = time.monotonic()

    def training(self) -> float:
        end = self.ended if self.ended is not None else time.monotonic()
        return max(0.0, end - self.started - self.storage)
