"""BENCHMARKS.md from the measured results: tables, medians, ratios and the targets' status."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks._common import median
from benchmarks.exact import ExactResult
from benchmarks.exact import render_section as _exact_section
from benchmarks.exact import target_lines as _exact_targets
from benchmarks.memory import BATCH_SIZE, EPOCHS, OPERATION, SHAPES, MemoryRun
from benchmarks.overhead import OPTUNA, PARTS, WINDOW, OverheadResult
from benchmarks.overhead import SWEEP as SWEEP_MACHINERY
from benchmarks.quality import (
    KERAS_TUNER,
    ORIGINAL,
    SWEEP,
    OperationQuality,
)
from benchmarks.scale import ScaleRun
from benchmarks.scale import render_section as _scale_section
from benchmarks.scale import target_lines as _scale_targets
from benchmarks.serving import ServingResult
from benchmarks.speed import SpeedResult
from benchmarks.startup import StartupResult
from benchmarks.workers import SeedSweep, WorkerRun

RATIO_TARGET = 1.8
OVERHEAD_TARGET = 0.05
# Issue 18: the sweep's cost per trial outside training, against plain Optuna's, at these sizes.
OPTUNA_TARGET = 1.0
OPTUNA_TARGET_SIZES = (100, 1000)
MULTIPLY_BUDGET_TARGET = 300.0
SERVE_ONE_PAIR_TARGET_MS = 5.0  # p50, 8 concurrent clients
SERVE_BIG_TARGET_MS = 50.0  # p50 of a 10,000-pair request


@dataclass
class Results:
    command: str
    date: str
    quick: bool
    budget: float
    machine: dict[str, str]
    load_start: str
    load_end: str = ""
    total_seconds: float = math.nan
    steps_per_execution: int | None = None
    quality: list[OperationQuality] = field(default_factory=list)
    speed: list[SpeedResult] = field(default_factory=list)
    overhead: list[OverheadResult] = field(default_factory=list)
    export_ms: float = math.nan
    workers: list[WorkerRun] = field(default_factory=list)
    worker_seed: SeedSweep | None = None
    worker_settings: str = ""
    memory: list[MemoryRun] = field(default_factory=list)
    startup: list[StartupResult] = field(default_factory=list)
    serving: ServingResult | None = None
    exact: ExactResult | None = None
    scale: list[ScaleRun] = field(default_factory=list)
    scale_settings: str = ""
    section_loads: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    complete: bool = True  # False while the run is still going (the report is rewritten)


# --- number formatting --------------------------------------------------------------------------


def _g(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{value:.{digits}g}"


def _rate(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.3f}"


def _pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{100 * value:.1f}%"


def ratio(ours: float, baseline: float) -> float:
    """ours / baseline; below 1 means ours is better. 0/0 (both exact) is 1: a tie."""
    if math.isnan(ours) or math.isnan(baseline):
        return math.nan
    if baseline == 0:
        return 1.0 if ours == 0 else math.inf
    return ours / baseline


def beats(ours: float, baseline: float) -> bool:
    """Strictly better, or both exactly 0 (nothing left to beat)."""
    if math.isnan(ours) or math.isnan(baseline):
        return False
    return ours < baseline or ours == baseline == 0


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# --- sections -----------------------------------------------------------------------------------


def _run_section(results: Results) -> list[str]:
    lines = [
        "## This run",
        "",
        f"- Date: {results.date}",
        f"- Command: `{results.command}`",
        f"- Mode: {'quick (smoke test; figures are not meaningful)' if results.quick else 'full'};"
        f" budget {results.budget:g} s per operation per method",
        f"- Total wall time: {results.total_seconds / 60:.1f} min",
        f"- Load average (1, 5, 15 min) before: {results.load_start}; after: {results.load_end}."
        f" The machine has {results.machine.get('cores (nproc)', '?')} cores and was shared with"
        " other processes during the run (a load above the core count means this benchmark did"
        " not have the machine to itself), so absolute figures are noisy; figures compared with"
        " each other were measured in the same run.",
    ]
    if results.section_loads:
        lines += ["", "Load per section (before → after, wall time):", ""]
        lines += _table(
            ["section", "load before", "load after", "minutes"],
            [
                [name, before, after, f"{seconds / 60:.1f}"]
                for name, (before, after, seconds) in results.section_loads.items()
            ],
        )
    for note in results.skipped:
        lines += ["", f"- Note: {note}"]
    for failure in results.failures:
        lines += ["", f"- **Failed** (its figures are missing): {failure}"]
    lines += ["", "## Machine", ""]
    lines += _table(["", ""], [[key, value] for key, value in results.machine.items()])
    return lines


def _quality_section(results: Results) -> list[str]:
    if not results.quality:
        return []
    lines = [
        "## 1. Model quality per operation",
        "",
        "Same data for all three (`sweep.problem.data.make_dataset`, default `DataSpec`, seed 0: "
        "10,000 integer pairs in [0, 500) split into training and validation, 2,000 unseen "
        "in-range test pairs, 2,000 pairs in the extrapolation band [500, 1000)), the same "
        "wall-clock"
        f" budget ({results.budget:g} s per operation per method), the same evaluation"
        " (`sweep.problem.metrics.evaluate_splits`); measured one after the other in one process.",
        "",
        "- **original network**: exactly as posted: Dense(3, input_dim=2) linear, Dense(5, relu),"
        " Dense(3, relu), Dense(5, relu), Dense(1, relu); Adam, MSE, 10 epochs, batch 10, raw"
        " integers (input_dim=1 for square and sqrt). Retrained with new seeds until the budget"
        " is spent; each figure is the median over those runs.",
        "- **KerasTuner**: `RandomSearch` (BayesianOptimization needs scikit-learn and SciPy),"
        " objective val_loss, on raw data: 0-3 layers, width 2-64 (log), the same 7 activations,"
        " learning rate 1e-4..3e-2 (log), batch 32/64/128, MSE, the sweep's epoch cap,"
        f" steps_per_execution {results.steps_per_execution} (`fit`'s fastest setting in"
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
    for quality in results.quality:
        for method in quality.methods:
            m = method.metrics
            rows.append(
                [
                    quality.operation,
                    method.method,
                    str(method.runs),
                    f"{method.wall_seconds:.0f}",
                    _rate(m["test_hit_rate"]),
                    _g(m["test_median_relative_error"]),
                    _g(m["test_mae"]),
                    _rate(m["extrapolation_hit_rate"]),
                    _g(m["extrapolation_median_relative_error"]),
                    _g(m["extrapolation_mae"]),
                    method.note,
                ]
            )
    lines += _table(
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
    for quality in results.quality:
        ours = quality.method(SWEEP).metrics
        cells = [quality.operation]
        holds = True
        for baseline_name in (ORIGINAL, KERAS_TUNER):
            base = quality.method(baseline_name).metrics
            for prefix in ("test_", "extrapolation_"):
                key = f"{prefix}median_relative_error"
                cells.append(_g(ratio(ours[key], base[key])))
                holds = holds and beats(ours[key], base[key])
        cells.append("**yes**" if holds else "no")
        rows.append(cells)
    lines += _table(
        [
            "operation", "vs original, in-range", "vs original, extrap.", "vs KerasTuner, in-range",
            "vs KerasTuner, extrap.", "beats both, in-range and extrap.",
        ],
        rows,
    )
    return lines


def _speed_section(results: Results) -> list[str]:
    lines: list[str] = []
    if results.speed:
        lines += [
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
            for s in results.speed
        }

        def rate(*key: object) -> float:
            found = by_key.get(key)  # type: ignore[arg-type]
            return found.steps_per_second if found else math.nan

        shapes = list(dict.fromkeys(s.model for s in results.speed))
        batches = sorted({s.batch_size for s in results.speed if s.dtype == "float32"})
        rows = []
        for shape in shapes:
            for batch in batches:
                fits = [
                    rate(shape, batch, spe, jit, "float32", "fit")
                    for spe, jit in ((1, False), (1, True), (32, False), (32, True))
                ]
                loop = rate(shape, batch, 0, False, "float32", "sweep")
                best_fit = max((r for r in fits if not math.isnan(r)), default=math.nan)
                runs = {s.runs for s in results.speed if s.model == shape}
                rows.append(
                    [shape, str(batch), *(_g(r, 4) for r in fits), _g(loop, 4),
                     f"{loop / best_fit:.1f}x" if best_fit > 0 else "—", str(max(runs))]
                )
        lines += _table(
            [
                "model", "batch", "fit spe 1", "fit spe 1 + XLA", "fit spe 32",
                "fit spe 32 + XLA", "sweep loop", "sweep / best fit", "runs",
            ],
            rows,
        )
        doubles = [s for s in results.speed if s.dtype == "float64"]
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
                    cells += [_g(single, 4), _g(double, 4), _g(double / single, 3)]
                rows.append(cells)
            lines += _table(
                [
                    "model", "fit spe 32 float32", "fit spe 32 float64", "ratio",
                    "sweep loop float32", "sweep loop float64", "ratio",
                ],
                rows,
            )
    if results.quality:
        lines += [
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
        for quality in results.quality:
            wall = quality.method(SWEEP).wall_seconds
            reached = quality.seconds_to_hit_target
            rows.append(
                [
                    quality.operation,
                    str(quality.sweep_trials),
                    f"{wall:.0f}",
                    f"{quality.sweep_trials_per_minute:.1f}",
                    f"{quality.sweep_train_call_seconds:.1f}",
                    f"{quality.sweep_epoch_storage_seconds:.1f}",
                    f"{quality.sweep_sampling_seconds:.1f}",
                    _other(wall, quality),
                    _pct(quality.sweep_outside_training_share),
                    "not reached" if reached is None else f"{reached:.0f}",
                    quality.best_architecture,
                ]
            )
        lines += _table(
            [
                "operation", "counted trials", "wall s", "trials/min", "in train s",
                "epoch reports s", "sampling s", "other s", "outside training",
                "s to first hit rate ≥ 0.99", "best architecture",
            ],
            rows,
        )
    return lines


def _other(wall: float, quality: OperationQuality) -> str:
    return f"{wall - quality.sweep_train_call_seconds - quality.sweep_sampling_seconds:.1f}"


def _typical_trial_seconds(results: Results) -> float:
    """Median over operations of training seconds per counted trial in section 1's sweeps."""
    return median(
        q.sweep_training_seconds / q.sweep_trials for q in results.quality if q.sweep_trials
    )


