"""The multi-input formulas of section 10 through four methods at one budget, and each
winner's configuration retrained on ten seeds (the NAU-paper protocol of section 8).

Per formula, from its expression (the campaign file a user writes: the expression and its
inputs' real ranges, 10,000 rows, data seed 0), in process, each sweep a `Campaign` on a fresh
SQLite file: our default sweep; the same without startup designs (`startup_designs = false`);
the MLP-only sweep (`family = ["mlp"]`); KerasTuner's RandomSearch on raw data (section 1's
space). Each gets the same budget, N trials or S seconds, whichever comes first; the sweeps
stop at their first exact model, as by default. Every method is judged on the same rows by the
sweep's own evaluation: hit = relative error at most 1e-6; *exact* is the issue's criterion,
hit rate at least 0.999 on unseen in-range rows and 0.99 in the extrapolation band.

Then the default sweep's best configuration (family, structure bounds, normalisation, learning
rate: the stored model spec) is retrained on ten fresh seeds: data seed and training seed 1 to
10 (new draws, new splits, new initialisation), each judged as above.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks._common import load_average, log, median, stored_spec
from benchmarks.exact import wilson_interval
from benchmarks.formulas import FORMULAS, Formula, campaign_toml
from benchmarks.tables import significant, table

__all__ = [
    "KERAS_TUNER",
    "METHODS",
    "MLP_ONLY",
    "NO_DESIGNS",
    "QUICK_FORMULAS",
    "SEEDS",
    "SWEEP",
    "MethodRun",
    "MethodsCase",
    "MethodsResult",
    "campaign_for",
    "formula_design",
    "render_section",
    "run_methods",
    "target_lines",
]

SWEEP = "our sweep"
NO_DESIGNS = "our sweep, no startup designs"
MLP_ONLY = "MLP-only sweep"
KERAS_TUNER = "KerasTuner"
METHODS: tuple[str, ...] = (SWEEP, NO_DESIGNS, MLP_ONLY, KERAS_TUNER)
IN_RANGE_TARGET = 0.999
BAND_TARGET = 0.99
SEEDS = 10
QUICK_FORMULAS: tuple[str, ...] = ("gas", "wave")


@dataclass
class MethodRun:
    method: str
    hit_rate: float = math.nan  # unseen in-range rows
    extrapolation_hit_rate: float = math.nan
    median_relative_error: float = math.nan  # in range
    trials: int = 0  # counted (COMPLETE or PRUNED); KerasTuner: trials run
    wall_seconds: float = math.nan
    trials_to_target: int | None = None
    seconds_to_target: float | None = None
    architecture: str = ""
    error: str = ""

    @property
    def exact(self) -> bool:
        return (self.hit_rate >= IN_RANGE_TARGET
                and self.extrapolation_hit_rate >= BAND_TARGET)


@dataclass
class MethodsCase:
    name: str
    expression: str
    inputs: int
    runs: list[MethodRun] = field(default_factory=list)
    configuration: str = ""  # the default sweep's winner, retrained on the seeds
    seeds: int = 0
    successes: int = 0
    seed_errors: list[str] = field(default_factory=list)
    # The formula family's own design (the same for every formula) on the same seeds.
    design_successes: int = 0
    design_errors: list[str] = field(default_factory=list)
    load: str = ""

    def run(self, method: str) -> MethodRun | None:
        return next((r for r in self.runs if r.method == method), None)


@dataclass
class MethodsResult:
    cases: list[MethodsCase] = field(default_factory=list)
    trials: int = 20
    timeout: float = 30.0
    keras_tuner_epochs: int = 30
    seeds: int = SEEDS


def campaign_for(formula: Formula, method: str, trials: int, timeout: float) -> Any:
    """The campaign file a user writes for `formula`, as `method` changes it."""
    from sweep.search.config import config_from_toml

    raw: dict[str, Any] = tomllib.loads(campaign_toml(formula))
    campaign = raw["campaign"]
    campaign.update(name="methods", trials=trials, timeout=timeout)
    if method == NO_DESIGNS:
        campaign["startup_designs"] = False
    if method == MLP_ONLY:
        raw["space"] = {"family": ["mlp"]}
    config = config_from_toml(raw)
    config.validate()
    return config


def _sweep(formula: Formula, method: str, folder: Path, trials: int, timeout: float
           ) -> tuple[MethodRun, Any, dict[str, Any]]:
    """One campaign on a fresh SQLite file: the run, its dataset, the best model's params."""
    from storage import Database, ModelRegistry
    from sweep.nets.training import KerasTrainer
    from sweep.search.campaign import Campaign

    config = campaign_for(formula, method, trials, timeout)
    url = f"sqlite:///{folder / (str(METHODS.index(method)) + '.db')}"
    run_start = datetime.now()
    started = time.monotonic()
    with Campaign(config, Database(url), KerasTrainer()) as campaign:
        campaign.run()
        dataset = campaign.datasets[formula.name]
        finished = [t for t in campaign.studies[formula.name].get_trials(deepcopy=False)
                    if t.state.name in ("COMPLETE", "PRUNED")]
    wall = time.monotonic() - started
    with ModelRegistry(url) as registry:
        entry = registry.best(config.name, formula.name)
    reached = [
        t for t in sorted(finished, key=lambda t: t.number)
        if (t.user_attrs.get("test_hit_rate") or 0.0) >= IN_RANGE_TARGET
        and (t.user_attrs.get("extrapolation_hit_rate") or 0.0) >= BAND_TARGET
        and t.datetime_complete is not None
    ]
    run = MethodRun(method, trials=len(finished), wall_seconds=wall)
    if reached and reached[0].datetime_complete is not None:
        run.trials_to_target = reached[0].number + 1
        run.seconds_to_target = (reached[0].datetime_complete - run_start).total_seconds()
    if entry is None:
        run.error = "no model promoted"
        return run, dataset, {}
    metrics = entry.metrics
    run.hit_rate = float(metrics.get("test_hit_rate", math.nan))
    run.extrapolation_hit_rate = float(metrics.get("extrapolation_hit_rate", math.nan))
    run.median_relative_error = float(metrics.get("test_median_relative_error", math.nan))
    run.architecture = str(entry.params.get("architecture") or "")
    return run, dataset, dict(entry.params)


