"""MLP trials on the graph shared by a structure's trials, against a graph traced per model.

`sweep.nets.training.train` runs an MLP trial on a graph traced once per structure (depth,
activation, loss, schedule, precision; `sweep.nets.shared_graph`); before, every trial traced
its own (`make_epoch_function`, kept as the reference). This trains one sequence of MLP specs
drawn from the default space, on one operation's default data, three ways, each in a fresh
thread (no graph traced yet):

- *per model*: a graph traced per trial, as before;
- *shared, as drawn*: the shared graphs, filled as the sequence goes (a structure drawn again
  reuses its graph: what a sweep sees);
- *shared, all traced*: the same sequence once more, every structure already traced.

    python -m benchmarks.shared_graph --trials 12 --rounds 3

Prints a Markdown table: per way, the median and total seconds per trial over the rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from statistics import median
from typing import TYPE_CHECKING, Any

from benchmarks._common import load_average, log

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf

    from sweep.nets import ModelSpec
    from sweep.nets.training import BuiltModel

__all__ = ["WAYS", "PerModelRun", "SharedGraphRun", "compare", "main", "per_model_graphs",
           "render"]

WAYS = ("per model", "shared, as drawn", "shared, all traced")
OPERATION = "multiply"


class PerModelRun:
    """`train`'s per-epoch runner on a graph traced for this model alone (the reference)."""

    def __init__(self, built: BuiltModel, spec: ModelSpec, x: np.ndarray, y: np.ndarray,
                 x_val: np.ndarray) -> None:
        from sweep.nets.training import make_epoch_function

        self.epoch = make_epoch_function(built, spec, x, y, x_val)

    def __call__(self, order: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self.epoch(order)

    def finish(self) -> None:
        """The per-model graph trains the model's own weights."""


@contextmanager
def per_model_graphs() -> Iterator[None]:
    """`train` traces a graph per model while inside (the name it looks up at call time)."""
    import sweep.nets.training

    shared = getattr(sweep.nets.training, "SharedRun")  # noqa: B009
    setattr(sweep.nets.training, "SharedRun", PerModelRun)  # noqa: B010
    try:
        yield
    finally:
        setattr(sweep.nets.training, "SharedRun", shared)  # noqa: B010


@dataclass(frozen=True)
class SharedGraphRun:
    way: str
    round: int
    seconds: tuple[float, ...]  # per trial, in the sequence's order
    structures: int  # distinct traced structures at the end (0 for per model)


def draw_specs(trials: int, seed: int) -> list[ModelSpec]:
    """MLP specs as the default space's dimensions allow them, drawn uniformly."""
    from sweep.nets import ModelSpec
    from sweep.nets.spec import ACTIVATIONS, LOSSES, LR_SCHEDULES
    from sweep.search.space import SearchSpace

    space = SearchSpace()
    rng = random.Random(seed)
    widths = range(int(space.width.low or 2), int(space.width.high or 64) + 1)
    specs = []
    for _ in range(trials):
        depth = rng.randint(int(space.layers.low or 0), int(space.layers.high or 3))
        specs.append(ModelSpec(
            hidden_layers=tuple(rng.choice(widths) for _ in range(depth)),
            activation=rng.choice(ACTIVATIONS), loss=rng.choice(LOSSES),
            lr_schedule=rng.choice(LR_SCHEDULES), batch_size=rng.choice((32, 64, 128)),
            learning_rate=10 ** rng.uniform(-4, -1.5), input_normalization="standard",
            target_normalization="standard", epochs=int(space.epochs.low or 30),
            refit_output=rng.choice((True, False)),
        ))
    return specs


def _in_a_fresh_thread(work: Callable[[], Any]) -> Any:
    out: list[Any] = []
    failed: list[BaseException] = []

    def target() -> None:
        try:
            out.append(work())
        except BaseException as e:  # re-raised below, in the caller's thread
            failed.append(e)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return out[0]


def compare(trials: int, rounds: int, seed: int = 0) -> list[SharedGraphRun]:
    """Each way once per round, in an order that rotates per round."""
    from benchmarks._common import training_runtime

    training_runtime()  # first: it sets TensorFlow's environment
    from sweep.errors import TrialFailure
    from sweep.nets.shared_graph import traced_graphs
    from sweep.nets.training import train
    from sweep.problem.data import DataSpec, make_dataset
    from sweep.problem.operations import resolve_operations

    data = make_dataset(resolve_operations((OPERATION,), {})[0], DataSpec())
    specs = draw_specs(trials, seed)

    def sequence(passes: int) -> tuple[tuple[float, ...], int]:
        seconds: list[float] = []
        for _ in range(passes):
            seconds.clear()
            for index, spec in enumerate(specs):
                started = time.perf_counter()
                # A diverged trial's time counts, as a sweep's failed trial's does.
                with contextlib.suppress(TrialFailure):
                    train(spec, data.x_train, data.y_train, data.x_val, data.y_val, seed=index)
                seconds.append(time.perf_counter() - started)
        return tuple(seconds), traced_graphs()

    def per_model() -> tuple[tuple[float, ...], int]:
        with per_model_graphs():
            seconds, _ = sequence(1)
        return seconds, 0

    ways: dict[str, Callable[[], tuple[tuple[float, ...], int]]] = {
        WAYS[0]: per_model, WAYS[1]: lambda: sequence(1), WAYS[2]: lambda: sequence(2),
    }
    runs = []
    for round_number in range(rounds):
        shift = round_number % len(WAYS)
        for way in WAYS[shift:] + WAYS[:shift]:
            seconds, structures = _in_a_fresh_thread(ways[way])
            log(f"shared graph: {way} #{round_number + 1}: {sum(seconds):.1f} s for "
                f"{len(seconds)} trials (load {load_average()})")
            runs.append(SharedGraphRun(way, round_number + 1, seconds, structures))
    return runs


def render(runs: list[SharedGraphRun]) -> list[str]:
    lines = [
        "| way | median s per trial | total s (median over rounds) | vs per model | "
        "structures traced |",
        "|---|---|---|---|---|",
    ]
    totals = {w: median(sum(r.seconds) for r in runs if r.way == w) for w in WAYS}
    for way in WAYS:
        mine = [r for r in runs if r.way == way]
        per_trial = median(s for r in mine for s in r.seconds)
        ratio = totals[WAYS[0]] / totals[way] if totals[way] > 0 else float("nan")
        lines.append(f"| {way} | {per_trial:.3f} | {totals[way]:.1f} | {ratio:.2f}x | "
                     f"{max(r.structures for r in mine)} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = load_average()
    runs = compare(args.trials, args.rounds, args.seed)
    from sweep.nets.shared_graph import GRAPHS_PER_THREAD, GraphKey

    distinct = len({GraphKey.of(spec) for spec in draw_specs(args.trials, args.seed)})
    print("\n".join(render(runs)))
    print(f"\n{args.trials} MLP specs (seed {args.seed}) of {distinct} distinct structures (a "
          f"thread keeps {GRAPHS_PER_THREAD} traced: with more, *all traced* is not), "
          f"{OPERATION}'s default data, {args.rounds} round(s); load {started} before, "
          f"{load_average()} after; {os.cpu_count()} cores.")


if __name__ == "__main__":
    main()
