"""Worker throughput on PostgreSQL: `sweep run --workers 1` and 2 in studies of 100 and 1000 trials.

Each measured run is a real `sweep run` process (its workers are processes too), against a fresh
database given through `SWEEP_STORAGE` as a user would. So that a run at 1000 trials per study
does not have to run 1000 trials, the study is created first and prefilled with S - N finished
trials; `sweep run --trials S` then runs exactly the N remaining real trials (the budget counts
COMPLETE + PRUNED trials, and a non-empty study gets no startup designs).

The prefilled trials are copies of the finished trials of one real seed sweep, run once per
benchmark with the same campaign settings (`benchmarks.prefill`), so the TPE sampler and the
median pruner work on the kind of history a long study has.

Per run, from the N new trials only: *span* is the first new trial's start to the last one's
end; *training* is the sum of their `train_seconds` attribute (model work: build, training, refit,
evaluation); outside training = 1 - training / (workers x span). Two rates: over the span (the
steady state the ratio is about) and over the process's wall time (what a user waits:
TensorFlow start-up, loading the campaign and the final table included).
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from benchmarks._common import OVERHEAD_TARGET, load_average, log, median
from benchmarks.first_trial import FirstTrial, measure_first_trial
from benchmarks.prefill import (
    COUNTED,
    OPERATION,
    SeedSweep,
    campaign_file,
    load_trials,
    prefill_study,
    run_seed_sweep,
    sweep_run,
)
from benchmarks.tables import percent, ratio, table, times

SIZES: tuple[int, ...] = (100, 1000)
QUICK_SIZES: tuple[int, ...] = (10,)  # one size: the smoke test only needs the code to run
RATIO_TARGET = 1.8  # trials per minute of 2 workers over 1


@dataclass(frozen=True)
class WorkerRun:
    study_size: int  # the budget S: trials in the study when the run ends
    workers: int
    repeat: int
    new_trials: int  # N: trials this run had to run (S minus the prefilled ones)
    counted_trials: int  # COMPLETE + PRUNED among the new trials
    process_seconds: float
    span_seconds: float
    train_seconds: float  # sum of `train_seconds` over the new trials (0 where missing)
    timed_trials: int  # new trials that recorded `train_seconds`
    storage_seconds: float | None  # sum of `storage_seconds`, None when no trial records it
    worker_seconds: float  # sum over worker processes of their own first start to last end
    prefill_seconds: float  # creating and prefilling the study: not part of the measurement
    load_after: str
    startup_seconds: float = math.nan  # the command's start to the first new trial's start
    epochs: int = 0  # epochs reported by the new trials, summed: work differs between runs
    pruned_trials: int = 0
    tail_seconds: float = math.nan  # the last new trial's end to the command's exit
    code: str = "this checkout"  # which checkout ran (PYTHONPATH)

    @property
    def trials_per_minute_process(self) -> float:
        return self.counted_trials / self.process_seconds * 60

    @property
    def trials_per_minute_span(self) -> float:
        return self.counted_trials / self.span_seconds * 60 if self.span_seconds > 0 else math.nan

    @property
    def outside_training_share(self) -> float:
        """Share of the workers' time (workers x span) not spent in recorded training."""
        capacity = self.workers * self.span_seconds
        return 1 - self.train_seconds / capacity if capacity > 0 else math.nan

    @property
    def outside_training_share_busy(self) -> float:
        """The same over each worker's own first-start-to-last-end span: a worker idle at the
        start (waiting for its TensorFlow import) or at the end (no slot left) is left out."""
        if self.worker_seconds > 0:
            return 1 - self.train_seconds / self.worker_seconds
        return math.nan