def _keras_tuner(dataset: Any, folder: Path, trials: int, timeout: float, epochs: int
                 ) -> MethodRun:
    from benchmarks.baselines import run_keras_tuner

    result = run_keras_tuner(dataset, timeout, epochs=epochs, steps_per_execution=32,
                             workdir=folder, max_trials=trials)
    metrics = result.metrics
    return MethodRun(
        KERAS_TUNER,
        hit_rate=metrics.get("test_hit_rate", math.nan),
        extrapolation_hit_rate=metrics.get("extrapolation_hit_rate", math.nan),
        median_relative_error=metrics.get("test_median_relative_error", math.nan),
        trials=result.runs, wall_seconds=result.wall_seconds,
        architecture=result.note.removeprefix("best: "),
    )


def formula_design() -> Any:
    """The formula family's startup design (its widest settings) as the trainer takes it."""
    from sweep.search.designs import startup_designs
    from sweep.search.space import SearchSpace, spec_from_params

    space = SearchSpace()
    [design] = [d for d in startup_designs(space) if d.get("family") == "formula"]
    return spec_from_params(design, space)


def _retrain(formula: Formula, spec: Any, seeds: int) -> tuple[int, list[str]]:
    """The NAU protocol: the configuration on `seeds` fresh data and training seeds."""
    from sweep.nets.training import KerasTrainer
    from sweep.problem.data import make_dataset
    from sweep.problem.metrics import evaluate_splits
    from sweep.search.config import config_from_toml

    config = config_from_toml(tomllib.loads(campaign_toml(formula)))
    [operation] = config.resolved_operations()
    trainer = KerasTrainer()
    successes, errors = 0, []
    for seed in range(1, seeds + 1):
        data = make_dataset(operation, dataclasses.replace(config.data, seed=seed))
        try:
            model = trainer.train(spec, data.x_train, data.y_train, data.x_val, data.y_val,
                                  seed=seed)
        except Exception as e:  # a diverged fit is a failed seed, not a failed benchmark
            errors.append(f"seed {seed}: {type(e).__name__}: {e}"[:200])
            continue
        metrics = evaluate_splits(model.predict, data)
        successes += (metrics.get("test_hit_rate", 0.0) >= IN_RANGE_TARGET
                      and metrics.get("extrapolation_hit_rate", 0.0) >= BAND_TARGET)
    return successes, errors


