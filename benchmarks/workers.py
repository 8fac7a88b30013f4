"""Worker throughput on PostgreSQL: `sweep run --workers 1` and 2 in studies of 100 and 1000 trials.

Each measured run is a real `sweep run` process (its workers are processes too), against a fresh
database given through `SWEEP_STORAGE` as a user would. So that a run at 1000 trials per study
does not have to run 1000 trials, the study is created first and prefilled with S - N finished
trials; `sweep run --trials S` then runs exactly the N remaining real trials (the budget counts
COMPLETE + PRUNED trials, and a non-empty study gets no startup designs).

The prefilled trials are copies of the finished trials of one real seed sweep (run once per
benchmark, same campaign settings): their parameters, distributions, values, per-epoch reports
and user attributes are those of real trials, so the TPE sampler and the median pruner work on
the kind of history a long study has. The seed study's user attributes (its data fingerprint
among them) are copied too, so the campaign accepts the study as its own.

Per run, from the N new trials only: *span* is the first new trial's start to the last one's
end; *training* is the sum of their `train_seconds` attribute (model work: build, training, refit,
evaluation); outside training = 1 - training / (workers x span). Two rates: over the span (the
steady state the ratio is about) and over the process's wall time (what a user waits:
TensorFlow start-up, loading the campaign and the final table included).
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from benchmarks._common import load_average, log
from sweep.search.config import study_name
from sweep.search.storage import optuna_storage as open_optuna_storage

OPERATION = "add"
SIZES: tuple[int, ...] = (100, 1000)
QUICK_SIZES: tuple[int, ...] = (10,)  # one size: the smoke test only needs the code to run
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
# Attributes that point into the seed campaign's model registry: not carried to the copies.
_NOT_COPIED = ("registry_version", "promotion_error")
SEED_CAMPAIGN = "throughput-seed"


@dataclass(frozen=True)
class SeedSweep:
    """The real sweep whose finished trials are copied into the prefilled studies."""

    trials: tuple[FrozenTrial, ...]  # its COMPLETE and PRUNED trials, in order
    study_attrs: dict[str, Any]
    process_seconds: float

    @property
    def pruned(self) -> int:
        return sum(t.state == TrialState.PRUNED for t in self.trials)


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


def _campaign_file(folder: Path, epochs: int | None, family: str | None = None) -> Path:
    """The campaign's settings: the defaults, or a fixed epoch cap, or one model family."""
    path = folder / "campaign.toml"
    lines = ["[space]"]
    if epochs is not None:
        lines.append(f"epochs = {epochs}")
    if family is not None:
        lines.append(f"family = [{family!r}]")
    text = "\n".join(lines) + "\n" if len(lines) > 1 else "# defaults\n"
    path.write_text(text, encoding="utf-8")
    return path