def _ours(results: Results) -> list[OverheadResult]:
    """The sweep's machinery's figures (not plain Optuna's reference)."""
    return [o for o in results.overhead if o.machinery == SWEEP_MACHINERY]


def _against_optuna(results: Results) -> list[tuple[str, int, float, float]]:
    """(backend, study size, ours ms, plain Optuna's ms) where both were measured."""
    plain = {o.backend: o for o in results.overhead if o.machinery == OPTUNA}
    pairs = []
    for ours in _ours(results):
        reference = plain.get(ours.backend)
        if reference is None:
            continue
        for size in sorted(ours.per_trial_ms):
            if size in reference.per_trial_ms:
                pairs.append(
                    (ours.backend, size, ours.per_trial_ms[size], reference.per_trial_ms[size])
                )
    return pairs


def _optuna_comparison(results: Results) -> list[str]:
    """Section 3's second half: ours against plain Optuna, time and writes per trial."""
    pairs = _against_optuna(results)
    if not pairs:
        return []
    by_key = {(o.backend, o.machinery): o for o in results.overhead}
    lines = [
        "",
        "Against plain Optuna: the same trivial objective (same space, reports, pruning"
        " checks, attributes) through `optuna.create_study(storage=RDBStorage(url))` with"
        " Optuna's own TPE (same settings: multivariate, grouped, same startup trials and"
        " seed) and median pruner (same settings, asked directly), `study.optimize` alone:"
        " no heartbeats, no bookkeeping. Same study sizes and fill, same backends (its own"
        " fresh SQLite file or PostgreSQL database), measured side by side: at each study size"
        " one window each, alternating which goes first. *Writes*: statements that write"
        " (INSERT, UPDATE, DELETE) per timed trial, and the transactions that held them,"
        " heartbeats included.",
        "",
    ]
    rows = []
    for backend, size, ours_ms, plain_ms in pairs:
        ours = by_key[(backend, SWEEP_MACHINERY)]
        plain = by_key[(backend, OPTUNA)]
        rows.append([
            backend, str(size), _g(ours_ms, 3), _g(plain_ms, 3), _x(ours_ms / plain_ms),
            f"{_g(ours.writes_per_trial.get(size, math.nan), 3)} in"
            f" {_g(ours.write_transactions_per_trial.get(size, math.nan), 3)}",
            f"{_g(plain.writes_per_trial.get(size, math.nan), 3)} in"
            f" {_g(plain.write_transactions_per_trial.get(size, math.nan), 3)}",
        ])
    lines += _table(
        ["backend", "trials in study", "sweep ms/trial", "Optuna alone ms/trial",
         "sweep / Optuna", "sweep writes in transactions", "Optuna writes in transactions"],
        rows,
    )
    return lines