def _float_attr(trial: FrozenTrial, key: str) -> float | None:
    value = trial.user_attrs.get(key)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def measure_run(
    url: str, campaign: str, *, size: int, new: int, workers: int, repeat: int,
    config: Path, folder: Path, seed: SeedSweep, code: str = "this checkout",
    pythonpath: str | None = None,
) -> WorkerRun:
    """Prefill the study with size - new trials, then time `sweep run --trials size`."""
    prefilled = size - new
    started = time.monotonic()
    prefill_study(url, campaign, seed, prefilled)
    prefill_seconds = time.monotonic() - started
    seconds, started_at = sweep_run(url, campaign, workers, size, config, folder, pythonpath)
    trials, _ = load_trials(url, campaign)
    mine = [t for t in trials if t.number >= prefilled]
    starts = [t.datetime_start for t in mine if t.datetime_start is not None]
    ends = [t.datetime_complete for t in mine if t.datetime_complete is not None]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else math.nan
    trained = [_float_attr(t, "train_seconds") for t in mine]
    stored = [s for s in (_float_attr(t, "storage_seconds") for t in mine) if s is not None]
    per_worker: dict[str, list[FrozenTrial]] = {}
    for t in mine:
        if t.datetime_start is not None and t.datetime_complete is not None:
            per_worker.setdefault(str(t.user_attrs.get("worker", "?")), []).append(t)
    worker_seconds = 0.0
    for own in per_worker.values():
        first = min(t.datetime_start for t in own if t.datetime_start is not None)
        last = max(t.datetime_complete for t in own if t.datetime_complete is not None)
        worker_seconds += (last - first).total_seconds()
    return WorkerRun(
        code=code,
        study_size=size,
        workers=workers,
        repeat=repeat,
        new_trials=new,
        counted_trials=sum(t.state in COUNTED for t in mine),
        process_seconds=seconds,
        span_seconds=span,
        train_seconds=sum(s for s in trained if s is not None),
        timed_trials=sum(s is not None for s in trained),
        storage_seconds=sum(stored) if stored else None,
        worker_seconds=worker_seconds,
        prefill_seconds=prefill_seconds,
        load_after=load_average(),
        startup_seconds=min(starts).timestamp() - started_at if starts else math.nan,
        tail_seconds=started_at + seconds - max(ends).timestamp() if ends else math.nan,
        epochs=sum(len(t.intermediate_values) for t in mine),
        pruned_trials=sum(t.state == TrialState.PRUNED for t in mine),
    )


def run_workers(
    database: Callable[[], AbstractContextManager[str]],
    *,
    sizes: Sequence[int],
    new_trials: int,
    seed_trials: int,
    epochs: int | None,
    repeats: int,
    on_seed: Callable[[SeedSweep], None] | None = None,
    on_run: Callable[[WorkerRun], None] | None = None,
    family: str | None = None,
    codes: Sequence[tuple[str, str | None]] = (("this checkout", None),),
) -> list[WorkerRun]:
    """At each study size, 1 and 2 workers, alternating (1, 2, then 2, 1, ...) so drift in the
    machine's load is shared; with several `codes` (name, PYTHONPATH), each worker count runs
    every code in turn, also alternating. `database()` gives a fresh database for each
    `sweep run` (the seed sweep included), so no run sees another's rows. `epochs` None keeps
    the default."""
    if any(size <= new_trials for size in sizes):
        raise ValueError(f"every study size must exceed the {new_trials} measured trials")
    runs: list[WorkerRun] = []
    orders = [(1, 2) if repeat % 2 == 0 else (2, 1) for repeat in range(repeats)]
    with tempfile.TemporaryDirectory(prefix="sweep-bench-workers-") as name:
        folder = Path(name)
        config = campaign_file(folder, epochs, family)
        log(f"workers: seed sweep, {seed_trials} trials of {OPERATION}, 1 worker")
        with database() as url:
            seed = run_seed_sweep(url, seed_trials, config, folder)
        log(
            f"workers: seed sweep: {len(seed.trials)} finished trials ({seed.pruned} pruned)"
            f" in {seed.process_seconds:.0f} s"
        )
        if on_seed is not None:
            on_seed(seed)
        for size in sizes:
            for repeat, order in enumerate(orders):
                turns = [(w, c) for w in order
                         for c in (codes if repeat % 2 == 0 else codes[::-1])]
                for workers, (code, pythonpath) in turns:
                    campaign = f"throughput-s{size}-w{workers}-r{repeat}"
                    log(
                        f"workers: {workers} worker(s), study of {size} trials "
                        f"({size - new_trials} prefilled), #{repeat}, {code}"
                    )
                    with database() as url:
                        run = measure_run(
                            url, campaign, size=size, new=new_trials, workers=workers,
                            repeat=repeat, config=config, folder=folder, seed=seed,
                            code=code, pythonpath=pythonpath,
                        )
                    log(
                        f"workers: {workers} at {size} -> {run.trials_per_minute_span:.1f}"
                        f" trials/min (span), {run.trials_per_minute_process:.1f} (process),"
                        f" outside training {100 * run.outside_training_share:.1f}%"
                        f" (prefill {run.prefill_seconds:.0f} s)"
                    )
                    runs.append(run)
                    if on_run is not None:
                        on_run(run)
    return runs


