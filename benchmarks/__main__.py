"""``python -m benchmarks [--quick] [--out BENCHMARKS.md] [--budget S] [--storage-postgres URL]
[--save-results FILE]``.

One command runs every section side by side and writes the Markdown report; progress goes to
stderr. `--quick` shrinks every budget so the whole run takes a few minutes (the smoke test).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

SECTIONS: tuple[str, ...] = (
    "quality", "speed", "overhead", "workers", "memory", "startup", "serving", "exact", "scale",
    "formulas", "nalm", "formula-methods", "throughput", "packing",
)
FIT_STEPS_PER_EXECUTION = 32
FULL_BUDGET = 300.0
QUICK_BUDGET = 8.0
_T = TypeVar("_T")


def _parser() -> argparse.ArgumentParser:
    from benchmarks import packing, throughput
    from benchmarks._common import DEFAULT_POSTGRES_ADMIN_URL

    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true",
        help="tiny budgets, 2 operations, fewer sizes: a few minutes (figures not meaningful)",
    )
    parser.add_argument("--out", default="BENCHMARKS.md", help="Markdown file to write")
    parser.add_argument(
        "--budget", type=float, default=None,
        help=f"wall-clock seconds per operation per method (default {FULL_BUDGET:g}; "
        f"{QUICK_BUDGET:g} with --quick)",
    )
    parser.add_argument(
        "--storage-postgres", default=os.environ.get(
            "SWEEP_TEST_POSTGRESQL_URL", DEFAULT_POSTGRES_ADMIN_URL
        ),
        metavar="URL",
        help="admin URL of a PostgreSQL server; a throwaway database is created and dropped "
        "there (default: $SWEEP_TEST_POSTGRESQL_URL, else %(default)s)",
    )
    parser.add_argument(
        "--ops", default=None,
        help="comma-separated operations for the quality section (default: all six; "
        "add,multiply with --quick)",
    )
    parser.add_argument(
        "--exact-budget", type=float, default=30.0, metavar="SECONDS",
        help="seconds per method and case in the exact section (default %(default)s; 4 with "
        "--quick)",
    )
    parser.add_argument(
        "--scale-sizes", default=None, metavar="K,K,...",
        help="worker counts of the scale section (default 8,32,64 on a throwaway PostgreSQL "
        "cluster with max_connections = 100, 2 runs each, 150 trials per operation; with "
        "--quick, 2 workers once on --storage-postgres, 10 trials)",
    )
    parser.add_argument(
        "--formula-trials", type=int, default=None, metavar="N",
        help="counted trials per campaign in the formulas section (default 20; 2 with --quick)",
    )
    parser.add_argument(
        "--formula-timeout", type=float, default=None, metavar="SECONDS",
        help="seconds per campaign in the formulas section (default 60; 10 with --quick)",
    )
    parser.add_argument(
        "--formulas", default=None, metavar="NAME,NAME,...",
        help="formulas of the formulas section (default: all; gas,wave with --quick)",
    )
    parser.add_argument(
        "--methods-timeout", type=float, default=None, metavar="SECONDS",
        help="formula-methods section: seconds per method and formula, beside --formula-trials "
        "(default 30; 5 with --quick); --formulas chooses its formulas too",
    )
    parser.add_argument(
        "--methods-seeds", type=int, default=None, metavar="N",
        help="formula-methods section: seeds each winner is retrained on (default 10; 1 with "
        "--quick)",
    )
    parser.add_argument(
        "--nalm-seeds", type=int, default=None, metavar="N",
        help="seeds per range of the NALM section (default 25, the benchmark's; 1 with --quick)",
    )
    parser.add_argument(
        "--nalm-minutes", type=float, default=None, metavar="M",
        help="NALM section: start no new seed once the last one's time would overrun M minutes",
    )
    parser.add_argument(
        "--nalm-keep-failures", default=None, metavar="DIR",
        help="NALM section: copy each campaign with a failure (database, file, log) into DIR",
    )
    throughput.add_arguments(parser)
    packing.add_arguments(parser)
    parser.add_argument(
        "--sections", default=",".join(SECTIONS),
        help="comma-separated subset of %(default)s",
    )
    parser.add_argument(
        "--save-results", default=None, metavar="FILE",
        help="also write every measured figure as JSON (benchmarks.report.Results.to_json), "
        "rewritten with the report, so the report can be rendered again without measuring",
    )
    return parser


def _masked(argument: str) -> str:
    """An argument as printed in the report: any URL's password masked."""
    from storage import mask_url

    if "://" not in argument:
        return argument
    flag, equals, value = argument.partition("=")
    if equals and flag.startswith("--"):
        return f"{flag}={mask_url(value)}"
    return mask_url(argument)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(arguments)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        print(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}",
              file=sys.stderr)
        return 2
    budget = args.budget
    if budget is None:
        budget = QUICK_BUDGET if args.quick else FULL_BUDGET
    if budget <= 0:
        print("--budget must be positive", file=sys.stderr)
        return 2

    # TensorFlow's environment first (quiet, oneDNN off, one worker's threads) for all methods.
    from benchmarks._common import training_runtime

    training_runtime()
    from benchmarks._common import (
        load_average,
        log,
        machine_info,
        postgres_version,
        temporary_postgres,
        wait_for_postgres,
    )
    from benchmarks.report import Results, render
    from storage import mask_url
    from sweep.search.config import CampaignConfig

    started = time.monotonic()
    admin_url: str = args.storage_postgres
    server = postgres_version(admin_url)
    results = Results(
        command=shlex.join(["python", "-m", "benchmarks", *map(_masked, arguments)]),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        quick=args.quick,
        budget=budget,
        machine=machine_info(server),
        load_start=load_average(),
    )
    log(f"load average at start: {results.load_start}")
    if server is None and ("overhead" in sections or "workers" in sections):
        results.skipped.append(
            f"PostgreSQL at {mask_url(admin_url)} did not answer: its overhead figures and the "
            "worker throughput were not measured"
        )
    # KerasTuner trains with `fit`; give it `fit`'s fastest setting of section 2.
    results.steps_per_execution = FIT_STEPS_PER_EXECUTION
    defaults = CampaignConfig()
    epoch_cap = int(max(defaults.space.epochs.values()))
    # Artifacts of promoted models go to a scratch folder, not the working directory.
    scratch = tempfile.TemporaryDirectory(prefix="sweep-bench-")
    os.environ["SWEEP_ARTIFACTS"] = str(Path(scratch.name) / "artifacts")

    out = Path(args.out)

    def write(final: bool) -> None:
        """The report so far: a killed run still leaves the sections it finished."""
        results.load_end = load_average()
        results.total_seconds = time.monotonic() - started
        results.complete = final
        out.write_text(render(results), encoding="utf-8")
        if args.save_results:
            Path(args.save_results).write_text(results.to_json(), encoding="utf-8")

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)

    def section(name: str, action: Callable[[], _T], empty: _T, *, server: bool = False) -> _T:
        """Run one section; a failure is recorded in the report and the others still run
        (a lost database server should not throw away half an hour of measurements).

        A section on the PostgreSQL server is retried once after the server answers again:
        other processes on this shared machine may restart it.
        """
        before = load_average()
        section_started = time.monotonic()
        log(f"{name}: start (load {before})")
        attempts = 2 if server else 1
        value = empty
        for attempt in range(attempts):
            try:
                value = action()
                break
            except Exception as e:
                text = str(e).strip().splitlines()
                error = f"{name}: {type(e).__name__}: {text[0] if text else ''}"
                log(f"{name}: FAILED: {traceback.format_exc()}")
                if attempt + 1 < attempts and wait_for_postgres(admin_url, 180):
                    results.skipped.append(f"{error} (retried once, from the start)")
                    continue
                results.failures.append(error)
        results.section_loads[name] = (before, load_average(), time.monotonic() - section_started)
        write(final=False)
        return value

    try:
        if "quality" in sections:
            from benchmarks.quality import OPERATIONS, OperationQuality, run_quality

            default_ops = ("add", "multiply") if args.quick else OPERATIONS
            operations = (
                tuple(o.strip() for o in args.ops.split(",") if o.strip())
                if args.ops else default_ops
            )
            def measured(result: OperationQuality) -> None:
                results.quality.append(result)
                write(final=False)

            section(
                "quality",
                lambda: run_quality(
                    operations, budget, epochs=epoch_cap,
                    steps_per_execution=results.steps_per_execution or 1, on_result=measured,
                ),
                list[OperationQuality](),
            )
        if "speed" in sections:
            from benchmarks.speed import MODELS, run_speed
            from sweep.problem.data import DataSpec, make_dataset
            from sweep.problem.operations import resolve_operations

            add = make_dataset(resolve_operations(("add",), {})[0], DataSpec())
            models = {"2-16-16-1 relu": MODELS["2-16-16-1 relu"]} if args.quick else MODELS
            results.speed = section(
                "speed",
                lambda: run_speed(
                    add.x_train, add.y_train, models=models,
                    batch_sizes=(64,) if args.quick else (32, 64, 128),
                    repeats=2 if args.quick else 5, epochs=1 if args.quick else 2,
                ),
                [],
            )
        if "overhead" in sections:
            from benchmarks.export import export_milliseconds
            from benchmarks.overhead import OverheadResult, run_overhead

            sizes = (10, 20) if args.quick else (10, 100, 1000)

            def overhead() -> list[OverheadResult]:
                if server is None:
                    return run_overhead(None, sizes)
                with temporary_postgres(admin_url) as url:
                    return run_overhead(url, sizes, lambda: temporary_postgres(admin_url))

            results.overhead = section("overhead", overhead, [], server=server is not None)
            results.export_ms = section(
                "export", lambda: export_milliseconds(3 if args.quick else 10), math.nan
            )
        if "workers" in sections and server is not None:
            from benchmarks.prefill import OPERATION, SeedSweep
            from benchmarks.workers import QUICK_SIZES, SIZES, WorkerRun, run_workers

            # N measured trials per run, seed sweep size, epochs (None: the default), repeats.
            new_trials, seed_trials, epochs, repeats = (
                (4, 4, 2, 1) if args.quick else (60, 40, None, 3)
            )
            worker_sizes = QUICK_SIZES if args.quick else SIZES
            results.worker_settings = (
                f"Campaign: {OPERATION}, "
                + ("the default 30" if epochs is None else str(epochs))
                + f" epochs per trial, defaults otherwise. Study sizes"
                f" {', '.join(map(str, worker_sizes))}; {new_trials} real trials measured per run;"
                f" {repeats} run(s) per study size and worker count; seed sweep of"
                f" {seed_trials} trials."
            )

            def seeded(seed: SeedSweep) -> None:
                results.worker_seed = seed
                write(final=False)

            def measured_run(run: WorkerRun) -> None:
                results.workers.append(run)
                write(final=False)

            def workers() -> None:
                results.workers.clear()  # a retry starts from the beginning
                results.worker_seed = None
                run_workers(
                    lambda: temporary_postgres(admin_url),
                    sizes=worker_sizes, new_trials=new_trials, seed_trials=seed_trials,
                    epochs=epochs, repeats=repeats, on_seed=seeded, on_run=measured_run,
                )

            section("workers", workers, None, server=True)
        if "startup" in sections:
            from benchmarks.startup import run_startup

            results.startup = section(
                "startup",
                lambda: run_startup(Path(scratch.name), 3 if args.quick else 10),
                [],
            )
        if "memory" in sections:
            from benchmarks.memory import MemoryRun, run_memory

            trained, warmup, memory_repeats = (8, 3, 1) if args.quick else (80, 20, 2)
            results.memory = section(
                "memory",
                lambda: run_memory(trained, warmup, memory_repeats),
                list[MemoryRun](),
            )
        if "serving" in sections:
            from benchmarks.serving import run_serving

            results.serving = section(
                "serving", lambda: run_serving(Path(scratch.name), quick=args.quick), None
            )
        if "exact" in sections:
            from benchmarks.exact import QUICK_CASES, ExactCase, ExactResult, run_exact

            # Its own budget: a sweep per method and case (14 cases), not per operation.
            exact_budget, exact_trials = (4.0, 3) if args.quick else (args.exact_budget, 20)
            results.exact = ExactResult(budget=exact_budget, trials=exact_trials)

            def exact_case(case: ExactCase) -> None:
                assert results.exact is not None
                results.exact.cases.append(case)
                write(final=False)

            section(
                "exact",
                lambda: run_exact(
                    QUICK_CASES if args.quick else None, budget=exact_budget,
                    trials=exact_trials, original_epochs=2 if args.quick else 10,
                    keras_tuner_epochs=2 if args.quick else epoch_cap,
                    steps_per_execution=results.steps_per_execution or 1,
                    seeds=True, on_case=exact_case,
                ),
                None,
            )
        if "scale" in sections and (server is not None or not args.quick):
            from benchmarks.cluster import OWN_CLUSTER, own_cluster
            from benchmarks.scale import ScaleRun, run_scale, scale_settings

            scale_sizes = (
                [int(k) for k in args.scale_sizes.split(",") if k.strip()] if args.scale_sizes
                else [2] if args.quick else [8, 32, 64]
            )
            scale_repeats, scale_trials = (1, 10) if args.quick else (2, 150)
            # The full run gets a server of its own at PostgreSQL's default max_connections.
            where = f"the server at {mask_url(admin_url)}" if args.quick else OWN_CLUSTER
            results.scale_settings = scale_settings(
                scale_sizes, scale_repeats, scale_trials, where
            )

            def scale() -> list[ScaleRun]:
                cluster = contextlib.nullcontext(admin_url) if args.quick else own_cluster()
                with cluster as scale_admin:
                    return run_scale(scale_admin, scale_sizes, scale_repeats, scale_trials)

            results.scale = section("scale", scale, list[ScaleRun](), server=args.quick)
        if "formulas" in sections:
            from benchmarks._common import sweep_command
            from benchmarks.formulas import (
                QUICK_FORMULAS,
                FormulaCase,
                FormulasResult,
                run_formulas,
            )

            formula_trials = args.formula_trials or (2 if args.quick else 20)
            formula_timeout = args.formula_timeout or (10.0 if args.quick else 60.0)
            chosen = (
                [f.strip() for f in args.formulas.split(",") if f.strip()] if args.formulas
                else list(QUICK_FORMULAS) if args.quick else None
            )
            results.formulas = FormulasResult(
                trials=formula_trials, timeout=formula_timeout,
                sweep=" ".join(Path(part).name for part in sweep_command()),
            )

            def formula_case(case: FormulaCase) -> None:
                assert results.formulas is not None
                results.formulas.cases.append(case)
                write(final=False)

            section(
                "formulas",
                lambda: run_formulas(
                    chosen, trials=formula_trials, timeout=formula_timeout,
                    on_case=formula_case,
                ),
                None,
            )
        if "nalm" in sections:
            from benchmarks.nalm import QUICK_RANGES, SEEDS, NalmResult, run_nalm

            def nalm_campaign(result: NalmResult) -> None:
                results.nalm = result
                write(final=False)

            keep = Path(args.nalm_keep_failures) if args.nalm_keep_failures else None
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)

            def nalm() -> None:  # a failed run keeps the campaigns judged so far
                results.nalm = run_nalm(
                    args.nalm_seeds or (1 if args.quick else SEEDS),
                    ranges=QUICK_RANGES if args.quick else None, minutes=args.nalm_minutes,
                    keep_failures=keep, on_campaign=nalm_campaign,
                )

            section("nalm", nalm, None)
        if "formula-methods" in sections:
            from benchmarks import formula_methods as methods

            def methods_case(case: methods.MethodsCase) -> None:
                if results.formula_methods is not None:
                    results.formula_methods.cases.append(case)
                write(final=False)

            options: dict[str, Any] = dict(
                trials=args.formula_trials or (2 if args.quick else 20),
                timeout=args.methods_timeout or (5.0 if args.quick else 30.0),
                keras_tuner_epochs=2 if args.quick else 30,
                seeds=args.methods_seeds or (1 if args.quick else methods.SEEDS),
            )
            results.formula_methods = methods.MethodsResult(**options)  # filled as it goes
            results.formula_methods = section("formula-methods", lambda: methods.run_methods(
                [f.strip() for f in args.formulas.split(",") if f.strip()] if args.formulas
                else list(methods.QUICK_FORMULAS) if args.quick else None,
                on_case=methods_case, **options,
            ), results.formula_methods)
        if "throughput" in sections:
            from benchmarks import throughput

            speeds = results.throughput = throughput.from_arguments(args)  # filled as it goes
            section("throughput", lambda: throughput.run_throughput(
                speeds, lambda _: write(final=False)), None)
        if "packing" in sections:
            from benchmarks import packing

            packing.run_section(args, section, results, lambda: write(final=False))
    except KeyboardInterrupt as e:
        results.failures.append(f"interrupted ({e or 'SIGINT'}); later sections did not run")
    finally:
        scratch.cleanup()

    write(final=True)
    log(f"load average at end: {results.load_end}")
    log(f"wrote {out} ({results.total_seconds / 60:.1f} min)")
    for failure in results.failures:
        log(f"failed section: {failure}")
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main())