def _overhead_section(results: Results) -> list[str]:
    if not results.overhead:
        return []
    ours = _ours(results)
    sizes = sorted({size for o in ours for size in o.per_trial_ms})
    lines = [
        "## 3. Per-trial overhead: sampling + storage",
        "",
        "A trivial objective through the campaign's own machinery: `optuna_storage`"
        " (engine options, heartbeats, writes buffered per trial), `make_sampler` (TPE,"
        " multivariate, grouped), `make_pruner` (median, asked with a per-trial snapshot of"
        " the finished trials), the default space's `suggest` and the write of its parameters"
        " before training, one `report` + `should_prune` per epoch of the epoch cap (asked"
        " every epoch, never obeyed, so every trial costs the same: an upper bound for a real"
        " trial, which stops reporting when pruned), the user attributes a real trial writes"
        " and the write of the trial's buffer (its reports and attributes) the objective"
        " makes before it returns ('attributes'), and the per-trial counting"
        " `Campaign.run_operation` does ('bookkeeping': Optuna's end of the trial, its"
        " heartbeat thread, and the counts)."
        " To measure a study of N trials, the study is first filled up to N"
        f" - {WINDOW} with finished trials drawn at random from the same space (same"
        f" parameters, reports and attributes), then {WINDOW} trials are timed; each figure"
        " is their median. One fresh study per backend (a fresh SQLite file, a fresh"
        " PostgreSQL database).",
        "",
    ]
    rows = [
        [o.backend, *[_g(o.per_trial_ms.get(size, math.nan), 3) for size in sizes]]
        for o in ours
    ]
    lines += _table(["backend", *[f"ms/trial at {size} trials" for size in sizes]], rows)
    lines += ["", "Where a trial's time goes (median ms per trial; 'report' and 'should_prune'"
              " are summed over the epochs of the cap):", ""]
    rows = []
    for o in ours:
        for size in sizes:
            parts = o.parts_ms.get(size, {})
            rows.append([o.backend, str(size), *[_g(parts.get(p, math.nan), 3) for p in PARTS]])
    lines += _table(["backend", "trials in study", *PARTS], rows)
    lines += _optuna_comparison(results)
    lines += [
        "",
        f"Export (save the .keras archive + reload it in safe mode, 2-16-16-1): "
        f"{_g(results.export_ms)} ms per promotion (only trials that beat the best promote).",
    ]
    typical = _typical_trial_seconds(results)
    if not math.isnan(typical):
        lines += [
            "",
            "Estimated share of wall time outside training at each study size: overhead /"
            f" (overhead + {typical:.2f} s), the training seconds per trial of section 1's"
            " sweeps (median over operations). Evaluation and export are not in this overhead,"
            " so the estimate errs low.",
            "",
        ]
        rows = []
        for o in ours:
            cells = [o.backend]
            for size in sizes:
                cost = o.per_trial_ms.get(size, math.nan) / 1000
                cells.append(_pct(cost / (cost + typical)))
            rows.append(cells)
        lines += _table(["backend", *[f"at {size} trials" for size in sizes]], rows)
    return lines


