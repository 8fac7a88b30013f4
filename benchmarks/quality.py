"""Model quality per operation: the original network, KerasTuner and our sweep, same data and
the same wall-clock budget, measured one after the other in one process.

All three are judged by the same code (`sweep.problem.metrics.evaluate_splits`) on the same held-out
test pairs and extrapolation band, so the only differences are the model and how it was found.
"""

from __future__ import annotations

import functools
import math
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import optuna

import sweep.nets.training
from benchmarks._common import load_average, log, median
from storage import ModelRegistry
from sweep.nets.saving import load_model_bytes
from sweep.nets.training import KerasPredictor, predict
from sweep.problem.data import Dataset, DataSpec, make_dataset
from sweep.problem.metrics import evaluate_splits
from sweep.problem.operations import resolve_operations
from sweep.search.campaign import Campaign
from sweep.search.config import CampaignConfig

OPERATIONS: tuple[str, ...] = ("add", "subtract", "multiply", "divide", "square", "sqrt")
# The metrics every table shows: in-range = unseen test pairs, extrapolation = [high, 2*high).
REPORTED: tuple[str, ...] = (
    "test_hit_rate",
    "test_median_relative_error",
    "test_mae",
    "extrapolation_hit_rate",
    "extrapolation_median_relative_error",
    "extrapolation_mae",
)
CAMPAIGN = "bench"
HIT_TARGET = 0.99


@dataclass
class MethodResult:
    """One method on one operation: metrics of its final (or median) model."""

    method: str
    runs: int  # models trained (original) or trials run (KerasTuner, sweep)
    wall_seconds: float
    metrics: dict[str, float]
    note: str = ""


@dataclass
class OperationQuality:
    operation: str
    budget: float
    methods: list[MethodResult]
    # Our sweep only: throughput and where its wall time went.
    sweep_trials: int = 0
    sweep_trials_per_minute: float = math.nan
    # Where the sweep's wall time went, measured by timing calls in this process (see
    # `_timed_calls`): inside `sweep.nets.training.train`, and within it the per-epoch
    # report/should_prune.
    sweep_train_call_seconds: float = math.nan
    sweep_epoch_storage_seconds: float = math.nan
    sweep_sampling_seconds: float = math.nan
    seconds_to_hit_target: float | None = None
    best_architecture: str = ""
    load_before: str = ""
    load_after: str = ""

    def method(self, name: str) -> MethodResult:
        return next(m for m in self.methods if m.method == name)

    @property
    def sweep_training_seconds(self) -> float:
        """Time in `sweep.nets.training.train`, less the pruning reports made from inside it."""
        return self.sweep_train_call_seconds - self.sweep_epoch_storage_seconds

    @property
    def sweep_outside_training_share(self) -> float:
        wall = self.method(SWEEP).wall_seconds
        return 1.0 - self.sweep_training_seconds / wall if wall > 0 else math.nan


ORIGINAL = "original network"
KERAS_TUNER = "KerasTuner"
SWEEP = "our sweep"
METHODS: tuple[str, ...] = (ORIGINAL, KERAS_TUNER, SWEEP)


def _nan_metrics() -> dict[str, float]:
    return {key: math.nan for key in REPORTED}


def _reported(metrics: dict[str, float]) -> dict[str, float]:
    return {key: float(metrics.get(key, math.nan)) for key in REPORTED}


# --- the original question's network ------------------------------------------------------


