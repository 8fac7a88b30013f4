"""Packed MLP trials (issue 31): does training K same-shape MLPs as one graph pay end to end?

The target keeps packing only if an MLP-only sweep gets at least 3x the trials per minute at an
equal or better best validation error. Two measurements decide it:

- *Packed training*: K models of one shape (`benchmarks.packed_training`, stacked weights, one
  vectorised Adam, each model its own rate, schedule, loss, normalisations and seed) against
  the sweep's own `sweep.nets.training.train` run K times one after another, side by side in
  one process; model-epochs per second with tracing (everything from the first call to the
  last epoch) and without it (epochs after the first).
- *Shape repetition*: real MLP-only sweeps (`family = ["mlp"]`, defaults otherwise) through
  the Campaign API: how many trials share a packable shape, and what share of a trial's time
  training is. From both, the trials-per-minute gain packing could give at best.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._common import load_average, log, median

__all__ = [
    "PackRun", "PackingResult", "ShapeSweep", "SweepTrial", "Timing", "add_arguments", "bound",
    "estimate_gain", "from_arguments", "run_packing", "run_section", "speedup",
]

SHAPES: dict[str, tuple[int, ...]] = {"2-16-16-1 tanh": (16, 16), "2-64-64-1 tanh": (64, 64)}
PACKS: tuple[int, ...] = (1, 4, 16, 64)
OPERATIONS: tuple[str, ...] = ("add", "multiply")
TARGET_RATIO = 3.0
EPOCH_CAP = 30  # the default space's epochs: what an unpruned trial trains
# Per model k of a pack: its own choices, cycled (the shape is shared, nothing else is).
RATES = (1e-3, 3e-3, 1e-2, 3e-4)
SCHEDULES = ("cosine", "constant")
LOSSES = ("mse", "huber", "mae")
INPUT_NORMALISATIONS = ("standard", "minmax", "log")
TARGET_NORMALISATIONS = ("standard", "minmax", "log", "log_abs")


@dataclass
class Timing:
    """One side of one measurement: `models` trained for `epochs` each."""

    models: int
    epochs: int
    total_seconds: float  # from the first call to the last epoch's end: build, tracing, all
    epoch_seconds: float  # one epoch of all the models, tracing excluded (median gap)

    @property
    def setup_seconds(self) -> float:
        return self.total_seconds - self.epochs * self.epoch_seconds

    def rate(self, epochs: int | None = None) -> float:
        """Model-epochs per second with tracing, as measured or at `epochs` per model."""
        e = self.epochs if epochs is None else epochs
        seconds = (self.total_seconds if epochs is None
                   else self.setup_seconds + e * self.epoch_seconds)
        return self.models * e / seconds if seconds > 0 else math.nan

    @property
    def rate_excluded(self) -> float:
        return self.models / self.epoch_seconds if self.epoch_seconds > 0 else math.nan


@dataclass
class PackRun:
    operation: str
    shape: str
    pack: int
    repeat: int
    sequential: Timing
    packed: Timing
    load_before: str = ""


@dataclass
class SweepTrial:
    number: int
    state: str
    shape: str  # the packable shape: layers and widths, activation, batch, precision, epochs
    train_seconds: float  # the objective's model time: build, training, refit, evaluation
    epochs: int  # epochs reported (fewer than the cap when pruned)


@dataclass
class ShapeSweep:
    operation: str
    seed: int
    timeout: float
    span_seconds: float = math.nan  # first trial's start to last trial's completion
    best_value: float = math.nan  # best validation MAE
    trials: list[SweepTrial] = field(default_factory=list)
    load_before: str = ""
    error: str = ""

    @property
    def counted(self) -> list[SweepTrial]:
        return [t for t in self.trials if t.state in ("COMPLETE", "PRUNED")]

    @property
    def per_minute(self) -> float:
        return 60 * len(self.counted) / self.span_seconds if self.span_seconds > 0 else math.nan

    def groups(self) -> Counter[str]:
        return Counter(t.shape for t in self.trials)

    @property
    def training_share(self) -> float:
        trained = sum(t.train_seconds for t in self.trials)
        return trained / self.span_seconds if self.span_seconds > 0 else math.nan


@dataclass
class PackingResult:
    epochs: int
    repeats: int
    shapes: list[str]
    packs: list[int]
    operations: list[str]
    sweep_timeout: float
    sweep_seeds: int
    runs: list[PackRun] = field(default_factory=list)
    sweeps: list[ShapeSweep] = field(default_factory=list)

    def ratio(self, operation: str, shape: str, pack: int, kind: str = "included") -> float:
        """Packed over sequential model-epochs per second, median over the repeats; `kind`:
        included (tracing, as measured), excluded, or projected (tracing, `EPOCH_CAP` epochs)."""
        values = []
        for r in self.runs:
            if (r.operation, r.shape, r.pack) != (operation, shape, pack):
                continue
            if kind == "excluded":
                values.append(r.packed.rate_excluded / r.sequential.rate_excluded)
            else:
                epochs = EPOCH_CAP if kind == "projected" else None
                values.append(r.packed.rate(epochs) / r.sequential.rate(epochs))
        return median(values)

    def rate(self, operation: str, shape: str, pack: int, side: str, kind: str) -> float:
        return median(
            getattr(r, side).rate_excluded if kind == "excluded" else getattr(r, side).rate()
            for r in self.runs if (r.operation, r.shape, r.pack) == (operation, shape, pack)
        )


# --- measuring ---------------------------------------------------------------------------------


def pack_specs(hidden_layers: tuple[int, ...], pack: int, epochs: int, operation: str) -> list[Any]:
    """K specs of one shape, each with its own rate, schedule, loss and normalisations."""
    from sweep.nets.spec import ModelSpec

    targets = TARGET_NORMALISATIONS if operation != "add" else TARGET_NORMALISATIONS[:3]
    return [
        ModelSpec(hidden_layers=hidden_layers, activation="tanh",
                  input_normalization=INPUT_NORMALISATIONS[k % len(INPUT_NORMALISATIONS)],
                  target_normalization=targets[k % len(targets)],
                  learning_rate=RATES[k % len(RATES)], batch_size=64,
                  loss=LOSSES[k % len(LOSSES)], epochs=epochs,
                  lr_schedule=SCHEDULES[k % len(SCHEDULES)], refit_output=False)
        for k in range(pack)
    ]


def _sequential(specs: Sequence[Any], data: Any) -> Timing:
    """The sweep's own loop, once per model: build, trace and train each alone."""
    from sweep.nets.training import train

    epoch_seconds = 0.0
    started = time.monotonic()
    for seed, spec in enumerate(specs):
        stamps: list[float] = []

        def stamp(_epoch: int, _predictions: Any, stamps: list[float] = stamps) -> None:
            stamps.append(time.monotonic())

        train(spec, data.x_train, data.y_train, data.x_val, data.y_val, seed=seed,
              on_epoch=stamp)
        epoch_seconds += _epoch_seconds(stamps)
    return Timing(len(specs), specs[0].epochs, time.monotonic() - started, epoch_seconds)