def _worker_summary(runs: Sequence[WorkerRun]) -> dict[tuple[int, int], dict[str, float]]:
    """Medians per (study size, workers)."""
    summary: dict[tuple[int, int], dict[str, float]] = {}
    for key in sorted({(r.study_size, r.workers) for r in runs}):
        mine = [r for r in runs if (r.study_size, r.workers) == key]
        summary[key] = {
            "span": median(r.trials_per_minute_span for r in mine),
            "process": median(r.trials_per_minute_process for r in mine),
            "outside": median(r.outside_training_share for r in mine),
            "outside_busy": median(r.outside_training_share_busy for r in mine),
        }
    return summary


def _worker_ratios(runs: Sequence[WorkerRun]) -> dict[int, tuple[float, float]]:
    """Study size -> (2 / 1 workers over the span, over the process), from the medians."""
    summary = _worker_summary(runs)
    ratios = {}
    for size in sorted({r.study_size for r in runs}):
        if (size, 1) in summary and (size, 2) in summary:
            one, two = summary[(size, 1)], summary[(size, 2)]
            ratios[size] = (ratio(two["span"], one["span"]), ratio(two["process"], one["process"]))
    return ratios


def _x(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}x"


def _workers_section(results: Results) -> list[str]:
    if not results.workers:
        return []
    seed = results.worker_seed
    seed_text = (
        f" The seed sweep finished {len(seed.trials)} trials ({seed.pruned} pruned) in"
        f" {seed.process_seconds:.0f} s."
        if seed is not None else ""
    )
    lines = [
        "## 4. Worker throughput on PostgreSQL",
        "",
        f"{results.worker_settings} Each run is a real `sweep run --ops add --trials S --workers"
        " K` process against its own fresh PostgreSQL database (`SWEEP_STORAGE`). To measure a"
        " study of S trials without running S trials, the study is created first and prefilled"
        " with S - N finished trials; the run then executes exactly the N remaining real trials"
        " (the budget counts complete + pruned trials; a non-empty study gets no startup"
        " designs). The prefilled trials are copies, cycled in order, of the complete and pruned"
        " trials of one real seed sweep run at the start of this section with the same settings"
        " (parameters, per-epoch reports, values, attributes), so the TPE sampler and the median"
        " pruner see a real history, only repeated; the seed study's attributes (data"
        " fingerprint) are copied too. Prefilling is timed separately and is not part of any"
        f" figure.{seed_text} Runs alternate 1, 2 then 2, 1 workers so the machine's load"
        " drifts evenly over both.",
        "",
        "Only the N new trials are measured. *Span*: first new trial's start to the last one's"
        " end (steady state); *process*: the command's wall time (TensorFlow start-up, loading"
        " the campaign and its study, the final table included). *Training*: the sum of the"
        " trials' `train_seconds` attribute, i.e. model work (build, training, output refit,"
        " evaluation), 0 for a trial that did not record it (*timed* counts those that did)."
        " *Outside training* = 1 - training / (workers x span): storage, sampling, pruning"
        " checks, export of promoted models, process start-up of the workers and any idle worker"
        " (at the start, or at the end when no slot is left). *Busy*: the same over each worker"
        " process's own first start to last end, so idle time at both ends is left out."
        " *Storage s*: the trials' `storage_seconds` attribute (storage calls made during"
        " training), when recorded. Promotion goes to each run's own, empty registry, so early"
        " new trials promote (and export) more often than in a real study of that size: the"
        " outside share errs high.",
        "",
    ]
    rows = [
        [
            str(r.study_size), str(r.workers), str(r.repeat), f"{r.counted_trials}/{r.new_trials}",
            str(r.timed_trials), f"{r.span_seconds:.0f}", f"{r.process_seconds:.0f}",
            f"{r.trials_per_minute_span:.1f}", f"{r.trials_per_minute_process:.1f}",
            f"{r.train_seconds:.0f}",
            "—" if r.storage_seconds is None else f"{r.storage_seconds:.1f}",
            _pct(r.outside_training_share), _pct(r.outside_training_share_busy),
            f"{r.prefill_seconds:.0f}", r.load_after,
        ]
        for r in results.workers
    ]
    lines += _table(
        [
            "study size", "workers", "repeat", "counted / new trials", "timed", "span s",
            "process s", "trials/min (span)", "trials/min (process)", "training s",
            "storage s", "outside training", "outside (busy)", "prefill s", "load after",
        ],
        rows,
    )
    summary = _worker_summary(results.workers)
    ratios = _worker_ratios(results.workers)
    lines += [
        "",
        f"Medians per study size and worker count (target: ≥ {RATIO_TARGET}x with 2 workers;"
        f" outside training < {_pct(OVERHEAD_TARGET)}):",
        "",
    ]
    rows = []
    for (size, workers), medians in summary.items():
        span_ratio, process_ratio = ratios.get(size, (math.nan, math.nan))
        rows.append(
            [
                str(size), str(workers), f"{medians['span']:.1f}", f"{medians['process']:.1f}",
                _x(span_ratio) if workers == 2 else "", _x(process_ratio) if workers == 2 else "",
                _pct(medians["outside"]), _pct(medians["outside_busy"]),
            ]
        )
    lines += _table(
        [
            "study size", "workers", "trials/min (span)", "trials/min (process)",
            "2 / 1 (span)", "2 / 1 (process)", "outside training", "outside (busy)",
        ],
        rows,
    )
    for size, (span_ratio, process_ratio) in ratios.items():
        one, two = summary[(size, 1)], summary[(size, 2)]
        lines += [
            "",
            f"At {size} trials per study, median trials per minute, 1 → 2 workers:"
            f" {one['span']:.1f} → {two['span']:.1f} over the span (ratio"
            f" **{_x(span_ratio)}**), {one['process']:.1f} → {two['process']:.1f} over the"
            f" process (ratio **{_x(process_ratio)}**); target ≥ {RATIO_TARGET}x. Outside"
            f" training: {_pct(one['outside'])} with 1 worker, {_pct(two['outside'])} with 2;"
            f" target < {_pct(OVERHEAD_TARGET)}.",
        ]
    return lines


