"""Trials per minute of a default sweep, today's code against a baseline commit, side by side.

Issue 31's target: a default sweep (`--trials 100000 --timeout 60 --no-stop-when-exact`, one
operation) runs at least 2x the trials per minute of the code before its speed changes. Both
trees run the CLI as a user runs it, `python -m sweep run` on a fresh SQLite file in a scratch
folder, with PYTHONPATH at the tree (the baseline is a temporary `git worktree` of its commit)
and no SWEEP_* variable but the artifacts folder. Per operation and repeat the two trees run
back to back, alternating which goes first, so a shared machine's load drifts over both; the
load before each run is recorded. Counted trials (COMPLETE + PRUNED) and their span (first
start to last completion) come from the study through Optuna.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks._common import last_line, load_average, log, median, run_logged
from benchmarks.tables import table, times

__all__ = [
    "BASELINE",
    "BASELINE_COMMIT",
    "NEW",
    "OPERATIONS",
    "TARGET_RATIO",
    "ThroughputResult",
    "ThroughputRun",
    "add_arguments",
    "child_environment",
    "from_arguments",
    "render_section",
    "run_throughput",
    "target_lines",
    "worktree",
]

BASELINE = "baseline"
NEW = "new"
# The code before issue 31's trial-speed changes (0b787e9, cfb503b).
BASELINE_COMMIT = "f6a2d81"
OPERATIONS: tuple[str, ...] = ("add", "subtract", "multiply", "divide", "square", "sqrt")
TRIALS = 100_000  # a cap the timeout always reaches first
TARGET_RATIO = 2.0
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ThroughputRun:
    operation: str
    tree: str  # BASELINE or NEW
    repeat: int
    first: bool  # ran first of its repeat's pair
    load_before: str = ""
    exit_code: int | None = None
    trials: int = 0  # counted: COMPLETE + PRUNED
    failed_trials: int = 0
    process_seconds: float = math.nan
    span_seconds: float = math.nan  # first trial's start to last trial's completion
    error: str = ""

    @property
    def per_minute_span(self) -> float:
        return _per_minute(self.trials, self.span_seconds)

    @property
    def per_minute_process(self) -> float:
        return _per_minute(self.trials, self.process_seconds)


@dataclass
class ThroughputResult:
    baseline_commit: str
    new_commit: str
    operations: list[str]
    repeats: int
    timeout: float
    trials: int = TRIALS
    runs: list[ThroughputRun] = field(default_factory=list)

    def of(self, operation: str, tree: str) -> list[ThroughputRun]:
        return [r for r in self.runs if r.operation == operation and r.tree == tree]

    def median_rate(self, operation: str, tree: str, over: str = "span") -> float:
        """Median trials per minute over the repeats, `over` the trial span or the process."""
        return median(getattr(r, f"per_minute_{over}") for r in self.of(operation, tree))

    def ratio(self, operation: str, over: str = "span") -> float:
        """New over baseline, of the medians."""
        new = self.median_rate(operation, NEW, over)
        base = self.median_rate(operation, BASELINE, over)
        return new / base if base > 0 else math.nan


def _per_minute(trials: int, seconds: float) -> float:
    return 60 * trials / seconds if seconds > 0 else math.nan


# --- running ----------------------------------------------------------------------------------


def _git(*arguments: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *arguments], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


@contextmanager
def worktree(commit: str, root: Path = ROOT) -> Iterator[Path]:
    """`commit` checked out in a temporary git worktree of `root`'s repository, removed after
    (on failure too), so the baseline runs from its own files beside ours."""
    parent = Path(tempfile.mkdtemp(prefix="sweep-baseline-"))
    folder = parent / "tree"
    _git("worktree", "add", "--detach", str(folder), commit, cwd=root)
    try:
        yield folder
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=root,
                       capture_output=True)
        subprocess.run(["git", "worktree", "prune"], cwd=root, capture_output=True)
        subprocess.run(["rm", "-rf", str(parent)], capture_output=True)


def child_environment(tree: Path, folder: Path) -> dict[str, str]:
    """Ours without any SWEEP_* variable (no inherited storage, campaign or settings), the
    artifacts in `folder`, and `tree` first on the import path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWEEP_")}
    env["SWEEP_ARTIFACTS"] = str(folder / "artifacts")
    env["PYTHONPATH"] = str(tree)
    return env


