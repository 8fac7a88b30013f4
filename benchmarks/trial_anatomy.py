"""Where a default sweep's trial spends its time, phase by phase and per family.

Runs `sweep run --ops OP --trials 100000 --timeout S --no-stop-when-exact` in this process
on a fresh SQLite file, as a user runs it, with a clock around each phase of a trial:

- *between*: after Optuna's `_run_trial` returns until it is called again (the scheduler's
  slot reservation and stop checks, progress and the reporter, `Study.optimize`'s own);
- *stale check*: Optuna's `fail_stale_trials` before each trial (heartbeats are on);
- *ask*: `Study.ask` (the trial created and read back);
- *suggest*: the objective's suggestions and its parameters' write, up to training;
- *training*: the family's training (`Trainer.train`: build, fit or solve, refit);
- *promotion*: a trained model offered to the registry, and a better one's export, row and
  notes (`on_model`);
- *objective's rest*: evaluation on three splits, the pruner's reports, the trial's
  attributes and the writes of its buffered rows;
- *tell*: from the objective's return to `_run_trial`'s (Optuna's `tell`).

    python -m benchmarks.trial_anatomy --ops sqrt,square --timeout 30

Prints a Markdown table per operation: milliseconds per trial by phase (the median over the
family's trials) and each phase's share of the trials' whole time, per family and overall.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import signal
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from benchmarks._common import load_average, log

__all__ = ["PHASES", "Anatomy", "main", "measure", "render"]

PHASES = ("between", "stale check", "ask", "suggest", "training", "promotion",
          "objective's rest", "tell")
FAMILIES = ("mlp", "power", "formula")


@dataclass
class Anatomy:
    """One operation's run: seconds per phase for each trial, in the order they ran."""

    operation: str
    seconds: float
    trials: list[dict[str, float]] = field(default_factory=list)
    families: list[str] = field(default_factory=list)


