"""Model quality per operation: the original network, KerasTuner and our sweep, same data and
the same wall-clock budget, measured one after the other in one process.

All three are judged by the same code (`sweep.problem.metrics.evaluate_splits`) on the same held-out
test pairs and extrapolation band, so the only differences are the model and how it was found.
The two baselines live in `benchmarks.baselines` (section 8 runs them too); this module runs our
sweep, the comparison, and renders sections 1 and the second half of 2.
"""

from __future__ import annotations

import functools
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import keras
import optuna

import sweep.nets.training
from benchmarks._common import load_average, log, median
from benchmarks.baselines import (
    KERAS_TUNER,
    ORIGINAL,
    MethodResult,
    reported,
    run_keras_tuner,
    run_original,
)
from benchmarks.tables import beats, fraction, percent, ratio, significant, table
from storage import Database, ModelRegistry
from sweep.nets.saving import load_model_bytes
from sweep.nets.training import predict
from sweep.problem.data import Dataset, DataSpec, make_dataset
from sweep.problem.metrics import evaluate_splits
from sweep.problem.operations import resolve_operations
from sweep.search.campaign import Campaign
from sweep.search.config import CampaignConfig

OPERATIONS: tuple[str, ...] = ("add", "subtract", "multiply", "divide", "square", "sqrt")
CAMPAIGN = "bench"
HIT_TARGET = 0.99
MULTIPLY_BUDGET_TARGET = 300.0  # seconds for multiply to reach the in-range hit rate target
SWEEP = "our sweep"
METHODS: tuple[str, ...] = (ORIGINAL, KERAS_TUNER, SWEEP)


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
    # The whole budget, as the baselines get it (and trials per minute over all of it).
    config = CampaignConfig(
        name=CAMPAIGN, operations=(name,), trials=None, timeout=budget, stop_when_exact=False
    )
    run_start = datetime.now()  # Optuna stores naive local datetimes
    started = time.monotonic()
    calls = {k: v for k, v in _SWEEP_CALLS.items() if hasattr(v[0], v[1])}
    with _timed_calls(calls) as timings:
        campaign = Campaign(config, Database(url), sweep.nets.training.KerasTrainer())
        if campaign.datasets[name].fingerprint != dataset.fingerprint:
            raise RuntimeError(f"{name}: the sweep's data differs from the baselines' data")
        campaign.run()
    wall = time.monotonic() - started
    with ModelRegistry(url) as registry:
        entry, data = registry.fetch(CAMPAIGN, name)
    model = load_model_bytes(data, label=f"{name} best")
    metrics = reported(evaluate_splits(lambda x: predict(model, x), dataset))
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


# --- the report ------------------------------------------------------------------------------


def render_section(
    quality: Sequence[OperationQuality], budget: float, steps_per_execution: int | None
) -> list[str]:
    """Section 1 of BENCHMARKS.md: every method's metrics, then ours against the baselines."""
    if not quality:
        return []
    lines = [
        "## 1. Model quality per operation",
        "",
        "Same data for all three (`sweep.problem.data.make_dataset`, default `DataSpec`, seed 0: "
        "10,000 integer pairs in [0, 500) split into training and validation, 2,000 unseen "
        "in-range test pairs, 2,000 pairs in the extrapolation band [500, 1000)), the same "
        "wall-clock"
        f" budget ({budget:g} s per operation per method), the same evaluation"
        " (`sweep.problem.metrics.evaluate_splits`); measured one after the other in one process.",
        "",
        "- **original network**: exactly as posted: Dense(3, input_dim=2) linear, Dense(5, relu),"
        " Dense(3, relu), Dense(5, relu), Dense(1, relu); Adam, MSE, 10 epochs, batch 10, raw"
        " integers (input_dim=1 for square and sqrt). Retrained with new seeds until the budget"
        " is spent; each figure is the median over those runs.",
        "- **KerasTuner**: `RandomSearch` (BayesianOptimization needs scikit-learn and SciPy),"
        " objective val_loss, on raw data: 0-3 layers, width 2-64 (log), the same 7 activations,"
        " learning rate 1e-4..3e-2 (log), batch 32/64/128, MSE, the sweep's epoch cap,"
        f" steps_per_execution {steps_per_execution} (`fit`'s fastest setting in"
        " section 2); no trial starts after"
        " the budget and the trial in flight stops at its next epoch end. Best model evaluated.",
        "- **our sweep**: `Campaign(CampaignConfig(trials=None, timeout=budget), sqlite,"
        " KerasTrainer()).run()`"
        " with every other setting at its default; the registry's best model, loaded in safe"
        " mode as a user would pull it, evaluated.",
        "",
        "Hit rate: rounded prediction equals the truth (integer operations) or relative error"
        " ≤ 1e-6 (divide, sqrt). Wall time includes the trial in flight at the deadline.",
        "",
    ]
    rows = []
    for result in quality:
        for method in result.methods:
            m = method.metrics
            rows.append(
                [
                    result.operation,
                    method.method,
                    str(method.runs),
                    f"{method.wall_seconds:.0f}",
                    fraction(m["test_hit_rate"]),
                    significant(m["test_median_relative_error"]),
                    significant(m["test_mae"]),
                    fraction(m["extrapolation_hit_rate"]),
                    significant(m["extrapolation_median_relative_error"]),
                    significant(m["extrapolation_mae"]),
                    method.note,
                ]
            )
    lines += table(
        [
            "operation", "method", "runs / trials", "wall s", "hit rate", "median rel. error",
            "MAE", "extrap. hit rate", "extrap. median rel. error", "extrap. MAE", "note",
        ],
        rows,
    )
    lines += [
        "",
        "Ratios of median relative errors, ours / baseline (below 1: ours is better; 1 with both"
        " at 0 is a tie of exact models):",
        "",
    ]
    rows = []
    for result in quality:
        ours = result.method(SWEEP).metrics
        cells = [result.operation]
        holds = True
        for baseline_name in (ORIGINAL, KERAS_TUNER):
            base = result.method(baseline_name).metrics
            for prefix in ("test_", "extrapolation_"):
                key = f"{prefix}median_relative_error"
                cells.append(significant(ratio(ours[key], base[key])))
                holds = holds and beats(ours[key], base[key])
        cells.append("**yes**" if holds else "no")
        rows.append(cells)
    lines += table(
        [
            "operation", "vs original, in-range", "vs original, extrap.", "vs KerasTuner, in-range",
            "vs KerasTuner, extrap.", "beats both, in-range and extrap.",
        ],
        rows,
    )
    return lines