def run_methods(
    names: Sequence[str] | None = None,
    *,
    trials: int = 20,
    timeout: float = 30.0,
    keras_tuner_epochs: int = 30,
    seeds: int = SEEDS,
    on_case: Callable[[MethodsCase], None] | None = None,
) -> MethodsResult:
    """Every chosen formula (default: all of section 10's) through the four methods."""
    unknown = sorted(set(names or ()) - {f.name for f in FORMULAS})
    if unknown:
        raise ValueError(f"unknown formula(s) {', '.join(unknown)}")
    chosen = [f for f in FORMULAS if names is None or f.name in names]
    result = MethodsResult(trials=trials, timeout=timeout,
                           keras_tuner_epochs=keras_tuner_epochs, seeds=seeds)
    for formula in chosen:
        case = MethodsCase(formula.name, formula.expression, len(formula.bounds),
                           load=load_average())
        with tempfile.TemporaryDirectory(prefix=f"methods_{formula.name}_") as scratch:
            folder = Path(scratch)
            dataset, best = None, {}
            for method in METHODS[:-1]:
                log(f"formula-methods: {formula.name}: {method}")
                try:
                    run, data, params = _sweep(formula, method, folder, trials, timeout)
                except Exception as e:  # one method's failure costs only its own row
                    run = MethodRun(method, error=f"{type(e).__name__}: {e}")
                    data, params = None, {}
                case.runs.append(run)
                if method == SWEEP:
                    dataset, best = data, params
            log(f"formula-methods: {formula.name}: {KERAS_TUNER}")
            if dataset is None:
                case.runs.append(MethodRun(KERAS_TUNER, error="no dataset (the sweep failed)"))
            else:
                case.runs.append(
                    _keras_tuner(dataset, folder, trials, timeout, keras_tuner_epochs))
        if best:
            log(f"formula-methods: {formula.name}: the winner on {seeds} seeds")
            case.configuration = str(best.get("architecture") or "")
            case.seeds = seeds
            case.successes, case.seed_errors = _retrain(formula, stored_spec(best), seeds)
            log(f"formula-methods: {formula.name}: the formula design on {seeds} seeds")
            case.design_successes, case.design_errors = _retrain(
                formula, formula_design(), seeds)
        result.cases.append(case)
        if on_case is not None:
            on_case(case)
    return result


# --- the report -------------------------------------------------------------------------------


def _rate(value: float) -> str:
    return "—" if math.isnan(value) else ("1" if value == 1 else f"{value:.3f}")


def _target(run: MethodRun) -> str:
    if run.trials_to_target is None or run.seconds_to_target is None:
        return "never" if run.method != KERAS_TUNER else "—"
    return f"{run.seconds_to_target:.0f} s, {run.trials_to_target} trials"