class _Clock:
    """Accumulates phase times into the current trial's record."""

    def __init__(self) -> None:
        self.trials: list[dict[str, float]] = []
        self.left_run: float | None = None
        self.objective_returned: float | None = None

    def add(self, phase: str, seconds: float) -> None:
        if self.trials:
            record = self.trials[-1]
            record[phase] = record.get(phase, 0.0) + seconds

    def timed(self, phase: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(phase, time.perf_counter() - started)

        return wrapper


@contextlib.contextmanager
def _clocked(clock: _Clock) -> Iterator[None]:
    """Wrap the phases' functions where the sweep looks them up, for the block."""
    import optuna
    import optuna.study._optimize as optimize

    from sweep.nets.background import BackgroundTrainer
    from sweep.search import objective as objective_module
    from sweep.search.scheduler import Scheduler
    from sweep.search.space import SearchSpace

    run_trial = optimize._run_trial
    objective_call = objective_module.Objective.__call__
    promotion_hook = Scheduler._promotion_hook

    def timed_promotion_hook(self: Any, *args: Any, **kwargs: Any) -> Any:
        return clock.timed("promotion", promotion_hook(self, *args, **kwargs))

    def timed_run_trial(*args: Any, **kwargs: Any) -> Any:
        entered = time.perf_counter()
        clock.trials.append({})
        clock.objective_returned = None  # a trial whose ask failed has no tell
        if clock.left_run is not None:
            clock.add("between", entered - clock.left_run)
        try:
            return run_trial(*args, **kwargs)
        finally:
            clock.left_run = time.perf_counter()
            if clock.objective_returned is not None:
                clock.add("tell", clock.left_run - clock.objective_returned)

    def timed_objective(self: Any, trial: Any) -> Any:
        started = time.perf_counter()
        try:
            return objective_call(self, trial)
        finally:
            clock.objective_returned = time.perf_counter()
            record = clock.trials[-1]
            inner = sum(record.get(p, 0.0) for p in ("suggest", "training", "promotion"))
            record["objective's rest"] = clock.objective_returned - started - inner

    patches: list[tuple[Any, str, Any]] = [
        (optimize, "_run_trial", timed_run_trial),
        (optuna.storages, "fail_stale_trials",
         clock.timed("stale check", optuna.storages.fail_stale_trials)),
        (optuna.Study, "ask", clock.timed("ask", optuna.Study.ask)),
        (objective_module.Objective, "__call__", timed_objective),
        (SearchSpace, "suggest", clock.timed("suggest", SearchSpace.suggest)),
        (BackgroundTrainer, "train", clock.timed("training", BackgroundTrainer.train)),
        (Scheduler, "_promotion_hook", timed_promotion_hook),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    try:
        for owner, name, replacement in patches:
            setattr(owner, name, replacement)
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


@contextlib.contextmanager
def _restored(handlers: dict[signal.Signals, Any]) -> Iterator[None]:
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def _families(path: Path) -> dict[int, str]:
    """Each trial's family by its number, from the study's rows."""
    from sweep.search.space import SearchSpace

    known = SearchSpace().family.values()
    with contextlib.closing(sqlite3.connect(path)) as connection:
        rows = connection.execute(
            "SELECT t.number, p.param_value FROM trials t JOIN trial_params p "
            "ON p.trial_id = t.trial_id AND p.param_name = 'family' ORDER BY t.number"
        ).fetchall()
    return {number: str(known[int(value)]) for number, value in rows}


def measure(operation: str, timeout: float, folder: Path) -> Anatomy:
    """One `sweep run` of `operation` for `timeout` seconds, clocked."""
    from sweep.cli import main as sweep_main

    path = folder / f"{operation}.db"
    clock = _Clock()
    # `sweep run` installs its stop-signal handlers; this process goes on after it.
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    started = time.perf_counter()
    # The sweep's own result table is not this benchmark's output.
    with _clocked(clock), contextlib.redirect_stdout(io.StringIO()), _restored(handlers):
        code = sweep_main([
            "run", "--storage", f"sqlite:///{path}", "--ops", operation,
            "--trials", "100000", "--timeout", f"{timeout:g}", "--no-stop-when-exact",
        ])
    if code != 0:
        raise RuntimeError(f"sweep run --ops {operation} exited {code}")
    families = _families(path)
    # Trials are numbered in the order this one worker ran them.
    return Anatomy(operation, time.perf_counter() - started, clock.trials,
                   [families.get(n, "?") for n in range(len(clock.trials))])


def render(anatomy: Anatomy) -> list[str]:
    groups = [f for f in FAMILIES if f in anatomy.families] + ["all"]
    header = " | ".join(f"{g} ({_count(anatomy, g)}): ms, share" for g in groups)
    lines = [f"| phase | {header} |", "|---|" + "---|" * len(groups)]
    totals = {g: sum(sum(t.values()) for t in _of(anatomy, g)) for g in groups}
    for phase in PHASES:
        cells = []
        for group in groups:
            trials = _of(anatomy, group)
            ms = median(t.get(phase, 0.0) for t in trials) * 1e3
            share = sum(t.get(phase, 0.0) for t in trials) / totals[group] if totals[group] else 0
            cells.append(f"{ms:.2f}, {share:.0%}")
        lines.append(f"| {phase} | {' | '.join(cells)} |")
    cells = [f"{median(sum(t.values()) for t in _of(anatomy, g)) * 1e3:.1f}, "
             f"{totals[g] / totals['all']:.0%} of all" for g in groups]
    lines.append(f"| whole trial | {' | '.join(cells)} |")
    return lines


def _of(anatomy: Anatomy, group: str) -> list[dict[str, float]]:
    return [t for t, f in zip(anatomy.trials, anatomy.families, strict=True)
            if group in ("all", f)]


def _count(anatomy: Anatomy, group: str) -> int:
    return len(_of(anatomy, group))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ops", default="sqrt,square", help="comma-separated built-ins")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per operation")
    args = parser.parse_args(argv)
    if not 1 <= args.timeout <= 3600:
        parser.error(f"--timeout must be 1-3600 seconds, got {args.timeout:g}")
    started = load_average()
    with tempfile.TemporaryDirectory(prefix="anatomy-") as folder:
        for operation in [op.strip() for op in args.ops.split(",") if op.strip()]:
            anatomy = measure(operation, args.timeout, Path(folder))
            log(f"trial anatomy: {operation}: {len(anatomy.trials)} trials in "
                f"{anatomy.seconds:.1f} s (load {load_average()})")
            print(f"\n{operation}, {len(anatomy.trials)} trials in {args.timeout:g} s:\n")
            print("\n".join(render(anatomy)))
    print(f"\nMilliseconds: the median over a family's trials; share: of its trials' summed "
          f"time. Load {started} before, {load_average()} after; {os.cpu_count()} cores.")


if __name__ == "__main__":
    main()
