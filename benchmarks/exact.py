"""Exact networks for expressions and signed ranges (issue 15), side by side in one run.

Per case (an expression on [0, 500), or a built-in or expression on the signed [-500, 500)):
the original question's network (one seed), KerasTuner (the quality section's search, stopped by
the clock), our sweep with the MLP-only space it had before the power family (`family =
["mlp"]`: the same space and startup designs as before; the closing fit now scales its columns),
our default sweep, and our default sweep without startup designs. The sweeps' best models are
pulled from the registry and judged by a fresh process that imports only Keras and the
registered layers, loads each file in safe mode and feeds raw integer inputs: what a user who
pulled the model gets. Bands: unseen in-range pairs, [high, 2 high), [2 high, 10 high) and, on
signed ranges, [2 low, low); both inputs drawn in the band, pairs outside the domain dropped.

Then the NAU paper's protocol (Madsen & Johansen, ICLR 2020): the best configuration of our
default sweep retrained on 10 seeds (fresh data and training seed each), the success rate with
a Wilson 95% interval; success = hit rate >= 0.999 in range and >= 0.99 in every band above and
below, measured on the exported model.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import load_average, log, stored_spec

__all__ = ["CASES", "ExactCase", "ExactResult", "run_exact", "wilson_interval"]

# name, expression (None: a built-in), low, high.
CASES: tuple[tuple[str, str | None, int, int], ...] = (
    ("abpa", "a*b+a", 0, 500),
    ("diffsq", "(a-b)**2", 0, 500),
    ("sumsq", "a*a+b*b", 0, 500),
    ("cubeb", "a**3-b", 0, 500),
    ("sqsq", "a*a*b*b", 0, 500),
    ("ratios", "a/b+b/a", 0, 500),
    ("plusinv", "(a*b+1)/b", 0, 500),
    ("add", None, -500, 500),
    ("subtract", None, -500, 500),
    ("multiply", None, -500, 500),
    ("divide", None, -500, 500),
    ("square", None, -500, 500),
    ("sqrt", None, -500, 500),
    ("abmb", "a*b-b", -500, 500),
)
QUICK_CASES: tuple[str, ...] = ("multiply",)

ORIGINAL = "original network"
KERAS_TUNER = "KerasTuner"
BEFORE = "sweep before (MLP space)"
SWEEP = "our sweep"
NO_DESIGNS = "our sweep, no startup designs"
METHODS: tuple[str, ...] = (ORIGINAL, KERAS_TUNER, BEFORE, SWEEP, NO_DESIGNS)
BANDS: tuple[str, ...] = ("in range", "[h, 2h)", "[2h, 10h)", "[2l, l)")
IN_RANGE_TARGET, BAND_TARGET = 0.999, 0.99
BAND_ROWS = 2000
SEEDS = 10


@dataclass
class MethodRun:
    method: str
    hit_rates: dict[str, float]  # band -> hit rate (NaN where not measured)
    median_relative_errors: dict[str, float]
    trials: int = 0
    wall_seconds: float = math.nan
    seconds_to_target: float | None = None
    trials_to_target: int | None = None
    architecture: str = ""


@dataclass
class ExactCase:
    name: str
    expression: str | None
    low: int
    high: int
    integer_valued: bool
    runs: list[MethodRun] = field(default_factory=list)
    seed_successes: int = 0
    seed_count: int = 0
    seed_architecture: str = ""
    # The same protocol for the best configuration of the MLP-only sweep (before).
    before_successes: int = 0
    before_count: int = 0
    before_architecture: str = ""
    load: str = ""

    @property
    def label(self) -> str:
        what = f"`{self.expression}`" if self.expression else self.name
        return f"{what} on [{self.low}, {self.high})"


@dataclass
class ExactResult:
    cases: list[ExactCase] = field(default_factory=list)
    budget: float = math.nan
    trials: int = 0
    original_epochs: int = 10


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (the NAU paper reports these)."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _bands(operation: Any, low: int, high: int, x_test: np.ndarray, seed: int
           ) -> dict[str, np.ndarray]:
    """Integer input pairs per band, within the operation's domain."""
    rng = np.random.default_rng(seed)
    arity = operation.arity
    ranges = {"[h, 2h)": (high, 2 * high), "[2h, 10h)": (2 * high, 10 * high)}
    if low < 0:
        ranges["[2l, l)"] = (2 * low, low)
    bands = {"in range": np.asarray(x_test, dtype=np.int64)}
    for band, (start, stop) in ranges.items():
        x = rng.integers(start, stop, size=(BAND_ROWS * 2, arity), dtype=np.int64)
        columns = [x[:, i] for i in range(arity)]
        with np.errstate(all="ignore"):
            valid = operation.valid(*columns)
        bands[band] = x[valid][:BAND_ROWS]
    return bands