def _read_study(url: str) -> tuple[int, int, float]:
    """Counted trials, failed trials and the trial span in seconds, over the file's studies."""
    import optuna

    storage = optuna.storages.RDBStorage(url, skip_compatibility_check=True)
    try:
        trials = [t for name in optuna.get_all_study_names(storage)
                  for t in optuna.load_study(study_name=name, storage=storage).get_trials(
                      deepcopy=False)]
    finally:
        storage.engine.dispose()
    counted = sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    failed = sum(t.state.name == "FAIL" for t in trials)
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else math.nan
    return counted, failed, span


def _measure(run: ThroughputRun, tree: Path, folder: Path, timeout: float, trials: int) -> None:
    name = f"{run.operation}-{run.tree}-{run.repeat}"
    url = f"sqlite:///{folder / f'{name}.db'}"
    command = [sys.executable, "-m", "sweep", "run", "--ops", run.operation, "--storage", url,
               "--trials", str(trials), "--timeout", f"{timeout:g}", "--no-stop-when-exact"]
    run.load_before = load_average()
    try:
        run.exit_code, run.process_seconds = run_logged(
            command, folder, f"{name}.log", 3 * timeout + 600, child_environment(tree, folder)
        )
    except subprocess.TimeoutExpired:
        run.exit_code, run.error = -9, "killed: no end within 3x the timeout + 10 min"
        return
    if run.exit_code != 0:
        run.error = last_line(folder / f"{name}.log")
    try:
        run.trials, run.failed_trials, run.span_seconds = _read_study(url)
    except Exception as e:  # a run that wrote no study: its rates stay missing
        run.error = run.error or f"study not read: {type(e).__name__}: {e}"


def run_throughput(
    result: ThroughputResult, on_run: Callable[[ThroughputRun], None] | None = None,
    root: Path = ROOT,
) -> ThroughputResult:
    """Fills `result.runs`: every operation and repeat on both trees, alternating the order."""
    with worktree(result.baseline_commit, root) as baseline, \
            tempfile.TemporaryDirectory(prefix="sweep-throughput-") as scratch:
        trees = {BASELINE: baseline, NEW: root}
        for operation in result.operations:
            for repeat in range(1, result.repeats + 1):
                order = (BASELINE, NEW) if repeat % 2 else (NEW, BASELINE)
                for position, tree in enumerate(order):
                    run = ThroughputRun(operation, tree, repeat, first=position == 0)
                    folder = Path(scratch) / f"{operation}-{tree}-{repeat}"
                    folder.mkdir()
                    _measure(run, trees[tree], folder, result.timeout, result.trials)
                    log(f"throughput: {operation} {tree} #{repeat}: {run.trials} trials, "
                        f"{run.per_minute_span:.1f}/min over the span, "
                        f"{run.process_seconds:.1f} s (load {run.load_before})"
                        + (f"; {run.error}" if run.error else ""))
                    result.runs.append(run)
                    if on_run is not None:
                        on_run(run)
    return result


# --- wiring into `python -m benchmarks` -------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This section's options of `python -m benchmarks`."""
    parser.add_argument(
        "--throughput-ops", default=None, metavar="OP,OP,...",
        help="throughput section: operations (default: the six built-ins; add with --quick)",
    )
    parser.add_argument(
        "--throughput-timeout", type=float, default=None, metavar="SECONDS",
        help="throughput section: --timeout of each sweep (default 60; 10 with --quick)",
    )
    parser.add_argument(
        "--throughput-repeats", type=int, default=None, metavar="N",
        help="throughput section: runs per operation and tree (default 3; 1 with --quick)",
    )
    parser.add_argument(
        "--throughput-baseline", default=BASELINE_COMMIT, metavar="COMMIT",
        help="throughput section: the commit measured against the current tree "
        "(default %(default)s, before issue 31's trial-speed changes)",
    )


