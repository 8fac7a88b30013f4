"""Memory of a long-lived worker: resident memory per trained model, the sweep's Adam against
Keras' `keras.optimizers.Adam`.

A worker trains hundreds of models in one process, so whatever a trained model leaves behind
adds up. Each run is a fresh process (resident memory is a per-process figure) that trains real
models with `sweep.nets.training.train` on multiply's default data, cycling through shapes of the
default space. The first `warmup` models fill TensorFlow's one-off caches; growth is measured
over the rest. The Keras variant is the loop as it was before its own Adam: a graph traced per
model (`make_epoch_function`, not the graph shared across trials of one structure) with
`keras.optimizers.Adam` in place of `make_adam`, at the same rate and schedule.

Run one process by hand: ``python -m benchmarks.memory --optimizer keras --models 60``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks._common import log, median
from benchmarks.tables import table, times

OPTIMIZERS: tuple[str, ...] = ("sweep", "keras")
# What each model trains on and for how long (the report's text reads these too).
OPERATION = "multiply"
EPOCHS = 30
BATCH_SIZE = 64
# (hidden layers, activation): small to large models of the default space.
SHAPES: tuple[tuple[tuple[int, ...], str], ...] = (
    ((), "linear"),
    ((16,), "tanh"),
    ((32, 16), "relu"),
    ((32, 32, 32), "gelu"),
)


@dataclass(frozen=True)
class MemoryRun:
    optimizer: str
    models: int
    warmup: int
    rss_after_warmup_mib: float
    rss_end_mib: float
    seconds_per_model: float  # median over the measured models

    @property
    def growth_per_model_mib(self) -> float:
        return (self.rss_end_mib - self.rss_after_warmup_mib) / max(self.models - self.warmup, 1)


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(optimizer: str, models: int, warmup: int) -> MemoryRun:
    """Train `models` models in this process; resident memory after the warm-up and at the end."""
    from benchmarks._common import training_runtime

    training_runtime()  # first: it sets TensorFlow's environment
    import keras

    import sweep.nets.adam
    import sweep.nets.training
    from sweep.nets import ModelSpec
    from sweep.problem.data import DataSpec, make_dataset
    from sweep.problem.operations import resolve_operations

    if optimizer == "keras":

        def keras_adam(
            spec: ModelSpec, weights: Sequence[keras.Variable], total_steps: int
        ) -> sweep.nets.adam.AdamStep:
            rate: float | keras.optimizers.schedules.CosineDecay = spec.learning_rate
            if spec.lr_schedule == "cosine":
                rate = keras.optimizers.schedules.CosineDecay(
                    spec.learning_rate, max(total_steps, 1), alpha=sweep.nets.adam.COSINE_FLOOR
                )
            adam = keras.optimizers.Adam(learning_rate=rate)
            adam.build(weights)
            return lambda gradients: adam.apply(gradients, weights)

        from benchmarks.shared_graph import PerModelRun

        # The two names `train` and its per-model graph look up at call time.
        setattr(sweep.nets.training, "make_adam", keras_adam)  # noqa: B010
        setattr(sweep.nets.training, "SharedRun", PerModelRun)  # noqa: B010
    elif optimizer != "sweep":
        raise ValueError(f"unknown optimizer {optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    data = make_dataset(resolve_operations((OPERATION,), {})[0], DataSpec())
    after_warmup = _rss_mib()
    seconds: list[float] = []
    for index in range(models):
        hidden, activation = SHAPES[index % len(SHAPES)]
        spec = ModelSpec(
            hidden_layers=hidden, activation=activation, input_normalization="log_abs",
            target_normalization="log_abs", learning_rate=3e-3, batch_size=BATCH_SIZE,
            loss="mse", epochs=EPOCHS, lr_schedule="cosine", refit_output=True,
        )
        started = time.perf_counter()
        sweep.nets.training.train(
            spec, data.x_train, data.y_train, data.x_val, data.y_val, seed=index
        )
        if index + 1 == warmup:
            after_warmup = _rss_mib()
        elif index + 1 > warmup:
            seconds.append(time.perf_counter() - started)
    return MemoryRun(optimizer, models, warmup, after_warmup, _rss_mib(), median(seconds))


def run_memory(models: int, warmup: int, repeats: int) -> list[MemoryRun]:
    """Each optimizer `repeats` times, each in its own process, order alternating per round."""
    root = Path(__file__).resolve().parents[1]
    path = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    runs: list[MemoryRun] = []
    for round_number in range(repeats):
        order = OPTIMIZERS if round_number % 2 == 0 else OPTIMIZERS[::-1]
        for optimizer in order:
            command = [
                sys.executable, "-m", "benchmarks.memory", "--optimizer", optimizer,
                "--models", str(models), "--warmup", str(warmup),
            ]
            completed = subprocess.run(
                command, env=env, cwd=root, capture_output=True, text=True, check=False
            )
            if completed.returncode != 0:
                tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
                raise RuntimeError(
                    f"memory run ({optimizer}) exited {completed.returncode}: {tail}"
                )
            run = MemoryRun(**json.loads(completed.stdout.strip().splitlines()[-1]))
            runs.append(run)
            log(
                f"memory: {optimizer}: {run.growth_per_model_mib:.2f} MiB per model, "
                f"{run.seconds_per_model:.2f} s per model"
            )
    return runs


# --- the report ------------------------------------------------------------------------------


def _gib_per_thousand(mib_per_model: float) -> str:
    """Growth over 1000 models; a negative figure (memory handed back after the warm-up) is
    no growth, not a shrinking worker."""
    return f"{max(mib_per_model, 0.0) * 1000 / 1024:.1f} GiB"


def render_section(runs: Sequence[MemoryRun]) -> list[str]:
    """Section 5 of BENCHMARKS.md: memory growth per model with each optimizer."""
    if not runs:
        return []
    first = runs[0]
    shapes = ", ".join(
        f"{'-'.join(map(str, (2, *hidden, 1)))} {activation}" for hidden, activation in SHAPES
    )
    lines = [
        "## 5. Memory of a long-lived worker",
        "",
        f"One fresh process per run trains {first.models} real models with"
        f" `sweep.nets.training.train` ({OPERATION}'s default data, {EPOCHS} epochs, batch"
        f" {BATCH_SIZE}, cosine rate, shapes cycling through {shapes}). Resident memory is"
        f" read after the first {first.warmup} models (TensorFlow's one-off caches) and at the"
        " end; *per model* is the growth over the rest. *sweep*: `train` as it is, its own"
        " Adam on a graph shared by the models of one structure (`sweep.nets.shared_graph`);"
        " *keras*: a graph traced per model with `keras.optimizers.Adam` (same rate and"
        " schedule), the loop before its own Adam. Order alternates per round.",
        "",
    ]
    rows = [
        [
            run.optimizer,
            f"{run.rss_after_warmup_mib:.0f}",
            f"{run.rss_end_mib:.0f}",
            f"{run.growth_per_model_mib:.2f}",
            f"{run.seconds_per_model:.2f}",
        ]
        for run in runs
    ]
    lines += table(
        ["optimizer", "MiB after warm-up", "MiB at end", "MiB per model", "s per model (median)"],
        rows,
    )
    growth = {
        name: median(r.growth_per_model_mib for r in runs if r.optimizer == name)
        for name in dict.fromkeys(r.optimizer for r in runs)
    }
    speed = {
        name: median(r.seconds_per_model for r in runs if r.optimizer == name)
        for name in growth
    }
    if "sweep" in growth and "keras" in growth:
        lines += [
            "",
            f"Medians: {growth['sweep']:.2f} MiB per model with the sweep's Adam against"
            f" {growth['keras']:.2f} with Keras' (over 1000 trials a worker grows by about"
            f" {_gib_per_thousand(growth['sweep'])} against {_gib_per_thousand(growth['keras'])});"
            f" {speed['sweep']:.2f} s against {speed['keras']:.2f} s per model"
            f" ({times(speed['keras'] / speed['sweep'])} the speed).",
        ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="sweep")
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args(argv)
    if not 0 < args.warmup < args.models:
        parser.error(f"--warmup {args.warmup} must be at least 1 and below --models {args.models}")
    print(json.dumps(asdict(measure(args.optimizer, args.models, args.warmup))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