def _gib_per_thousand(mib_per_model: float) -> str:
    """Growth over 1000 models; a negative figure (memory handed back after the warm-up) is
    no growth, not a shrinking worker."""
    return f"{max(mib_per_model, 0.0) * 1000 / 1024:.1f} GiB"


def _memory_section(results: Results) -> list[str]:
    if not results.memory:
        return []
    first = results.memory[0]
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
        " end; *per model* is the growth over the rest. *sweep*: the loop's own Adam"
        " (`sweep.nets.training.make_adam`); *keras*: the same loop with `keras.optimizers.Adam`"
        " (same rate and schedule), what the loop used before. Order alternates per round.",
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
        for run in results.memory
    ]
    lines += _table(
        ["optimizer", "MiB after warm-up", "MiB at end", "MiB per model", "s per model (median)"],
        rows,
    )
    growth = {
        name: median(r.growth_per_model_mib for r in results.memory if r.optimizer == name)
        for name in dict.fromkeys(r.optimizer for r in results.memory)
    }
    speed = {
        name: median(r.seconds_per_model for r in results.memory if r.optimizer == name)
        for name in growth
    }
    if "sweep" in growth and "keras" in growth:
        lines += [
            "",
            f"Medians: {growth['sweep']:.2f} MiB per model with the sweep's Adam against"
            f" {growth['keras']:.2f} with Keras' (over 1000 trials a worker grows by about"
            f" {_gib_per_thousand(growth['sweep'])} against {_gib_per_thousand(growth['keras'])});"
            f" {speed['sweep']:.2f} s against {speed['keras']:.2f} s per model"
            f" ({_x(speed['keras'] / speed['sweep'])} the speed).",
        ]
    return lines


