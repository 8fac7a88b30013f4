"""BENCHMARKS.md from the measured results: the run, the targets' status, then every section.

Each section renders itself, beside its benchmark (`benchmarks.quality.render_section`, ...);
this module holds what spans them: `Results` (everything one run measured, saved and loaded
as JSON by `benchmarks.records`), the run's description, the summary of the targets and
`render`, which puts the report together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from benchmarks import (
    exact,
    formula_methods,
    formulas,
    memory,
    nalm,
    overhead,
    packing_report,
    quality,
    scale,
    serving,
    speed,
    startup,
    throughput,
    workers,
)
from benchmarks._common import OVERHEAD_TARGET
from benchmarks.exact import ExactResult
from benchmarks.formula_methods import MethodsResult
from benchmarks.formulas import FormulasResult
from benchmarks.memory import MemoryRun
from benchmarks.nalm import NalmResult
from benchmarks.overhead import OverheadResult
from benchmarks.packing import PackingResult
from benchmarks.prefill import SeedSweep
from benchmarks.quality import OperationQuality
from benchmarks.records import dumps, loads
from benchmarks.scale import ScaleRun
from benchmarks.serving import ServingResult
from benchmarks.speed import SpeedResult
from benchmarks.startup import StartupResult
from benchmarks.tables import percent, table
from benchmarks.throughput import ThroughputResult
from benchmarks.workers import WorkerRun

__all__ = ["Results", "render"]


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
    formulas: FormulasResult | None = None
    nalm: NalmResult | None = None
    formula_methods: MethodsResult | None = None
    throughput: ThroughputResult | None = None
    packing: PackingResult | None = None
    section_loads: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    complete: bool = True  # False while the run is still going (the report is rewritten)

    def to_json(self) -> str:
        """Every measured figure as JSON (`python -m benchmarks --save-results FILE`)."""
        return dumps(self)

    @classmethod
    def from_json(cls, text: str) -> Results:
        """The results `to_json` wrote, as they were."""
        return loads(text, cls)


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
        lines += table(
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
    lines += table(["", ""], [[key, value] for key, value in results.machine.items()])
    return lines


def _outside_training_lines(results: Results) -> list[str]:
    """The overhead target, from two sections: measured in section 1's sweeps, estimated from
    section 3's per-trial cost and section 1's training time per trial."""
    shares = [
        f"{result.operation} {percent(result.sweep_outside_training_share)} at"
        f" {result.sweep_trials} trials"
        for result in results.quality
    ]
    overhead_lines = []
    typical = quality.typical_trial_seconds(results.quality)
    for o in overhead.sweep_results(results.overhead):
        for size in (100, 1000):
            if size in o.per_trial_ms and not math.isnan(typical):
                cost = o.per_trial_ms[size] / 1000
                overhead_lines.append(
                    f"{o.backend} at {size} trials ≈ {percent(cost / (cost + typical))}"
                )
    if not shares and not overhead_lines:
        return []
    measured = "; ".join(shares) if shares else "not measured"
    estimated = "; ".join(overhead_lines) if overhead_lines else "not measured"
    return [
        f"- **Overhead outside training under {percent(OVERHEAD_TARGET)} of wall time at 100"
        f" trials:** measured in the default sweeps (section 2): {measured}. Estimated from"
        f" section 3 (sampling + storage only): {estimated}.",
    ]


def _targets_section(results: Results) -> list[str]:
    lines = ["## Where we stand against the targets", ""]
    if results.quick:
        lines += [
            "*Quick mode: budgets are far too small for these verdicts to mean anything; they"
            " are printed so the code path is exercised.*",
            "",
        ]
    lines += quality.target_lines(results.quality, results.budget)
    lines += _outside_training_lines(results)
    lines += workers.target_lines(results.workers)
    lines += serving.target_lines(results.serving)
    lines += overhead.target_lines(results.overhead)
    lines += exact.target_lines(results.exact)
    lines += scale.target_lines(results.scale)
    lines += formulas.target_lines(results.formulas)
    lines += nalm.target_lines(results.nalm)
    lines += formula_methods.target_lines(results.formula_methods)
    lines += throughput.target_lines(results.throughput)
    lines += packing_report.target_lines(results.packing)
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
    typical = quality.typical_trial_seconds(results.quality)
    for section in (
        _targets_section(results),
        _run_section(results),
        quality.render_section(results.quality, results.budget, results.steps_per_execution),
        speed.render_section(results.speed) + quality.throughput_lines(results.quality),
        overhead.render_section(results.overhead, results.export_ms, typical),
        workers.render_section(results.workers, results.worker_seed, results.worker_settings),
        memory.render_section(results.memory),
        startup.render_section(results.startup),
        serving.render_section(results.serving),
        exact.render_section(results.exact),
        scale.render_section(results.scale, results.scale_settings),
        formulas.render_section(results.formulas),
        nalm.render_section(results.nalm),
        formula_methods.render_section(results.formula_methods),
        throughput.render_section(results.throughput),
        packing_report.render_section(results.packing),
    ):
        if section:
            lines += [*section, ""]
    return "\n".join(lines).rstrip() + "\n"