def render_section(result: MethodsResult | None, number: int = 12) -> list[str]:
    if result is None or not result.cases:
        return []
    lines = [
        f"## {number}. Multi-input formulas: the search against its alternatives", "",
        f"Per formula of section 10, from its expression (the campaign file with its inputs'"
        f" real ranges, 10,000 rows, data seed 0), in one process, each sweep on a fresh"
        f" SQLite file: our default sweep, the same without startup designs, the MLP-only sweep"
        f" (`family = [\"mlp\"]`) and KerasTuner's RandomSearch on raw data (section 1's"
        f" space, {result.keras_tuner_epochs} epochs). The same budget for each:"
        f" {result.trials} trials or {result.timeout:g} s, whichever comes first; the sweeps"
        " stop at their first exact model, as by default. All are judged on the same rows by"
        " the sweep's evaluation: hit = relative error ≤ 1e-6; *exact*: hit rate ≥ 0.999 on"
        " unseen in-range rows and ≥ 0.99 in the extrapolation band. *to target*: the first"
        " trial whose own evaluation was exact (seconds from the campaign's start). *trials*:"
        " counted, or KerasTuner's trials run.", "",
    ]
    rows = []
    for case in result.cases:
        for run in case.runs:
            rows.append([
                case.name, f"`{case.expression}`", run.method,
                run.error[:60] if run.error else run.architecture[:70],
                _rate(run.hit_rate), _rate(run.extrapolation_hit_rate),
                "yes" if run.exact else "no", significant(run.median_relative_error),
                str(run.trials), _target(run),
                "—" if math.isnan(run.wall_seconds) else f"{run.wall_seconds:.1f}",
            ])
    lines += table(
        ["formula", "expression", "method", "best architecture", "hit rate in range",
         "hit rate extrap.", "exact", "median rel. error in range", "trials", "to target",
         "wall s"], rows)
    lines += ["", *_summary(result), ""]
    lines += [
        f"**NAU-paper protocol.** Per formula, the default sweep's best configuration, and the"
        f" formula family's startup design (degree 3, up to 6 terms, functions: the same for"
        f" every formula), each retrained on {result.seeds} seeds (data seed and training seed"
        f" 1 to {result.seeds}: new draws, new splits, new initialisation); success = exact as"
        " above; Wilson 95% interval.", "",
    ]
    seed_rows = []
    for case in result.cases:
        if not case.seeds:
            continue
        for configuration, successes, errors in (
            (case.configuration, case.successes, case.seed_errors),
            ("formula family's design", case.design_successes, case.design_errors),
        ):
            low, high = wilson_interval(successes, case.seeds)
            seed_rows.append([
                case.name, configuration[:80], f"{successes}/{case.seeds}",
                f"[{low:.2f}, {high:.2f}]", "; ".join(errors)[:80] or "—",
            ])
    lines += table(["formula", "configuration", "successes", "Wilson 95%", "errors"],
                   seed_rows)
    lines += ["", "Load average (1, 5, 15 min) at the start of each formula: "
              + ", ".join(f"{c.name}: {c.load}" for c in result.cases) + "."]
    return lines


def _summary(result: MethodsResult) -> list[str]:
    lines = []
    for method in METHODS:
        runs = [r for c in result.cases if (r := c.run(method)) is not None]
        exact = [r for r in runs if r.exact]
        to_target = [r.seconds_to_target for r in exact if r.seconds_to_target is not None]
        timing = (f"; median {median(to_target):.0f} s to target" if to_target else "")
        lines.append(f"- {method}: {len(exact)} of {len(runs)} exact{timing}.")
    return lines


def target_lines(result: MethodsResult | None) -> list[str]:
    if result is None or not result.cases:
        return []
    runs = [r for c in result.cases if (r := c.run(SWEEP)) is not None]
    exact = sum(r.exact for r in runs)
    others = {m: sum(bool((r := c.run(m)) and r.exact) for c in result.cases)
              for m in METHODS[1:]}
    seeded = [c for c in result.cases if c.seeds]
    held = sum(c.successes == c.seeds for c in seeded)
    design = sum(c.design_successes == c.seeds for c in seeded)
    return [
        f"- **Multi-input formulas against the alternatives, same budget** ({result.trials}"
        f" trials or {result.timeout:g} s): our sweep {exact} of {len(runs)} exact; "
        + ", ".join(f"{m} {n}" for m, n in others.items())
        + f"; exact on all {result.seeds} seeds: the winner for {held} of {len(seeded)}"
        f" formulas, the formula family's design for {design} (section 12).",
    ]