def _startup_section(results: Results) -> list[str]:
    if not results.startup:
        return []
    reference = next(
        (r for r in results.startup if r.command.startswith("python -c")), None
    )
    optuna_cli = next((r for r in results.startup if r.command == "optuna studies"), None)
    rows = []
    for r in results.startup:
        versus = "—"
        if optuna_cli is not None and r is not optuna_cli and r.command.startswith("sweep"):
            versus = f"{r.seconds / optuna_cli.seconds:.2f}x"
        rows.append(
            [f"`{r.command}`", str(r.runs), f"{r.seconds:.2f}", f"{r.peak_mib:.0f}", versus,
             str(r.exit_code)]
        )
    lines = [
        "## 6. Command start-up",
        "",
        "Each command is a fresh process on the same SQLite database (six studies of five"
        " trials and a registry row per built-in), runs interleaved; medians of wall time and of"
        " the process's peak resident memory. `sweep --help`, `best` and `models` read SQL only"
        " and never start TensorFlow (tests/test_layers.py checks the import); target: under"
        " 1.5 s and 150 MB.",
        "",
        *_table(
            ("command", "runs", "seconds", "peak MiB", "vs optuna studies", "exit code"), rows
        ),
    ]
    if reference is not None:
        lines += [
            "",
            f"For scale: importing TensorFlow alone takes {reference.seconds:.1f} s and"
            f" {reference.peak_mib:.0f} MiB here; before the house issue every `sweep` command"
            " paid it.",
        ]
    return lines


def _serving_targets(serving: ServingResult) -> list[str]:
    """The two latency targets, judged on the lightest client measured (wrk when installed)."""
    lines = []
    for clients, pairs, target, what in (
        (8, 1, SERVE_ONE_PAIR_TARGET_MS, "one pair per request, 8 concurrent clients"),
        (1, 10_000, SERVE_BIG_TARGET_MS, "a 10,000-pair request"),
    ):
        measured = [
            s for s in (serving.latency(c, clients, pairs) for c in ("wrk", "python"))
            if s is not None
        ]
        if not measured:
            continue
        best = measured[0]
        state = "holds" if best.p50_ms < target else "does not hold yet"
        others = "; ".join(f"{s.client} client p50 {_ms(s.p50_ms)}" for s in measured)
        lines.append(
            f"- **`sweep serve`, {what}, p50 under {target:g} ms: {state}** ({others};"
            " section 7)."
        )
    return lines