# --- the report ------------------------------------------------------------------------------


def _summary(runs: Sequence[WorkerRun]) -> dict[tuple[int, int], dict[str, float]]:
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


def _ratios(runs: Sequence[WorkerRun]) -> dict[int, tuple[float, float]]:
    """Study size -> (2 / 1 workers over the span, over the process), from the medians."""
    summary = _summary(runs)
    ratios = {}
    for size in sorted({r.study_size for r in runs}):
        if (size, 1) in summary and (size, 2) in summary:
            one, two = summary[(size, 1)], summary[(size, 2)]
            ratios[size] = (ratio(two["span"], one["span"]), ratio(two["process"], one["process"]))
    return ratios


def render_section(
    runs: Sequence[WorkerRun], seed: SeedSweep | None, settings: str
) -> list[str]:
    """Section 4 of BENCHMARKS.md: every run, then the medians and the 2 / 1 worker ratios."""
    if not runs:
        return []
    seed_text = (
        f" The seed sweep finished {len(seed.trials)} trials ({seed.pruned} pruned) in"
        f" {seed.process_seconds:.0f} s."
        if seed is not None else ""
    )
    lines = [
        "## 4. Worker throughput on PostgreSQL",
        "",
        f"{settings} Each run is a real `sweep run --ops add --trials S --workers"
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
            percent(r.outside_training_share), percent(r.outside_training_share_busy),
            f"{r.prefill_seconds:.0f}", r.load_after,
        ]
        for r in runs
    ]
    lines += table(
        [
            "study size", "workers", "repeat", "counted / new trials", "timed", "span s",
            "process s", "trials/min (span)", "trials/min (process)", "training s",
            "storage s", "outside training", "outside (busy)", "prefill s", "load after",
        ],
        rows,
    )
    summary = _summary(runs)
    ratios = _ratios(runs)
    lines += [
        "",
        f"Medians per study size and worker count (target: ≥ {RATIO_TARGET}x with 2 workers;"
        f" outside training < {percent(OVERHEAD_TARGET)}):",
        "",
    ]
    rows = []
    for (size, workers), medians in summary.items():
        span_ratio, process_ratio = ratios.get(size, (math.nan, math.nan))
        rows.append(
            [
                str(size), str(workers), f"{medians['span']:.1f}", f"{medians['process']:.1f}",
                times(span_ratio) if workers == 2 else "",
                times(process_ratio) if workers == 2 else "",
                percent(medians["outside"]), percent(medians["outside_busy"]),
            ]
        )
    lines += table(
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
            f" **{times(span_ratio)}**), {one['process']:.1f} → {two['process']:.1f} over the"
            f" process (ratio **{times(process_ratio)}**); target ≥ {RATIO_TARGET}x. Outside"
            f" training: {percent(one['outside'])} with 1 worker, {percent(two['outside'])} with"
            " 2;"
            f" target < {percent(OVERHEAD_TARGET)}.",
        ]
    return lines