def _truths(operation: Any, bands: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        band: operation.compute(*[x[:, i] for i in range(operation.arity)])
        for band, x in bands.items()
    }


def _score(predictions: dict[str, np.ndarray], truths: dict[str, np.ndarray], integer: bool
           ) -> tuple[dict[str, float], dict[str, float]]:
    from sweep.problem.metrics import hits, relative_errors

    hit_rates, errors = {}, {}
    for band in BANDS:
        if band not in truths or len(truths[band]) == 0:
            hit_rates[band] = errors[band] = math.nan
            continue
        p = np.asarray(predictions[band], dtype=np.float64)
        with np.errstate(all="ignore"):
            hit_rates[band] = float(np.mean(hits(p, truths[band], integer)))
            relative = relative_errors(p, truths[band])
        errors[band] = float(np.median(np.where(np.isfinite(relative), relative, np.inf)))
    return hit_rates, errors


def _meets_target(hit_rates: dict[str, float]) -> bool:
    measured = {b: v for b, v in hit_rates.items() if not math.isnan(v)}
    return measured.get("in range", 0.0) >= IN_RANGE_TARGET and all(
        v >= BAND_TARGET for b, v in measured.items() if b != "in range"
    )


# --- the fresh-process judge ----------------------------------------------------------------


def judge_files(jobs_file: Path) -> None:
    """In a process of its own: load each .keras file in safe mode, answer raw integer inputs.

    A job: {"model": PATH, "inputs": PATH.npz, "out": PATH.npz}. Imports only Keras and the
    registered layers (sweep.nets.layers), as a user of a pulled file would.
    """
    import keras

    import sweep.nets.layers  # noqa: F401  (registers the layers)

    for job in json.loads(jobs_file.read_text()):
        model = keras.saving.load_model(job["model"], safe_mode=True)
        inputs = np.load(job["inputs"])
        answers = {}
        for band in inputs.files:
            x = inputs[band]  # int64: converted to float64 exactly (|x| < 2**53)
            y = model(np.asarray(x, dtype=np.float64), training=False)
            answers[band] = np.asarray(keras.ops.convert_to_numpy(y), np.float64).reshape(-1)
        np.savez(job["out"], **answers)  # type: ignore[arg-type]


def _judge(jobs: list[dict[str, str]], folder: Path) -> None:
    jobs_file = folder / "jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run(
        [sys.executable, "-m", "benchmarks.exact", str(jobs_file)], check=True,
        cwd=Path(__file__).resolve().parent.parent, env=env,
    )


# --- the methods ----------------------------------------------------------------------------


def _original(dataset: Any, bands: dict[str, np.ndarray], epochs: int) -> dict[str, np.ndarray]:
    import keras

    from benchmarks.baselines import original_network
    from sweep.nets.training import predict

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = original_network(dataset.arity)
    model.fit(np.asarray(dataset.x_train, np.float32), np.asarray(dataset.y_train, np.float32),
              epochs=epochs, batch_size=10, verbose=0)
    return {band: predict(model, x) for band, x in bands.items()}