def from_arguments(args: argparse.Namespace) -> ThroughputResult:
    """The section's settings from `python -m benchmarks`' options, no runs yet."""
    quick = bool(args.quick)
    operations = (
        [o.strip() for o in args.throughput_ops.split(",") if o.strip()]
        if args.throughput_ops else ["add"] if quick else list(OPERATIONS)
    )
    new = _git("rev-parse", "--short", "HEAD")
    if _git("status", "--porcelain", "--untracked-files=no"):
        new += " + uncommitted edits"
    return ThroughputResult(
        baseline_commit=_git("rev-parse", "--short", args.throughput_baseline),
        new_commit=new,
        operations=operations,
        repeats=args.throughput_repeats or (1 if quick else 3),
        timeout=args.throughput_timeout or (10.0 if quick else 60.0),
    )


# --- the report -------------------------------------------------------------------------------


def _rate(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.1f}"


def _seconds(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.1f}"


def render_section(result: ThroughputResult | None, number: int = 13) -> list[str]:
    if result is None or not result.runs:
        return []
    lines = [
        f"## {number}. Trials per minute of a default sweep, against the code before", "",
        f"Per operation, `python -m sweep run --ops OP --trials {result.trials}"
        f" --timeout {result.timeout:g} --no-stop-when-exact` on a fresh SQLite file, as a user"
        f" runs it, from two trees side by side: *baseline* (commit {result.baseline_commit},"
        f" a temporary git worktree) and *new* (commit {result.new_commit}). {result.repeats}"
        " run(s) per operation and tree, the two trees back to back and alternating which goes"
        " first. *trials*: counted (COMPLETE + PRUNED); *span*: the first trial's start to the"
        " last one's completion; *process*: the command's wall time, start-up included. The"
        " machine is shared: the load before each run is in the last column, and the ratio of"
        " the two trees' medians is the figure to read.", "",
    ]
    rows = []
    for run in result.runs:
        rows.append([
            run.operation, run.tree, str(run.repeat), "yes" if run.first else "no",
            str(run.trials), _seconds(run.span_seconds), _seconds(run.process_seconds),
            _rate(run.per_minute_span), _rate(run.per_minute_process),
            run.error[:60] if run.error else "", run.load_before,
        ])
    lines += table(
        ["operation", "tree", "run", "first", "trials", "span s", "process s",
         "trials/min (span)", "trials/min (process)", "error", "load before"],
        rows,
    )
    lines += ["", "Medians over the runs, and new over baseline:", ""]
    summary = []
    for operation in result.operations:
        spans = [result.median_rate(operation, t) for t in (BASELINE, NEW)]
        processes = [result.median_rate(operation, t, "process") for t in (BASELINE, NEW)]
        summary.append([
            operation, _rate(spans[0]), _rate(spans[1]), times(result.ratio(operation)),
            _rate(processes[0]), _rate(processes[1]), times(result.ratio(operation, "process")),
        ])
    lines += table(
        ["operation", "baseline /min (span)", "new /min (span)", "ratio (span)",
         "baseline /min (process)", "new /min (process)", "ratio (process)"],
        summary,
    )
    return lines


def target_lines(result: ThroughputResult | None) -> list[str]:
    if result is None or not result.runs:
        return []
    ratios = {o: result.ratio(o) for o in result.operations}
    holds = all(not math.isnan(r) and r >= TARGET_RATIO for r in ratios.values())
    process = "; ".join(f"{o} {times(result.ratio(o, 'process'))}" for o in result.operations)
    return [
        f"- **Trials per minute of a default sweep at least {TARGET_RATIO:g}x the baseline:"
        f" {'holds' if holds else 'does not hold'}** (new over baseline {result.baseline_commit},"
        f" medians of {result.repeats} over the trial span: "
        + "; ".join(f"{o} {times(r)}" for o, r in ratios.items())
        + f"; over the process: {process}; section 13).",
    ]


def _main(argv: Sequence[str] | None = None) -> int:
    """`python -m benchmarks.throughput`: this section alone, its Markdown on stdout."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput")
    parser.add_argument("--quick", action="store_true")
    add_arguments(parser)
    result = run_throughput(from_arguments(parser.parse_args(argv)))
    print("\n".join([*target_lines(result), "", *render_section(result)]))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