def _answers(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return predict(model, x)


def original_network(arity: int) -> keras.Model:
    """The network exactly as posted: 2-3-5-3-5-1, linear first layer, relu after (incl. output)."""
    with warnings.catch_warnings():
        # Keras 3 prefers keras.Input over input_dim; kept as posted, the warning is noise.
        warnings.simplefilter("ignore", UserWarning)
        model = keras.Sequential(
            [
                keras.layers.Dense(3, input_dim=arity),
                keras.layers.Dense(5, activation="relu"),
                keras.layers.Dense(3, activation="relu"),
                keras.layers.Dense(5, activation="relu"),
                keras.layers.Dense(1, activation="relu"),
            ]
        )
    model.compile(optimizer="adam", loss="mse")
    return model


def run_original(dataset: Dataset, budget: float) -> MethodResult:
    """Train the posted recipe with fresh seeds until the budget is spent; median per metric.

    A new run starts only if it is expected to finish within the budget (at least one runs).
    """
    x = np.asarray(dataset.x_train, dtype=np.float32)
    y = np.asarray(dataset.y_train, dtype=np.float32)
    started = time.monotonic()
    runs: list[dict[str, float]] = []
    durations: list[float] = []
    seed = 0
    while True:
        elapsed = time.monotonic() - started
        if runs and elapsed + statistics.median(durations) > budget:
            break
        run_started = time.monotonic()
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        model = original_network(dataset.arity)
        model.fit(x, y, epochs=10, batch_size=10, verbose=0)
        runs.append(_reported(evaluate_splits(KerasPredictor(model).predict, dataset)))
        durations.append(time.monotonic() - run_started)
        seed += 1
    metrics = {key: median(run[key] for run in runs) for key in REPORTED}
    return MethodResult(
        ORIGINAL,
        runs=len(runs),
        wall_seconds=time.monotonic() - started,
        metrics=metrics,
        note=f"median of {len(runs)} seeds, {statistics.median(durations):.1f} s per run",
    )


# --- KerasTuner -----------------------------------------------------------------------------


class _Deadline(keras.callbacks.Callback):
    """Stop training at the first epoch end past the deadline (as our sweep cuts its trial)."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if time.monotonic() > self.deadline:
            self.model.stop_training = True


def run_keras_tuner(
    dataset: Dataset, budget: float, *, epochs: int, steps_per_execution: int, workdir: Path
) -> MethodResult:
    """KerasTuner's RandomSearch over a space like ours, on raw data, stopped by the clock.

    Same layers/width/activation/learning-rate/batch ranges as our default space but no
    normalisation, loss MSE, objective val_loss. It gets our `steps_per_execution` so the
    comparison measures the search and the space, not a compile flag.
    """
    import keras_tuner

    arity = dataset.arity
    activations = ["relu", "tanh", "elu", "gelu", "selu", "swish", "linear"]

    class RawMLP(keras_tuner.HyperModel):
        def build(self, hp: Any) -> keras.Model:
            layers = hp.Int("layers", 0, 3)
            activation = hp.Choice("activation", activations)
            model = keras.Sequential([keras.Input(shape=(arity,))])
            for index in range(layers):
                width = hp.Int(f"width_{index}", 2, 64, sampling="log")
                model.add(keras.layers.Dense(width, activation=activation))
            model.add(keras.layers.Dense(1))
            learning_rate = hp.Float("learning_rate", 1e-4, 3e-2, sampling="log")
            model.compile(
                optimizer=keras.optimizers.Adam(learning_rate),
                loss="mse",
                steps_per_execution=steps_per_execution,
            )
            return model

        def fit(self, hp: Any, model: keras.Model, *args: Any, **kwargs: Any) -> Any:
            return model.fit(*args, batch_size=hp.Choice("batch_size", [32, 64, 128]), **kwargs)

    started = time.monotonic()
    deadline = started + budget

    class TimedRandomSearch(keras_tuner.RandomSearch):
        """RandomSearch that starts no trial after the deadline (KerasTuner has no timeout)."""

        def pre_create_trial(self) -> None:
            super().pre_create_trial()
            if time.monotonic() >= deadline and self.oracle.trials:
                # The oracle stops when it holds max_trials trials.
                self.oracle.max_trials = len(self.oracle.trials)

    tuner = TimedRandomSearch(
        RawMLP(),
        objective="val_loss",
        max_trials=10**6,
        seed=0,
        max_consecutive_failed_trials=10**6,
        directory=str(workdir),
        project_name=f"keras_tuner_{dataset.operation.name}",
        overwrite=True,
    )
    x = np.asarray(dataset.x_train, dtype=np.float32)
    y = np.asarray(dataset.y_train, dtype=np.float32)
    validation = (
        np.asarray(dataset.x_val, dtype=np.float32),
        np.asarray(dataset.y_val, dtype=np.float32),
    )
    tuner.search(
        x, y, validation_data=validation, epochs=epochs, callbacks=[_Deadline(deadline)],
        verbose=0,
    )
    wall = time.monotonic() - started
    trials = len(tuner.oracle.trials)
    try:
        with warnings.catch_warnings():
            # The checkpoint holds optimizer state an inference model does not build: harmless.
            warnings.simplefilter("ignore", UserWarning)
            best = tuner.get_best_models(num_models=1)[0]
        metrics = _reported(evaluate_splits(lambda x: predict(best, x), dataset))
        hp = tuner.get_best_hyperparameters(1)[0].values
        widths = [str(hp[f"width_{i}"]) for i in range(int(hp["layers"]))]
        shape = "-".join([str(arity), *widths, "1"])
        note = f"best: {shape} {hp['activation'] if widths else 'linear'}"
    except Exception as e:  # no completed trial, or every objective NaN
        metrics, note = _nan_metrics(), f"no usable model: {type(e).__name__}"
    return MethodResult(KERAS_TUNER, runs=trials, wall_seconds=wall, metrics=metrics, note=note)


# --- our sweep ------------------------------------------------------------------------------


@contextmanager
def _timed_calls(targets: dict[str, tuple[Any, str]]) -> Iterator[dict[str, float]]:
    """Add up the wall time of calls to some methods while the block runs (measurement only:
    behaviour is unchanged). Yields label -> seconds.

    Timed from outside, so this section does not depend on the sweep's own `train_seconds`
    and `storage_seconds` attributes (which it records on every trial since they were split):
    the sweep's training function and Optuna's report/should_prune/sampling, measured directly.
    """
    totals = dict.fromkeys(targets, 0.0)
    originals = {label: getattr(owner, name) for label, (owner, name) in targets.items()}

    def wrap(label: str, original: Any) -> Any:
        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                totals[label] += time.perf_counter() - started

        return timed

    for label, (owner, name) in targets.items():
        setattr(owner, name, wrap(label, originals[label]))
    try:
        yield totals
    finally:
        for label, (owner, name) in targets.items():
            setattr(owner, name, originals[label])


_SWEEP_CALLS: dict[str, tuple[Any, str]] = {
    # What the objective trains with: build, trace, train, refit.
    "train": (sweep.nets.training.KerasTrainer, "train"),
    "report": (optuna.trial.Trial, "report"),
    "should_prune": (optuna.trial.Trial, "should_prune"),
    # Every suggest_* call goes through it; private, so absent -> not measured.
    "sampling": (optuna.trial.Trial, "_suggest"),
}


def run_sweep(
    dataset: Dataset, budget: float, workdir: Path
) -> tuple[MethodResult, dict[str, Any]]:
    """Our sweep with its defaults and a time budget, on a fresh SQLite file.

    The best model comes from the registry (as a user would pull it) and is judged by the
    same evaluation as the baselines.
    """
    name = dataset.operation.name
    url = f"sqlite:///{workdir / f'sweep-{name}.db'}"
    config = CampaignConfig(name=CAMPAIGN, operations=(name,), trials=None, timeout=budget)
    run_start = datetime.now()  # Optuna stores naive local datetimes
    started = time.monotonic()
    calls = {k: v for k, v in _SWEEP_CALLS.items() if hasattr(v[0], v[1])}
    with _timed_calls(calls) as timings:
        campaign = Campaign(config, url, sweep.nets.training.KerasTrainer())
        if campaign.datasets[name].fingerprint != dataset.fingerprint:
            raise RuntimeError(f"{name}: the sweep's data differs from the baselines' data")
        campaign.run()
    wall = time.monotonic() - started
    with ModelRegistry(url) as registry:
        entry, data = registry.fetch(CAMPAIGN, name)
    model = load_model_bytes(data, label=f"{name} best")
    metrics = _reported(evaluate_splits(lambda x: predict(model, x), dataset))
    trials = campaign.studies[name].get_trials(deepcopy=False)
    counted = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    reached = sorted(
        (t.datetime_complete - run_start).total_seconds()
        for t in trials
        if t.datetime_complete is not None
        and (t.user_attrs.get("test_hit_rate") or 0.0) >= HIT_TARGET
    )
    architecture = str(entry.params.get("architecture") or "")
    extras = {
        "trials": len(counted),
        "train_call_seconds": timings.get("train", math.nan),
        "epoch_storage_seconds": timings.get("report", math.nan)
        + timings.get("should_prune", math.nan),
        "sampling_seconds": timings.get("sampling", math.nan),
        "seconds_to_hit_target": reached[0] if reached else None,
        "architecture": architecture,
    }
    result = MethodResult(
        SWEEP,
        runs=len(counted),
        wall_seconds=wall,
        metrics=metrics,
        note=f"best: {architecture} (trial {entry.trial_number})",
    )
    return result, extras


def run_quality(
    operations: tuple[str, ...],
    budget: float,
    *,
    epochs: int,
    steps_per_execution: int,
    on_result: Callable[[OperationQuality], None] | None = None,
) -> list[OperationQuality]:
    """All three methods per operation, one operation after the other.

    `on_result` sees each operation's result as soon as it is measured (so a report can be
    written before the whole section ends).
    """
    results: list[OperationQuality] = []
    spec = DataSpec()  # the default data, seed 0
    with tempfile.TemporaryDirectory(prefix="sweep-bench-quality-") as folder:
        workdir = Path(folder)
        for operation in resolve_operations(operations, {}):
            dataset = make_dataset(operation, spec)
            load_before = load_average()
            log(f"quality {operation.name}: original network ({budget:g} s)")
            original = run_original(dataset, budget)
            log(f"quality {operation.name}: KerasTuner ({budget:g} s)")
            keras.backend.clear_session()
            tuner = run_keras_tuner(
                dataset, budget, epochs=epochs, steps_per_execution=steps_per_execution,
                workdir=workdir,
            )
            log(f"quality {operation.name}: our sweep ({budget:g} s)")
            keras.backend.clear_session()
            ours, extras = run_sweep(dataset, budget, workdir)
            keras.backend.clear_session()
            wall = ours.wall_seconds
            results.append(
                OperationQuality(
                    operation=operation.name,
                    budget=budget,
                    methods=[original, tuner, ours],
                    sweep_trials=extras["trials"],
                    sweep_trials_per_minute=extras["trials"] / wall * 60 if wall > 0 else math.nan,
                    sweep_train_call_seconds=extras["train_call_seconds"],
                    sweep_epoch_storage_seconds=extras["epoch_storage_seconds"],
                    sweep_sampling_seconds=extras["sampling_seconds"],
                    seconds_to_hit_target=extras["seconds_to_hit_target"],
                    best_architecture=extras["architecture"],
                    load_before=load_before,
                    load_after=load_average(),
                )
            )
            if on_result is not None:
                on_result(results[-1])
    return results