def _sweep(
    case: ExactCase, dataset: Any, folder: Path, method: str, budget: float, trials: int
) -> tuple[MethodRun, Path, dict[str, Any]]:
    """One campaign on a fresh SQLite file; the best model's file; the best params."""
    from storage import Database, ModelRegistry
    from sweep.nets.training import KerasTrainer
    from sweep.problem.data import DataSpec
    from sweep.search.campaign import Campaign
    from sweep.search.config import CampaignConfig
    from sweep.search.space import SearchSpace

    slug = method.split()[-1].strip("()") + "_" + case.name
    url = f"sqlite:///{folder / f'{slug}.db'}"
    space = SearchSpace.from_dict({"family": ["mlp"]}) if method == BEFORE else SearchSpace()
    config = CampaignConfig(
        name="exact", operations=(case.name,), trials=trials, timeout=budget,
        expressions={case.name: case.expression} if case.expression else {},
        data=DataSpec(low=case.low, high=case.high), space=space,
        startup_designs=method != NO_DESIGNS, stop_when_exact=False,
    )
    run_start = datetime.now()
    started = time.monotonic()
    with Campaign(config, Database(url), KerasTrainer()) as campaign:
        if campaign.datasets[case.name].fingerprint != dataset.fingerprint:
            raise RuntimeError(f"{case.name}: the sweep's data differs from the benchmark's")
        campaign.run()
        study = campaign.studies[case.name]
        finished = [t for t in study.get_trials(deepcopy=False)
                    if t.state.name in ("COMPLETE", "PRUNED")]
    wall = time.monotonic() - started
    with ModelRegistry(url) as registry:
        entry, data = registry.fetch("exact", case.name)
    path = folder / f"{slug}.keras"
    path.write_bytes(data)
    reached = [
        t for t in sorted(finished, key=lambda t: t.number)
        if (t.user_attrs.get("test_hit_rate") or 0.0) >= IN_RANGE_TARGET
        and (t.user_attrs.get("extrapolation_hit_rate") or 0.0) >= BAND_TARGET
        and t.datetime_complete is not None
    ]
    first = reached[0].datetime_complete if reached else None
    run = MethodRun(
        method, {}, {}, trials=len(finished), wall_seconds=wall,
        seconds_to_target=(first - run_start).total_seconds() if first is not None else None,
        trials_to_target=reached[0].number + 1 if reached else None,
        architecture=str(entry.params.get("architecture") or ""),
    )
    return run, path, dict(entry.params)


def _seeds(case: ExactCase, params: dict[str, Any], operation: Any) -> tuple[int, int]:
    """The NAU protocol: retrain the configuration on SEEDS fresh seeds; count successes."""
    from sweep.nets.training import KerasTrainer
    from sweep.problem.data import DataSpec, make_dataset

    spec = stored_spec(params)
    trainer = KerasTrainer()
    successes = 0
    for seed in range(SEEDS):
        data = make_dataset(operation, DataSpec(low=case.low, high=case.high, seed=seed + 1))
        model = trainer.train(spec, data.x_train, data.y_train, data.x_val, data.y_val,
                              seed=seed + 1)
        bands = _bands(operation, case.low, case.high, data.x_test, seed=100 + seed)
        answers = {band: model.predict(x.astype(np.float64)) for band, x in bands.items()}
        hit_rates, _ = _score(answers, _truths(operation, bands), case.integer_valued)
        successes += _meets_target(hit_rates)
    return successes, SEEDS