def _packed(specs: Sequence[Any], data: Any) -> Timing:
    from benchmarks.packed_training import PackedMLP

    started = time.monotonic()
    packed = PackedMLP(specs, list(range(len(specs))), data.x_train, data.y_train, data.x_val)
    stamps = []
    for _ in range(specs[0].epochs):
        packed.run_epoch()
        stamps.append(time.monotonic())
    return Timing(len(specs), specs[0].epochs, stamps[-1] - started, _epoch_seconds(stamps))


def _epoch_seconds(stamps: Sequence[float]) -> float:
    """One epoch without tracing: the median gap between epochs' ends (robust to a neighbour's
    burst on the shared machine)."""
    return median(later - earlier for earlier, later in itertools.pairwise(stamps))


def measure_training(result: PackingResult, on_run: Callable[[PackRun], None] | None = None
                     ) -> None:
    """Fills `result.runs`; per repeat the two sides alternate which goes first."""
    from sweep.problem.data import DataSpec, make_dataset
    from sweep.problem.operations import resolve_operations

    datasets = {op: make_dataset(resolve_operations((op,), {})[0], DataSpec())
                for op in result.operations}
    for repeat in range(1, result.repeats + 1):
        for operation in result.operations:
            for shape in result.shapes:
                for pack in result.packs:
                    specs = pack_specs(SHAPES[shape], pack, result.epochs, operation)
                    load = load_average()
                    if repeat % 2:
                        sequential = _sequential(specs, datasets[operation])
                        packed = _packed(specs, datasets[operation])
                    else:
                        packed = _packed(specs, datasets[operation])
                        sequential = _sequential(specs, datasets[operation])
                    run = PackRun(operation, shape, pack, repeat, sequential, packed, load)
                    result.runs.append(run)
                    log(f"packing: {operation} {shape} K={pack} #{repeat}: "
                        f"{packed.rate() / sequential.rate():.2f}x with tracing, "
                        f"{packed.rate_excluded / sequential.rate_excluded:.2f}x without "
                        f"(load {load})")
                    if on_run is not None:
                        on_run(run)


