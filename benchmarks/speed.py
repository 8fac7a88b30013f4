"""Training speed of the model shapes the space produces, and which Keras settings help.

For networks this small, framework overhead per step, not arithmetic, decides trials per minute;
`steps_per_execution` and XLA (`jit_compile`) are the levers, so they are measured per shape.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import keras
import numpy as np

from benchmarks._common import log, median

# Shapes at the small, middle and large end of the default space (0-3 layers of width 2-64).
MODELS: dict[str, tuple[int, ...]] = {
    "2-1 linear": (),
    "2-16-16-1 relu": (16, 16),
    "2-64-64-64-1 relu": (64, 64, 64),
}


@dataclass(frozen=True)
class SpeedResult:
    model: str
    batch_size: int
    steps_per_execution: int
    jit_compile: bool
    dtype: str
    steps_per_second: float  # median over repeats
    runs: int


def _model(hidden: tuple[int, ...], dtype: str) -> keras.Model:
    layers: list[keras.layers.Layer] = [keras.Input(shape=(2,), dtype=dtype)]
    layers += [keras.layers.Dense(width, activation="relu", dtype=dtype) for width in hidden]
    layers.append(keras.layers.Dense(1, dtype=dtype))
    return keras.Sequential(layers)


def _compiled(
    hidden: tuple[int, ...], x: np.ndarray, y: np.ndarray, *, batch_size: int,
    steps_per_execution: int, jit_compile: bool, dtype: str,
) -> keras.Model:
    """A compiled model after one warm-up epoch, which traces (and for XLA compiles) the train
    function: a sweep pays that once per trial, so it shows in trials per minute, not here."""
    keras.utils.set_random_seed(0)
    model = _model(hidden, dtype)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="mse",
        steps_per_execution=steps_per_execution,
        jit_compile=jit_compile,
    )
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
    return model


def run_speed(
    x_raw: np.ndarray,
    y_raw: np.ndarray,
    *,
    models: dict[str, tuple[int, ...]],
    batch_sizes: tuple[int, ...],
    repeats: int,
    epochs: int,
) -> list[SpeedResult]:
    """Every shape x batch size x steps_per_execution {1, 32} x jit {off, on}, in float32;
    then float64 at batch 64, 32 steps per execution, no XLA (the cost of double precision).

    All models are compiled and warmed up first, then timed in `repeats` rounds that visit
    every setting once each, so a change in the shared machine's load hits all settings
    alike instead of whichever one happened to run at that moment.
    """
    # Scaled to order 1, as the sweep's normalisation does; the values do not change the cost.
    x32 = (x_raw / max(float(np.max(np.abs(x_raw))), 1.0)).astype(np.float32)
    y32 = (y_raw / max(float(np.max(np.abs(y_raw))), 1.0)).astype(np.float32)
    settings = [
        (name, batch, spe, jit, "float32")
        for name in models
        for batch in batch_sizes
        for spe in (1, 32)
        for jit in (False, True)
    ]
    double_batch = 64 if 64 in batch_sizes else batch_sizes[0]
    settings += [(name, double_batch, 32, False, "float64") for name in models]
    keras.backend.clear_session()
    prepared = []
    for name, batch, spe, jit, dtype in settings:
        x, y = x32.astype(dtype), y32.astype(dtype)
        model = _compiled(
            models[name], x, y, batch_size=batch, steps_per_execution=spe, jit_compile=jit,
            dtype=dtype,
        )
        prepared.append((model, x, y))
    rates: list[list[float]] = [[] for _ in settings]
    for round_number in range(repeats):
        for index, ((_, batch, _, _, _), (model, x, y)) in enumerate(
            zip(settings, prepared, strict=True)
        ):
            steps = math.ceil(len(x) / batch) * epochs
            started = time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0)
            rates[index].append(steps / (time.perf_counter() - started))
        log(f"speed: round {round_number + 1} of {repeats} done")
    results = [
        SpeedResult(name, batch, spe, jit, dtype, median(rate), len(rate))
        for (name, batch, spe, jit, dtype), rate in zip(settings, rates, strict=True)
    ]
    keras.backend.clear_session()
    return results