def _sweep_run(
    url: str, campaign: str, workers: int, trials: int, config: Path, folder: Path,
    pythonpath: str | None = None,
) -> tuple[float, float]:
    """One `sweep run` process (of the checkout on `pythonpath`, else this one); returns its
    wall seconds and its start (`time.time()`)."""
    env = {**os.environ, "SWEEP_STORAGE": url, "SWEEP_ARTIFACTS": str(folder / "artifacts")}
    env.pop("SWEEP_CAMPAIGN", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    command = [
        sys.executable, "-m", "sweep", "run", "--ops", OPERATION, "--trials", str(trials),
        "--config", str(config), "--campaign", campaign, "--workers", str(workers),
    ]
    output = folder / f"{campaign}.log"
    started_at = time.time()
    started = time.monotonic()
    with output.open("w", encoding="utf-8") as log_file:
        completed = subprocess.run(
            command, env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=folder, check=False
        )
    seconds = time.monotonic() - started
    if completed.returncode != 0:
        tail = output.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(
            f"`sweep run --workers {workers}` exited {completed.returncode}:\n{tail}"
        )
    return seconds, started_at


def _load_trials(url: str, campaign: str) -> tuple[list[FrozenTrial], dict[str, Any]]:
    """Every trial of the campaign's study, and the study's user attributes."""
    storage = open_optuna_storage(url)
    try:
        study = optuna.load_study(study_name=study_name(campaign, OPERATION), storage=storage)
        return study.get_trials(deepcopy=True), dict(study.user_attrs)
    finally:
        storage.engine.dispose()


def run_seed_sweep(url: str, trials: int, config: Path, folder: Path) -> SeedSweep:
    """A real 1-worker sweep of `trials` trials; its finished trials are the copies' source."""
    seconds, _ = _sweep_run(url, SEED_CAMPAIGN, 1, trials, config, folder)
    finished, attrs = _load_trials(url, SEED_CAMPAIGN)
    kept = tuple(t for t in finished if t.state in COUNTED)
    if not kept:
        raise RuntimeError(f"the seed sweep finished no trial ({len(finished)} trials, all failed)")
    return SeedSweep(kept, attrs, seconds)


def _copy(trial: FrozenTrial) -> FrozenTrial:
    return optuna.trial.create_trial(
        state=trial.state,
        values=trial.values,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs={k: v for k, v in trial.user_attrs.items() if k not in _NOT_COPIED},
        intermediate_values=trial.intermediate_values,
    )


def prefill_study(url: str, campaign: str, seed: SeedSweep, count: int) -> None:
    """Create the campaign's study before `sweep run` does, holding `count` finished trials
    copied (cycling) from the seed sweep, with the seed study's attributes."""
    storage = open_optuna_storage(url)
    try:
        study = optuna.create_study(
            storage=storage, study_name=study_name(campaign, OPERATION), direction="minimize"
        )
        for key, value in seed.study_attrs.items():
            if key != "campaign":
                study.set_user_attr(key, value)
        study.set_user_attr("campaign", campaign)
        study.add_trials([_copy(seed.trials[i % len(seed.trials)]) for i in range(count)])
    finally:
        storage.engine.dispose()


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
    seconds, started_at = _sweep_run(url, campaign, workers, size, config, folder, pythonpath)
    trials, _ = _load_trials(url, campaign)
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
        config = _campaign_file(folder, epochs, family)
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


# -- a worker's start to its first trial ----------------------------------------------------


@dataclass(frozen=True)
class FirstTrial:
    """One `sweep run --workers 1` on a prefilled study: its start to its first new trial."""

    study_size: int
    code: str  # which checkout ran (PYTHONPATH), e.g. "this branch" or "main at 395d973"
    first_trial_seconds: float  # process start to the first new trial's start (its objective)
    import_tensorflow_seconds: float  # bare `python -c "import tensorflow"`, just before
    load_after: str

    @property
    def ratio(self) -> float:
        return self.first_trial_seconds / self.import_tensorflow_seconds


def _bare_import_seconds() -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import tensorflow"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def measure_first_trial(
    url: str, campaign: str, *, size: int, config: Path, folder: Path, seed: SeedSweep,
    code: str, pythonpath: str | None,
) -> FirstTrial:
    """Prefill `size` trials, then one `sweep run --trials size+1`: when did its trial start?"""
    prefill_study(url, campaign, seed, size)
    bare = _bare_import_seconds()
    env = {**os.environ, "SWEEP_STORAGE": url, "SWEEP_ARTIFACTS": str(folder / "artifacts")}
    env.pop("SWEEP_CAMPAIGN", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    command = [
        sys.executable, "-m", "sweep", "run", "--ops", OPERATION, "--trials", str(size + 1),
        "--config", str(config), "--campaign", campaign, "--workers", "1",
    ]
    started = time.time()
    completed = subprocess.run(command, env=env, cwd=folder, check=False,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"`sweep run` exited {completed.returncode}: {completed.stderr[-800:]}")
    trials, _ = _load_trials(url, campaign)
    first = min(t.datetime_start for t in trials[size:] if t.datetime_start is not None)
    return FirstTrial(size, code, first.timestamp() - started, bare, load_average())


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
        config = _campaign_file(folder, None)
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