def run_exact(
    names: Sequence[str] | None = None,
    *,
    budget: float,
    trials: int,
    original_epochs: int = 10,
    keras_tuner_epochs: int = 30,
    steps_per_execution: int = 32,
    seeds: bool = True,
    on_case: Callable[[ExactCase], None] | None = None,
) -> ExactResult:
    """Every method on every case (or the `names` given), one after the other."""
    import keras

    from benchmarks.baselines import run_keras_tuner
    from sweep.problem.data import DataSpec, make_dataset
    from sweep.problem.operations import resolve_operations

    result = ExactResult(budget=budget, trials=trials, original_epochs=original_epochs)
    chosen = [c for c in CASES if names is None or c[0] in names]
    with tempfile.TemporaryDirectory(prefix="sweep-bench-exact-") as scratch:
        folder = Path(scratch)
        for name, expression, low, high in chosen:
            operation = resolve_operations((name,), {name: expression} if expression else {})[0]
            dataset = make_dataset(operation, DataSpec(low=low, high=high))
            case = ExactCase(name, expression, low, high, operation.integer_valued,
                             load=load_average())
            bands = _bands(operation, low, high, dataset.x_test, seed=7)
            truths = _truths(operation, bands)
            inputs = folder / f"{name}.inputs.npz"
            np.savez(inputs, **bands)  # type: ignore[arg-type]
            log(f"exact {case.label}: original network")
            hit_rates, errors = _score(_original(dataset, bands, original_epochs), truths,
                                       case.integer_valued)
            case.runs.append(MethodRun(ORIGINAL, hit_rates, errors, trials=1,
                                       architecture="2-3-5-3-5-1 relu (as posted)"))
            log(f"exact {case.label}: KerasTuner ({budget:g} s)")
            keras.backend.clear_session()
            tuner = run_keras_tuner(dataset, budget, epochs=keras_tuner_epochs,
                                    steps_per_execution=steps_per_execution, workdir=folder)
            # Its own judge: the test set and the dataset's band [high, 2 high) only.
            case.runs.append(MethodRun(
                KERAS_TUNER,
                {"in range": tuner.metrics["test_hit_rate"],
                 "[h, 2h)": tuner.metrics["extrapolation_hit_rate"]},
                {"in range": tuner.metrics["test_median_relative_error"],
                 "[h, 2h)": tuner.metrics["extrapolation_median_relative_error"]},
                trials=tuner.runs, wall_seconds=tuner.wall_seconds,
                architecture=tuner.note.removeprefix("best: "),
            ))
            jobs, sweep_runs = [], []
            best_params: dict[str, dict[str, Any]] = {}
            for method in (BEFORE, SWEEP, NO_DESIGNS):
                log(f"exact {case.label}: {method} ({budget:g} s, {trials} trials)")
                keras.backend.clear_session()
                run, path, params = _sweep(case, dataset, folder, method, budget, trials)
                best_params[method] = params
                out = folder / f"{path.stem}.answers.npz"
                jobs.append({"model": str(path), "inputs": str(inputs), "out": str(out)})
                sweep_runs.append((run, out))
            _judge(jobs, folder)
            for run, out in sweep_runs:
                answers = np.load(out)
                run.hit_rates, run.median_relative_errors = _score(
                    {band: answers[band] for band in answers.files}, truths, case.integer_valued
                )
                case.runs.append(run)
            for run in case.runs:
                for band in BANDS:
                    run.hit_rates.setdefault(band, math.nan)
                    run.median_relative_errors.setdefault(band, math.nan)
            if seeds:
                log(f"exact {case.label}: best configurations on {SEEDS} seeds")
                keras.backend.clear_session()
                ours, before = best_params[SWEEP], best_params[BEFORE]
                case.seed_successes, case.seed_count = _seeds(case, ours, operation)
                case.seed_architecture = str(ours.get("architecture") or "")
                keras.backend.clear_session()
                case.before_successes, case.before_count = _seeds(case, before, operation)
                case.before_architecture = str(before.get("architecture") or "")
            result.cases.append(case)
            if on_case is not None:
                on_case(case)
    return result




if __name__ == "__main__":
    judge_files(Path(sys.argv[1]))


# --- the report -----------------------------------------------------------------------------


def _cell(value: float) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:.4f}" if value < 1 else "1"


def _error(value: float) -> str:
    if math.isnan(value):
        return "—"
    return "0" if value == 0 else f"{value:.1e}"