def shape_key(spec: dict[str, Any]) -> str:
    """What a packed graph must share, from a trial's stored `model_spec`."""
    widths = "-".join(str(w) for w in spec.get("hidden_layers", ())) or "linear"
    return (f"{widths} {spec.get('activation')} b{spec.get('batch_size')}"
            f" {spec.get('precision')} e{spec.get('epochs')}")


def run_sweep(operation: str, seed: int, timeout: float, folder: Path) -> ShapeSweep:
    """One MLP-only campaign on a fresh SQLite file, filling its time (no stop when exact)."""
    from storage import Database
    from sweep.nets.training import KerasTrainer
    from sweep.problem.data import DataSpec
    from sweep.search.campaign import Campaign
    from sweep.search.config import CampaignConfig
    from sweep.search.space import SearchSpace

    sweep = ShapeSweep(operation, seed, timeout, load_before=load_average())
    config = CampaignConfig(
        name="packing", operations=(operation,), seed=seed, trials=None, timeout=timeout,
        data=DataSpec(), space=SearchSpace.from_dict({"family": ["mlp"]}),
        stop_when_exact=False,
    )
    url = f"sqlite:///{folder / f'{operation}-{seed}.db'}"
    with Campaign(config, Database(url), KerasTrainer()) as campaign:
        campaign.run()
        trials = campaign.studies[operation].get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    if starts and ends:
        sweep.span_seconds = (max(ends) - min(starts)).total_seconds()
    values = [t.value for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    sweep.best_value = min(values) if values else math.nan
    for t in trials:
        spec = t.user_attrs.get("model_spec") or {}
        epochs = max(len(t.intermediate_values), int(t.user_attrs.get("epochs_run") or 0), 1)
        sweep.trials.append(SweepTrial(t.number, t.state.name, shape_key(spec),
                                       float(t.user_attrs.get("train_seconds") or 0.0), epochs))
    return sweep


def run_packing(result: PackingResult, on_progress: Callable[[], None] | None = None
                ) -> PackingResult:
    """Both measurements into `result`, reporting progress after each piece."""
    def progress(_: object = None) -> None:
        if on_progress is not None:
            on_progress()

    measure_training(result, progress)
    with tempfile.TemporaryDirectory(prefix="sweep-packing-") as scratch:
        for seed in range(result.sweep_seeds):
            for operation in result.operations:
                try:
                    sweep = run_sweep(operation, seed, result.sweep_timeout, Path(scratch))
                except Exception as e:  # recorded; the other sweeps still run
                    sweep = ShapeSweep(operation, seed, result.sweep_timeout,
                                       error=f"{type(e).__name__}: {e}")
                result.sweeps.append(sweep)
                log(f"packing: sweep {operation} seed {seed}: {len(sweep.counted)} trials, "
                    f"{len(sweep.groups())} shapes, {sweep.per_minute:.1f}/min"
                    + (f"; {sweep.error}" if sweep.error else ""))
                progress()
    return result


# --- the estimate ------------------------------------------------------------------------------


def speedup(result: PackingResult, operation: str, pack: int, epochs: int) -> float:
    """Packed over sequential training time for a group of `pack` trials of `epochs` epochs,
    tracing included: the best of the measured shapes, interpolated in log K between measured
    sizes and held at the largest beyond it. A lone trial (K = 1) trains as today: 1."""
    if pack <= 1:
        return 1.0

    def at(k: int) -> float:
        best = math.nan
        for shape in result.shapes:
            values = [r.packed.rate(epochs) / r.sequential.rate(epochs) for r in result.runs
                      if (r.operation, r.shape, r.pack) == (operation, shape, k)]
            best = max(best, median(values)) if not math.isnan(best) else median(values)
        return best

    sizes = sorted(result.packs)
    if pack >= sizes[-1]:
        return at(sizes[-1])
    upper = next(k for k in sizes if k >= pack)
    lower = max((k for k in sizes if k <= pack), default=1)
    if upper == lower:
        return at(upper)
    low_value = 1.0 if lower == 1 else at(lower)
    weight = (math.log(pack) - math.log(lower)) / (math.log(upper) - math.log(lower))
    return low_value + weight * (at(upper) - low_value)


def estimate_gain(result: PackingResult, sweep: ShapeSweep, pack: int | None = None) -> float:
    """The sweep's trials per minute with packing over without: its span with each trial's
    training time divided by the packing speedup of its group (`pack`: every trial in a pack
    of that size, as if Optuna proposed K per shape; None: the same-shape groups the sweep
    had), everything else unchanged. Optimistic: training time includes evaluation and refit."""
    if not sweep.span_seconds > 0:
        return math.nan
    sizes = sweep.groups()
    saved = 0.0
    for trial in sweep.trials:
        group = sizes[trial.shape] if pack is None else pack
        saved += trial.train_seconds * (1 - 1 / speedup(result, sweep.operation, group,
                                                        trial.epochs))
    return sweep.span_seconds / (sweep.span_seconds - saved)


def bound(sweep: ShapeSweep) -> float:
    """Amdahl: the gain if training took no time at all."""
    share = sweep.training_share
    return 1 / (1 - share) if share < 1 else math.inf


# --- wiring into `python -m benchmarks` (the report: benchmarks.packing_report) ----------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This section's options of `python -m benchmarks`."""
    parser.add_argument("--packing-epochs", type=int, default=None, metavar="N",
                        help="packing section: epochs per model measured (default 6; 3 quick)")
    parser.add_argument("--packing-repeats", type=int, default=None, metavar="N",
                        help="packing section: repeats of the training measurement (default 3)")
    parser.add_argument("--packing-timeout", type=float, default=None, metavar="SECONDS",
                        help="packing section: seconds per MLP-only sweep (default 60)")
    parser.add_argument("--packing-seeds", type=int, default=None, metavar="N",
                        help="packing section: MLP-only sweeps per operation (default 3)")


def from_arguments(args: argparse.Namespace) -> PackingResult:
    """The section's settings from `python -m benchmarks`' options, nothing measured yet."""
    quick = bool(args.quick)
    return PackingResult(
        epochs=max(2, args.packing_epochs or (3 if quick else 6)),
        repeats=args.packing_repeats or (1 if quick else 3),
        shapes=list(SHAPES)[:1] if quick else list(SHAPES),
        packs=[1, 4] if quick else list(PACKS),
        operations=["add"] if quick else list(OPERATIONS),
        sweep_timeout=args.packing_timeout or (8.0 if quick else 60.0),
        sweep_seeds=args.packing_seeds or (1 if quick else 3),
    )


def run_section(args: argparse.Namespace, section: Callable[..., Any], results: Any,
                write: Callable[[], None]) -> None:
    """`python -m benchmarks --sections packing`: settings, then the measurements, the report
    rewritten after each piece."""
    results.packing = from_arguments(args)
    section("packing", lambda: run_packing(results.packing, write), None)


def _main(argv: Sequence[str] | None = None) -> int:
    """`python -m benchmarks.packing`: this section alone, its Markdown on stdout."""
    from benchmarks._common import training_runtime
    from benchmarks.packing_report import render_section, target_lines

    parser = argparse.ArgumentParser(prog="python -m benchmarks.packing")
    parser.add_argument("--quick", action="store_true")
    add_arguments(parser)
    training_runtime()
    result = run_packing(from_arguments(parser.parse_args(argv)))
    print("\n".join([*target_lines(result), "", *render_section(result)]))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