def throughput_lines(quality: Sequence[OperationQuality]) -> list[str]:
    """Section 2's second half: trials per minute of section 1's sweeps, where time went."""
    if not quality:
        return []
    lines = [
        "",
        "### Trials per minute of a default sweep",
        "",
        "From the sweeps of section 1 (one process, SQLite, defaults, time budget only). The "
        "wall time is split by timing calls in the benchmark process while the sweep runs: "
        "*in train* is time inside `sweep.nets.training.train` (building the model, tracing "
        "its epoch function, the training steps, the per-epoch validation pass and pruning "
        "report, the closing least-squares fit); *epoch reports* is the part of it spent in "
        "Optuna's `report` + `should_prune`; *sampling* is Optuna's `suggest_*`. Training = "
        "in train - epoch reports; *outside training* = 1 - training / wall (trial set-up, "
        "sampling, pruning reports, evaluation on three splits, export, storage). Campaign "
        "set-up (data, schema) is in the wall time too.",
        "",
    ]
    rows = []
    for result in quality:
        wall = result.method(SWEEP).wall_seconds
        reached = result.seconds_to_hit_target
        rows.append(
            [
                result.operation,
                str(result.sweep_trials),
                f"{wall:.0f}",
                f"{result.sweep_trials_per_minute:.1f}",
                f"{result.sweep_train_call_seconds:.1f}",
                f"{result.sweep_epoch_storage_seconds:.1f}",
                f"{result.sweep_sampling_seconds:.1f}",
                _other(wall, result),
                percent(result.sweep_outside_training_share),
                "not reached" if reached is None else f"{reached:.0f}",
                result.best_architecture,
            ]
        )
    lines += table(
        [
            "operation", "counted trials", "wall s", "trials/min", "in train s",
            "epoch reports s", "sampling s", "other s", "outside training",
            "s to first hit rate ≥ 0.99", "best architecture",
        ],
        rows,
    )
    return lines


def _other(wall: float, result: OperationQuality) -> str:
    return f"{wall - result.sweep_train_call_seconds - result.sweep_sampling_seconds:.1f}"


def typical_trial_seconds(quality: Sequence[OperationQuality]) -> float:
    """Median over operations of training seconds per counted trial in section 1's sweeps."""
    return median(q.sweep_training_seconds / q.sweep_trials for q in quality if q.sweep_trials)


def target_lines(quality: Sequence[OperationQuality], budget: float) -> list[str]:
    """The lines for "Where we stand against the targets": ours against both baselines, and
    multiply's hit rate within its budget."""
    if not quality:
        return []
    holding, failing = [], []
    for result in quality:
        ours = result.method(SWEEP).metrics
        missed = []
        for baseline_name in (ORIGINAL, KERAS_TUNER):
            base = result.method(baseline_name).metrics
            for prefix, label in (("test_", "in-range"), ("extrapolation_", "extrap.")):
                key = f"{prefix}median_relative_error"
                if not beats(ours[key], base[key]):
                    figures = f"{significant(ours[key])} vs {significant(base[key])}"
                    missed.append(f"{label} vs {baseline_name} ({figures})")
        if missed:
            failing.append(f"{result.operation}: not beaten {'; '.join(missed)}")
        else:
            holding.append(result.operation)
    verdict = "holds" if not failing else "does not hold yet"
    lines = [
        "- **Our sweep beats the original network and KerasTuner on median relative error,"
        f" in-range and in the extrapolation band, at the same budget ({budget:g} s):"
        f" {verdict}.** Holds for: {', '.join(holding) or 'none'}.",
    ]
    lines += [f"  - {item}" for item in failing]
    multiply = next((q for q in quality if q.operation == "multiply"), None)
    if multiply is not None:
        hit = multiply.method(SWEEP).metrics["test_hit_rate"]
        reached = multiply.seconds_to_hit_target
        if hit >= 0.99 and budget <= MULTIPLY_BUDGET_TARGET:
            state = "holds"
        elif reached is not None and reached <= MULTIPLY_BUDGET_TARGET:
            state = "holds (a trial reached it; the best by validation MAE did not)"
        elif budget < MULTIPLY_BUDGET_TARGET:
            state = f"not shown at this budget ({budget:g} s < {MULTIPLY_BUDGET_TARGET:g} s)"
        else:
            state = "does not hold yet"
        original = multiply.method(ORIGINAL).metrics
        wall = multiply.method(SWEEP).wall_seconds
        lines += [
            f"- **Multiply, in-range hit rate ≥ 0.99 within 5 minutes: {state}.** Our sweep's"
            f" best model: hit rate {fraction(hit)} after {wall:.0f} s; first trial at ≥ 0.99: "
            + ("never" if reached is None else f"after {reached:.0f} s")
            + f". The original network: hit rate {fraction(original['test_hit_rate'])}, MAE"
            f" {significant(original['test_mae'])}.",
        ]
    return lines