def render_section(result: ExactResult | None, number: int = 8) -> list[str]:
    """Section `number` of BENCHMARKS.md: one table row per case and method."""
    if result is None or not result.cases:
        return []
    lines = [
        f"## {number}. Exact networks: expressions and signed ranges",
        "",
        "Per case, in one run: the original question's network (one seed,"
        f" {result.original_epochs} epochs, batch 10),"
        f" KerasTuner ({result.budget:g} s, raw data; judged on the test set and [h, 2h) only),"
        " our sweep with the MLP-only space it had before the power family"
        " (`family = [\"mlp\"]`), our default sweep, and our default sweep without startup"
        f" designs; each sweep {result.trials} trials or {result.budget:g} s, whichever comes"
        " first, default data (10,000 pairs, seed 0). The sweeps' best models are pulled from"
        " the registry and answered by a fresh process that loads them in safe mode (Keras and"
        " the registered layers only) with raw integer inputs. Hit = rounded prediction equals"
        " the truth (integer-valued) or relative error ≤ 1e-6 (real-valued); 2,000 pairs per"
        " band, both inputs in the band (h = high, l = low). *to target*: the first trial whose"
        f" own evaluation reached hit rate ≥ {IN_RANGE_TARGET} in range and ≥ {BAND_TARGET} in"
        " [h, 2h) (seconds from the start of the campaign, and trials).",
        "",
    ]
    header = ("case", "method", "best architecture", *BANDS, "median rel. error [2h, 10h)",
              "trials", "to target")
    rows = []
    for case in result.cases:
        for run in case.runs:
            target = (
                "—" if run.method in (ORIGINAL, KERAS_TUNER)
                else "never" if run.seconds_to_target is None
                else f"{run.seconds_to_target:.0f} s, {run.trials_to_target} trials"
            )
            rows.append([
                case.label, run.method, run.architecture.replace("|", "/"),
                *[_cell(run.hit_rates[band]) for band in BANDS],
                _error(run.median_relative_errors["[2h, 10h)"]),
                str(run.trials), target,
            ])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    seeded = [c for c in result.cases if c.seed_count]
    if seeded:
        lines += [
            "",
            f"**NAU-paper protocol.** The best configuration per case of our default sweep and of"
            f" the MLP-only sweep (before), each retrained on {SEEDS} seeds (data seed and"
            f" training seed 1..{SEEDS}); success = hit rate ≥ {IN_RANGE_TARGET} in range and ≥"
            f" {BAND_TARGET} in every band above and below (the exported model, in process);"
            " Wilson 95% interval.",
            "",
            "| case | sweep | configuration | successes | success rate | Wilson 95% |",
            "|---|---|---|---|---|---|",
        ]
        for case in seeded:
            for label, wins, count, shape in (
                (SWEEP, case.seed_successes, case.seed_count, case.seed_architecture),
                (BEFORE, case.before_successes, case.before_count, case.before_architecture),
            ):
                if not count:
                    continue
                low, high = wilson_interval(wins, count)
                lines.append(
                    f"| {case.label} | {label} | {shape} | {wins}/{count} | {wins / count:.2f} |"
                    f" [{low:.2f}, {high:.2f}] |"
                )
    loads = ", ".join(f"{c.name}: {c.load}" for c in result.cases)
    lines += ["", f"Load average (1, 5, 15 min) at the start of each case: {loads}."]
    return lines


def target_lines(result: ExactResult | None) -> list[str]:
    """The line(s) for "Where we stand against the targets"."""
    if result is None or not result.cases:
        return []
    exact, missed, slow = [], [], []
    for case in result.cases:
        ours = next(r for r in case.runs if r.method == SWEEP)
        if _meets_target(ours.hit_rates):
            exact.append(case.name)
        else:
            shown = ", ".join(f"{b} {_cell(v)}" for b, v in ours.hit_rates.items()
                              if not math.isnan(v))
            missed.append(f"{case.label}: {shown}")
        if ours.seconds_to_target is None or ours.seconds_to_target > 300:
            slow.append(case.name)
    state = "holds" if not missed and not slow else "does not hold yet"
    lines = [
        "- **Expressions (polynomials of degree ≤ 4, sums of integer-power products) and the"
        " signed built-ins exact from the exported model, in range (≥ 0.999) and in every band"
        f" above and below (≥ 0.99), within 5 minutes: {state}** (section 8; exact:"
        f" {', '.join(exact) or 'none'}).",
    ]
    lines += [f"  - not exact: {item}" for item in missed]
    if slow:
        lines.append(f"  - target not reached within 5 minutes: {', '.join(slow)}")
    return lines
