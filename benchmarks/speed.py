"""Training speed of the model shapes the space produces: Keras `fit` settings and the sweep's
own epoch loop.

For networks this small, framework overhead per step, not arithmetic, decides trials per minute.
For `fit`, `steps_per_execution` and XLA (`jit_compile`) are the levers, so they are measured per
shape; the sweep trains with `sweep.nets.training.make_epoch_function` (one graph call per
epoch), which is measured on the same shapes and data.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from benchmarks._common import log, median
from benchmarks.tables import significant, table
from sweep.nets import ModelSpec
from sweep.nets.normalization import fit_normalization
from sweep.nets.training import EpochFunction, build, make_epoch_function

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
    trainer: str = "fit"  # "fit": keras Model.fit; "sweep": the sweep's epoch loop


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


class _SweepLoop:
    """The sweep's epoch function for a plain shape (no normalisation, constant rate), traced
    by one warm-up epoch as `fit` is warmed up above."""

    def __init__(self, hidden: tuple[int, ...], x: np.ndarray, y: np.ndarray, batch: int) -> None:
        keras.utils.set_random_seed(0)
        dtype = str(x.dtype)
        spec = ModelSpec(
            hidden_layers=hidden, activation="relu", input_normalization="none",
            target_normalization="none", learning_rate=1e-3, batch_size=batch, loss="mse",
            epochs=1, lr_schedule="constant", refit_output=False, precision=dtype,
        )
        built = build(spec, x.shape[1], fit_normalization("none", x), fit_normalization("none", y))
        # One validation row: the sweep predicts its validation split every epoch, which is not
        # a training step.
        self.epoch: EpochFunction = make_epoch_function(built, spec, x, y.reshape(-1), x[:1])
        self.order = tf.constant(np.random.default_rng(0).permutation(len(x)), tf.int32)
        self.epoch(self.order)

    def fit(self, epochs: int) -> None:
        for _ in range(epochs):
            loss, _ = self.epoch(self.order)
            float(loss)  # wait for the result, as the sweep does every epoch


def run_speed(
    x_raw: np.ndarray,
    y_raw: np.ndarray,
    *,
    models: dict[str, tuple[int, ...]],
    batch_sizes: tuple[int, ...],
    repeats: int,
    epochs: int,
) -> list[SpeedResult]:
    """Every shape x batch size x (`fit` with steps_per_execution {1, 32} x jit {off, on}, and
    the sweep's loop), in float32; then float64 at batch 64 for `fit` with 32 steps per
    execution and for the sweep's loop (the cost of double precision).

    All models are compiled and warmed up first, then timed in `repeats` rounds that visit
    every setting once each, so a change in the shared machine's load hits all settings
    alike instead of whichever one happened to run at that moment.
    """
    # Scaled to order 1, as the sweep's normalisation does; the values do not change the cost.
    x32 = (x_raw / max(float(np.max(np.abs(x_raw))), 1.0)).astype(np.float32)
    y32 = (y_raw / max(float(np.max(np.abs(y_raw))), 1.0)).astype(np.float32)
    settings = [
        (name, batch, spe, jit, "float32", "fit")
        for name in models
        for batch in batch_sizes
        for spe in (1, 32)
        for jit in (False, True)
    ]
    settings += [
        (name, batch, 0, False, "float32", "sweep") for name in models for batch in batch_sizes
    ]
    double_batch = 64 if 64 in batch_sizes else batch_sizes[0]
    settings += [(name, double_batch, 32, False, "float64", "fit") for name in models]
    settings += [(name, double_batch, 0, False, "float64", "sweep") for name in models]
    keras.backend.clear_session()
    runners = []
    for name, batch, spe, jit, dtype, trainer in settings:
        x, y = x32.astype(dtype), y32.astype(dtype)
        if trainer == "sweep":
            runners.append(_SweepLoop(models[name], x, y, batch).fit)
            continue
        model = _compiled(
            models[name], x, y, batch_size=batch, steps_per_execution=spe, jit_compile=jit,
            dtype=dtype,
        )

        def run(epochs: int, model: keras.Model = model, x: np.ndarray = x, y: np.ndarray = y,
                batch: int = batch) -> None:
            model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0)

        runners.append(run)
    rates: list[list[float]] = [[] for _ in settings]
    rows = len(x32)
    for round_number in range(repeats):
        for index, (setting, runner) in enumerate(zip(settings, runners, strict=True)):
            steps = math.ceil(rows / setting[1]) * epochs
            started = time.perf_counter()
            runner(epochs)
            rates[index].append(steps / (time.perf_counter() - started))
        log(f"speed: round {round_number + 1} of {repeats} done")
    results = [
        SpeedResult(name, batch, spe, jit, dtype, median(rate), len(rate), trainer)
        for (name, batch, spe, jit, dtype, trainer), rate in zip(settings, rates, strict=True)
    ]
    keras.backend.clear_session()
    return results


# --- the report ------------------------------------------------------------------------------


def render_section(speed: Sequence[SpeedResult]) -> list[str]:
    """Section 2 of BENCHMARKS.md, its first half: training steps per second (the second, trials
    per minute, comes from section 1's sweeps: `benchmarks.quality.throughput_lines`)."""
    if not speed:
        return []
    lines = [
        "## 2. Speed",
        "",
        "### Training steps per second",
        "",
        "Plain MLPs of the shapes the default space produces (0, 2 and 3 hidden relu layers), "
        "Adam + MSE, on the 8,000-row training split of add scaled to order 1; steps per "
        "second after a warm-up epoch (tracing and XLA compilation excluded); every setting "
        "is timed once per round, rounds repeated, median shown (*runs*). *fit spe N*: Keras "
        "`Model.fit` with `steps_per_execution` N; *XLA*: `jit_compile=True`. *sweep loop*: "
        "what the sweep trains with, `sweep.nets.training.make_epoch_function` (the data as "
        "constants in the graph, one graph call per epoch, no tf.data); *sweep / best fit*: "
        "its rate over the best `fit` setting's.",
        "",
    ]
    by_key = {
        (s.model, s.batch_size, s.steps_per_execution, s.jit_compile, s.dtype, s.trainer): s
        for s in speed
    }

    def rate(*key: object) -> float:
        found = by_key.get(key)  # type: ignore[arg-type]
        return found.steps_per_second if found else math.nan

    shapes = list(dict.fromkeys(s.model for s in speed))
    batches = sorted({s.batch_size for s in speed if s.dtype == "float32"})
    rows = []
    for shape in shapes:
        for batch in batches:
            fits = [
                rate(shape, batch, spe, jit, "float32", "fit")
                for spe, jit in ((1, False), (1, True), (32, False), (32, True))
            ]
            loop = rate(shape, batch, 0, False, "float32", "sweep")
            best_fit = max((r for r in fits if not math.isnan(r)), default=math.nan)
            runs = {s.runs for s in speed if s.model == shape}
            rows.append(
                [shape, str(batch), *(significant(r, 4) for r in fits), significant(loop, 4),
                 f"{loop / best_fit:.1f}x" if best_fit > 0 else "—", str(max(runs))]
            )
    lines += table(
        [
            "model", "batch", "fit spe 1", "fit spe 1 + XLA", "fit spe 32",
            "fit spe 32 + XLA", "sweep loop", "sweep / best fit", "runs",
        ],
        rows,
    )
    doubles = [s for s in speed if s.dtype == "float64"]
    if doubles:
        batch = doubles[0].batch_size
        lines += [
            "",
            f"Double precision, the sweep's default (batch {batch}):",
            "",
        ]
        rows = []
        for shape in dict.fromkeys(d.model for d in doubles):
            cells = [shape]
            for trainer, spe in (("fit", 32), ("sweep", 0)):
                single = rate(shape, batch, spe, False, "float32", trainer)
                double = rate(shape, batch, spe, False, "float64", trainer)
                cells += [
                    significant(single, 4), significant(double, 4), significant(double / single, 3)
                ]
            rows.append(cells)
        lines += table(
            [
                "model", "fit spe 32 float32", "fit spe 32 float64", "ratio",
                "sweep loop float32", "sweep loop float64", "ratio",
            ],
            rows,
        )
    return lines
