"""Where an MLP trial's training time goes on its structure's shared graph, and two ways to cut
the step that were measured and not taken.

An MLP trial of the default space runs up to 30 epochs of `ceil(rows / batch)` Adam steps on
the graph `sweep.nets.shared_graph` traces once per structure; a structure seen for the first
time is traced and then set up by TensorFlow on its first call. This times the three parts per
structure (trace, the first call's extra, a step), for the graph as trials use it and for:

- *float64 loss*: the Keras loss object in the weights' precision instead of Keras' default
  float32 (the loss and its gradient lose their casts; the arithmetic changes);
- *XLA*: the same epoch function compiled with `jit_compile=True`.

Each structure is traced afresh per way and round; the ways alternate their order per round.

    python -m benchmarks.mlp_step --epochs 4 --rounds 3

Prints a Markdown table per structure and way: median trace ms, first call's extra ms, and
microseconds per step, with the step's ratio to the graph as used.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from benchmarks._common import load_average, log, median

if TYPE_CHECKING:
    import keras

    from sweep.nets.shared_graph import SharedEpochGraph

__all__ = ["CASES", "WAYS", "Case", "StepTiming", "compare", "main", "render"]

WAYS = ("as used", "float64 loss", "XLA")


@dataclass(frozen=True)
class Case:
    """One structure and the sizes that set its step's cost."""

    depth: int
    width: int
    batch: int
    loss: str
    activation: str

    @property
    def label(self) -> str:
        layers = f"{self.depth}x{self.width} {self.activation}" if self.depth else "linear"
        return f"{layers}, batch {self.batch}, {self.loss}"


# Linear to the default space's largest (3 layers of 64), every loss and batch size.
CASES = (
    Case(0, 1, 32, "mse", "linear"),
    Case(0, 1, 128, "huber", "linear"),
    Case(1, 8, 64, "mae", "relu"),
    Case(2, 16, 32, "mse", "tanh"),
    Case(3, 64, 32, "huber", "relu"),
    Case(3, 64, 128, "mse", "gelu"),
)


@dataclass(frozen=True)
class StepTiming:
    case: Case
    way: str
    round: int
    trace_ms: float  # building the graph object and tracing its epoch function
    first_call_ms: float  # the first epoch's time beyond a later epoch's
    step_us: float  # median over the later epochs, per step


@contextmanager
def _loss_in_precision() -> Iterator[None]:
    """`SharedEpochGraph` builds its loss in float64 while inside."""
    import keras

    import sweep.nets.shared_graph as shared

    kinds: dict[str, Callable[..., keras.losses.Loss]] = {
        "mse": keras.losses.MeanSquaredError, "mae": keras.losses.MeanAbsoluteError,
        "huber": keras.losses.Huber,
    }
    as_used = shared.loss_function
    shared.loss_function = lambda name: kinds[name](dtype="float64")
    try:
        yield
    finally:
        shared.loss_function = as_used


def _graph(case: Case, way: str) -> SharedEpochGraph:
    import tensorflow as tf

    from sweep.nets.shared_graph import GraphKey, SharedEpochGraph

    key = GraphKey(depth=case.depth, activation=case.activation, loss=case.loss, cosine=True,
                   precision="float64")
    if way == WAYS[1]:
        with _loss_in_precision():
            graph = SharedEpochGraph(key)
    else:
        graph = SharedEpochGraph(key)
    epoch = graph._epoch  # the benchmark's own variant of the graph's function
    if way == WAYS[2]:
        # The same function and signature, compiled by XLA for the shapes it is called with.
        epoch = graph._epoch = tf.function(
            epoch.python_function,  # type: ignore[attr-defined]
            input_signature=epoch.input_signature,  # type: ignore[attr-defined]
            autograph=False, jit_compile=True,
        )
    epoch.get_concrete_function()  # type: ignore[attr-defined]
    return graph


def _time_case(case: Case, way: str, round_number: int, rows: int, epochs: int,
               seed: int) -> StepTiming:
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    graph = _graph(case, way)
    traced = time.perf_counter() - started
    sizes = [1, *([case.width] * case.depth), 1]
    initial = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        initial += [tf.constant(rng.normal(size=(fan_in, fan_out)) / math.sqrt(fan_in)),
                    tf.constant(np.zeros(fan_out))]
    x = tf.constant(rng.uniform(-1.7, 1.7, size=(rows, 1)))
    y = tf.constant(np.sqrt(np.abs(x.numpy())))
    check = tf.constant(rng.uniform(-1.7, 1.7, size=(rows // 4, 1)))
    steps = math.ceil(rows / case.batch)
    graph.start(initial, 3e-3, steps * 30)
    seconds = []
    for _ in range(epochs):
        order = tf.constant(rng.permutation(rows).astype(np.int32))
        begun = time.perf_counter()
        loss, _ = graph.epoch(order, x, y, check, case.batch, steps)
        float(loss)
        seconds.append(time.perf_counter() - begun)
    later = median(seconds[1:])
    return StepTiming(case, way, round_number, traced * 1e3, (seconds[0] - later) * 1e3,
                      later / steps * 1e6)


def compare(epochs: int, rounds: int, cases: tuple[Case, ...] = CASES,
            ways: tuple[str, ...] = WAYS, seed: int = 0) -> list[StepTiming]:
    """Every case and way once per round, the ways in an order that rotates per round."""
    from benchmarks._common import training_runtime

    training_runtime()  # first: it sets TensorFlow's environment
    from sweep.problem.data import DataSpec

    spec = DataSpec()
    # The default split's training rows, as a trial of a built-in operation trains on.
    rows = spec.examples - round(spec.examples * spec.validation_fraction)
    timings = []
    for round_number in range(rounds):
        for index, case in enumerate(cases):
            shift = (round_number + index) % len(ways)
            for way in ways[shift:] + ways[:shift]:
                timing = _time_case(case, way, round_number + 1, rows, max(epochs, 2), seed)
                log(f"mlp step: {case.label}, {way} #{round_number + 1}: "
                    f"{timing.step_us:.1f} us a step (load {load_average()})")
                timings.append(timing)
    return timings


def render(timings: list[StepTiming]) -> list[str]:
    lines = [
        "| structure | way | trace ms | first call extra ms | us per step | step vs as used |",
        "|---|---|---|---|---|---|",
    ]
    cases = list(dict.fromkeys(t.case for t in timings))
    ways = list(dict.fromkeys(t.way for t in timings))
    for case in cases:
        steps = {w: median(t.step_us for t in timings if t.case == case and t.way == w)
                 for w in ways}
        for way in ways:
            mine = [t for t in timings if t.case == case and t.way == way]
            ratio = steps[WAYS[0]] / steps[way] if WAYS[0] in steps else math.nan
            lines.append(
                f"| {case.label} | {way} | {median(t.trace_ms for t in mine):.0f} | "
                f"{median(t.first_call_ms for t in mine):.0f} | {steps[way]:.1f} | "
                f"{ratio:.2f}x |"
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per case (at least 2)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 2 <= args.epochs <= 30 or not 1 <= args.rounds <= 20:
        parser.error("--epochs must be 2-30 and --rounds 1-20")
    started = load_average()
    timings = compare(args.epochs, args.rounds, seed=args.seed)
    print("\n".join(render(timings)))
    print(f"\n{args.epochs} epochs per case and way, {args.rounds} round(s), the default "
          f"split's training rows, float64 weights, cosine schedule; load {started} before, "
          f"{load_average()} after; {os.cpu_count()} cores.")


if __name__ == "__main__":
    main()