def _ms(value: float) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def _serving_section(results: Results) -> list[str]:
    serving = results.serving
    if serving is None:
        return []
    rows = [
        [f"`sweep serve` ({s.client} client)", str(s.clients), f"{s.pairs:,}", str(s.requests),
         _ms(s.p50_ms), _ms(s.p99_ms), f"{s.pairs_per_second:,.0f}"]
        for s in serving.serve
    ]
    rows.append(
        ["`sweep predict OP A B` (a whole command)", "1", "1", str(serving.predict_runs),
         _ms(serving.predict_seconds * 1000), "—", f"{1 / serving.predict_seconds:.2f}"]
    )
    rows += [
        [f"in-process: {r.predictor}", "1", f"{r.pairs:,}", str(r.calls), _ms(r.p50_ms),
         _ms(r.p99_ms), f"{r.pairs / (r.p50_ms / 1000):,.0f}"]
        for r in serving.in_process
    ]
    from benchmarks.serving import ARCHITECTURE

    lines = [
        "## 7. Prediction service",
        "",
        f"One {ARCHITECTURE} model (float64, signed-log normalisation) in a SQLite registry;"
        f" `sweep serve` as a subprocess ({serving.backend} backend: ready"
        f" {serving.ready_seconds:.1f} s after start, the .keras -> ONNX conversion included;"
        f" {serving.rss_mib:.0f} MiB resident while serving). Keep-alive clients on the same two"
        " cores as the server: Python threads (http.client, which itself eats most of a core)"
        " and wrk. Latency per request; pairs per second over the wall time (for in-process"
        " rows: pairs over the median call). Targets: one pair under 5 ms p50 with 8 clients,"
        " a 10,000-pair request under 50 ms.",
        "",
        *_table(("predictor", "clients", "pairs / request", "requests", "p50", "p99",
                 "pairs / s"), rows),
    ]
    return lines