def target_lines(runs: Sequence[WorkerRun]) -> list[str]:
    """The lines for "Where we stand against the targets": the 2 / 1 worker ratio, and the share
    of the workers' time outside training."""
    lines: list[str] = []
    summary = _summary(runs)
    ratios = _ratios(runs)
    if ratios:
        holds = all(span >= RATIO_TARGET for span, _ in ratios.values())
        state = "holds" if holds else "does not hold yet"
        figures = "; ".join(
            f"at {size} trials {times(span)} over the trial span, {times(process)} over the"
            " process wall time"
            for size, (span, process) in ratios.items()
        )
        lines += [
            f"- **Two workers give ≥ {RATIO_TARGET}x the trials per minute of one (PostgreSQL):"
            f" {state}** ({figures}; section 4).",
        ]
    if summary:
        worker_shares = "; ".join(
            f"{size} trials, {workers} worker{'s' if workers > 1 else ''}:"
            f" {percent(medians['outside'])}"
            for (size, workers), medians in summary.items()
        )
        holds = all(m["outside"] < OVERHEAD_TARGET for m in summary.values())
        state = "holds" if holds else "does not hold yet"
        lines += [
            f"- **Outside training under {percent(OVERHEAD_TARGET)} of the workers' time with"
            f" real trials on PostgreSQL (section 4): {state}** ({worker_shares}).",
        ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.workers first-trial [--size 1000] [--repeats 2] [--base PATH]``
    or ``python -m benchmarks.workers ratio [--trials 60] [--repeats 1]``: the issue-18 checks
    of section 4 on the local PostgreSQL, as Markdown rows on stdout."""
    import argparse

    from benchmarks._common import DEFAULT_POSTGRES_ADMIN_URL, temporary_postgres

    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers")
    parser.add_argument("what", choices=("first-trial", "ratio"))
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed-trials", type=int, default=40)
    parser.add_argument("--family", default=None,
                        help="ratio: search one model family only (e.g. mlp: longer trials)")
    parser.add_argument("--base", default=None,
                        help="another checkout to measure side by side (its PYTHONPATH)")
    parser.add_argument("--admin-url", default=DEFAULT_POSTGRES_ADMIN_URL)
    args = parser.parse_args(argv)
    from sweep.search._optuna import quiet_optuna

    quiet_optuna()

    def database() -> AbstractContextManager[str]:
        return temporary_postgres(args.admin_url)

    log(f"workers: load at start {load_average()}")
    codes: list[tuple[str, str | None]] = [("this checkout", None)]
    if args.base:
        codes.append((f"base ({args.base})", args.base))
    if args.what == "ratio":
        runs = run_workers(database, sizes=(args.trials + 40,), new_trials=args.trials,
                           seed_trials=args.seed_trials, epochs=None, repeats=args.repeats,
                           family=args.family, codes=codes)
        # Training per trial and the busy share tell a slower machine from a costlier loop:
        # trials that the pruner stops early leave a second worker little to overlap.
        print("| code | workers | repeat | trials | process s | start to first trial s |"
              " span s | last trial to exit s | pruned | epochs per trial |"
              " training s per trial | outside training (busy) | trials/min (process) |"
              " trials/min (span) | load after |"
              "\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for run in runs:
            per_trial = run.train_seconds / run.timed_trials if run.timed_trials else math.nan
            print(f"| {run.code} | {run.workers} | {run.repeat} | {run.counted_trials} |"
                  f" {run.process_seconds:.1f} | {run.startup_seconds:.1f} |"
                  f" {run.span_seconds:.1f} | {run.tail_seconds:.1f} | {run.pruned_trials} |"
                  f" {run.epochs / max(1, run.counted_trials):.1f} | {per_trial:.2f} |"
                  f" {run.outside_training_share_busy:.1%} |"
                  f" {run.trials_per_minute_process:.1f} | {run.trials_per_minute_span:.1f} |"
                  f" {run.load_after} |")
        for code, _ in codes:
            one = [r.process_seconds for r in runs if r.code == code and r.workers == 1]
            two = [r.process_seconds for r in runs if r.code == code and r.workers == 2]
            if one and two:
                print(f"\n{code}: 2 workers against 1 over the process, medians"
                      f" {statistics.median(one):.2f} s and {statistics.median(two):.2f} s:"
                      f" **{statistics.median(one) / statistics.median(two):.2f}x**")
        return 0
    results: list[FirstTrial] = []
    with tempfile.TemporaryDirectory(prefix="sweep-bench-first-") as name:
        folder = Path(name)
        config = campaign_file(folder, None)
        with database() as url:
            seed = run_seed_sweep(url, args.seed_trials, config, folder)
        for repeat in range(args.repeats):
            for code, path in codes if repeat % 2 == 0 else codes[::-1]:
                with database() as url:
                    result = measure_first_trial(
                        url, f"first-{repeat}", size=args.size, config=config, folder=folder,
                        seed=seed, code=code, pythonpath=path,
                    )
                log(f"workers: {code}: first trial after {result.first_trial_seconds:.1f} s,"
                    f" bare import {result.import_tensorflow_seconds:.1f} s")
                results.append(result)
    print("| code | study size | start to first trial s | bare `import tensorflow` s |"
          " ratio | load after |\n|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.code} | {r.study_size} | {r.first_trial_seconds:.1f} |"
              f" {r.import_tensorflow_seconds:.1f} | {r.ratio:.2f}x | {r.load_after} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
