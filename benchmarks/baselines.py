"""The methods our sweep is measured against (sections 1 and 8), and what a method's run yields.

*original network*: the network of the original question, exactly as posted, retrained with
fresh seeds until the budget is spent. *KerasTuner*: its RandomSearch over a space like ours, on
raw data, stopped by the clock (KerasTuner has no timeout). Both are judged by the sweep's own
evaluation (`sweep.problem.metrics.evaluate_splits`).
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from benchmarks._common import median
from sweep.nets.training import KerasPredictor, predict
from sweep.problem.data import Dataset
from sweep.problem.metrics import evaluate_splits

__all__ = [
    "KERAS_TUNER", "ORIGINAL", "REPORTED", "MethodResult", "nan_metrics", "original_network",
    "reported", "run_keras_tuner", "run_original",
]

ORIGINAL = "original network"
KERAS_TUNER = "KerasTuner"
# The metrics every table shows: in-range = unseen test pairs, extrapolation = [high, 2*high).
REPORTED: tuple[str, ...] = (
    "test_hit_rate",
    "test_median_relative_error",
    "test_mae",
    "extrapolation_hit_rate",
    "extrapolation_median_relative_error",
    "extrapolation_mae",
)


@dataclass
class MethodResult:
    """One method on one operation: metrics of its final (or median) model."""

    method: str
    runs: int  # models trained (original) or trials run (KerasTuner, sweep)
    wall_seconds: float
    metrics: dict[str, float]
    note: str = ""


def nan_metrics() -> dict[str, float]:
    """Every reported metric missing (no usable model)."""
    return {key: math.nan for key in REPORTED}


def reported(metrics: dict[str, float]) -> dict[str, float]:
    """The reported metrics of an evaluation, NaN where one is missing."""
    return {key: float(metrics.get(key, math.nan)) for key in REPORTED}


# --- the original question's network ------------------------------------------------------


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
        runs.append(reported(evaluate_splits(KerasPredictor(model).predict, dataset)))
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
    dataset: Dataset, budget: float, *, epochs: int, steps_per_execution: int, workdir: Path,
    max_trials: int | None = None,
) -> MethodResult:
    """KerasTuner's RandomSearch over a space like ours, on raw data, stopped by the clock
    (and after `max_trials` trials, when given, for a budget of trials or seconds).

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
        max_trials=max_trials or 10**6,
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
        metrics = reported(evaluate_splits(lambda x: predict(best, x), dataset))
        hp = tuner.get_best_hyperparameters(1)[0].values
        widths = [str(hp[f"width_{i}"]) for i in range(int(hp["layers"]))]
        shape = "-".join([str(arity), *widths, "1"])
        note = f"best: {shape} {hp['activation'] if widths else 'linear'}"
    except Exception as e:  # no completed trial, or every objective NaN
        metrics, note = nan_metrics(), f"no usable model: {type(e).__name__}"
    return MethodResult(KERAS_TUNER, runs=trials, wall_seconds=wall, metrics=metrics, note=note)