def _targets_section(results: Results) -> list[str]:
    lines = ["## Where we stand against the targets", ""]
    if results.quick:
        lines += [
            "*Quick mode: budgets are far too small for these verdicts to mean anything; they"
            " are printed so the code path is exercised.*",
            "",
        ]
    if results.quality:
        holding, failing = [], []
        for quality in results.quality:
            ours = quality.method(SWEEP).metrics
            missed = []
            for baseline_name in (ORIGINAL, KERAS_TUNER):
                base = quality.method(baseline_name).metrics
                for prefix, label in (("test_", "in-range"), ("extrapolation_", "extrap.")):
                    key = f"{prefix}median_relative_error"
                    if not beats(ours[key], base[key]):
                        missed.append(
                            f"{label} vs {baseline_name} ({_g(ours[key])} vs {_g(base[key])})"
                        )
            if missed:
                failing.append(f"{quality.operation}: not beaten {'; '.join(missed)}")
            else:
                holding.append(quality.operation)
        verdict = "holds" if not failing else "does not hold yet"
        lines += [
            "- **Our sweep beats the original network and KerasTuner on median relative error,"
            f" in-range and in the extrapolation band, at the same budget ({results.budget:g} s):"
            f" {verdict}.** Holds for: {', '.join(holding) or 'none'}.",
        ]
        lines += [f"  - {item}" for item in failing]
        multiply = next((q for q in results.quality if q.operation == "multiply"), None)
        if multiply is not None:
            hit = multiply.method(SWEEP).metrics["test_hit_rate"]
            reached = multiply.seconds_to_hit_target
            if hit >= 0.99 and results.budget <= MULTIPLY_BUDGET_TARGET:
                state = "holds"
            elif reached is not None and reached <= MULTIPLY_BUDGET_TARGET:
                state = "holds (a trial reached it; the best by validation MAE did not)"
            elif results.budget < MULTIPLY_BUDGET_TARGET:
                state = (
                    f"not shown at this budget ({results.budget:g} s < "
                    f"{MULTIPLY_BUDGET_TARGET:g} s)"
                )
            else:
                state = "does not hold yet"
            original = multiply.method(ORIGINAL).metrics
            wall = multiply.method(SWEEP).wall_seconds
            lines += [
                f"- **Multiply, in-range hit rate ≥ 0.99 within 5 minutes: {state}.** Our sweep's"
                f" best model: hit rate {_rate(hit)} after {wall:.0f} s; first trial at ≥ 0.99: "
                + ("never" if reached is None else f"after {reached:.0f} s")
                + f". The original network: hit rate {_rate(original['test_hit_rate'])}, MAE"
                f" {_g(original['test_mae'])}.",
            ]
    shares = []
    for quality in results.quality:
        shares.append(
            f"{quality.operation} {_pct(quality.sweep_outside_training_share)} at"
            f" {quality.sweep_trials} trials"
        )
    overhead_lines = []
    typical = _typical_trial_seconds(results)
    for o in _ours(results):
        for size in (100, 1000):
            if size in o.per_trial_ms and not math.isnan(typical):
                cost = o.per_trial_ms[size] / 1000
                overhead_lines.append(
                    f"{o.backend} at {size} trials ≈ {_pct(cost / (cost + typical))}"
                )
    if shares or overhead_lines:
        measured = "; ".join(shares) if shares else "not measured"
        estimated = "; ".join(overhead_lines) if overhead_lines else "not measured"
        lines += [
            f"- **Overhead outside training under {_pct(OVERHEAD_TARGET)} of wall time at 100"
            f" trials:** measured in the default sweeps (section 2): {measured}. Estimated from"
            f" section 3 (sampling + storage only): {estimated}.",
        ]
    summary = _worker_summary(results.workers)
    ratios = _worker_ratios(results.workers)
    if ratios:
        holds = all(span >= RATIO_TARGET for span, _ in ratios.values())
        state = "holds" if holds else "does not hold yet"
        figures = "; ".join(
            f"at {size} trials {_x(span)} over the trial span, {_x(process)} over the process"
            " wall time"
            for size, (span, process) in ratios.items()
        )
        lines += [
            f"- **Two workers give ≥ {RATIO_TARGET}x the trials per minute of one (PostgreSQL):"
            f" {state}** ({figures}; section 4).",
        ]
    if summary:
        worker_shares = "; ".join(
            f"{size} trials, {workers} worker{'s' if workers > 1 else ''}:"
            f" {_pct(medians['outside'])}"
            for (size, workers), medians in summary.items()
        )
        holds = all(m["outside"] < OVERHEAD_TARGET for m in summary.values())
        state = "holds" if holds else "does not hold yet"
        lines += [
            f"- **Outside training under {_pct(OVERHEAD_TARGET)} of the workers' time with real"
            f" trials on PostgreSQL (section 4): {state}** ({worker_shares}).",
        ]
    if results.serving is not None:
        lines += _serving_targets(results.serving)
    pairs = [p for p in _against_optuna(results) if p[1] in OPTUNA_TARGET_SIZES]
    if pairs:
        holds = all(ours <= OPTUNA_TARGET * plain for _, _, ours, plain in pairs)
        state = "holds" if holds else "does not hold yet"
        figures = "; ".join(
            f"{backend} at {size} trials {_x(ours / plain)} ({_g(ours, 3)} vs {_g(plain, 3)} ms)"
            for backend, size, ours, plain in pairs
        )
        lines += [
            f"- **Per-trial cost outside training at most {OPTUNA_TARGET}x plain Optuna's"
            f" `study.optimize` (same sampler, pruner, storage, reports): {state}** ({figures};"
            " section 3).",
        ]
    lines += _exact_targets(results.exact)
    lines += _scale_targets(results.scale)
    return lines


def render(results: Results) -> str:
    """The whole BENCHMARKS.md."""
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m benchmarks` (see `benchmarks/`; `pip install -e \".[bench]\"`"
        " first). Every figure below comes from the run described under *This run*; rerun the"
        " command to refresh them.",
        "",
    ]
    if not results.complete:
        lines += [
            "**Partial report: the run was still going when this was written; sections"
            " below are those finished so far.**",
            "",
        ]
    for section in (
        _targets_section(results),
        _run_section(results),
        _quality_section(results),
        _speed_section(results),
        _overhead_section(results),
        _workers_section(results),
        _memory_section(results),
        _startup_section(results),
        _serving_section(results),
        _exact_section(results.exact),
        _scale_section(results.scale, results.scale_settings),
    ):
        if section:
            lines += [*section, ""]
    return "\n".join(lines).rstrip() + "\n"
