"""Section 13: trials per minute of a default sweep, the current tree against a baseline commit.

The renderer on the recorded quick run and on made-up runs (medians, ratios, the verdict); in
the slow tier, that the baseline's process imports the worktree's code, and one tiny real run.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from _bench_markdown import is_number, number, recorded_quick_run, rows

from benchmarks.report import render
from benchmarks.throughput import (
    BASELINE,
    BASELINE_COMMIT,
    NEW,
    ThroughputResult,
    ThroughputRun,
    child_environment,
    render_section,
    run_throughput,
    target_lines,
    worktree,
)

RUN_CELLS = 11  # cells per row of the runs table
SUMMARY_CELLS = 7


def _made_up(rates: dict[str, list[int]]) -> ThroughputResult:
    """Two operations' runs: trials per tree over a 60 s span and a 75 s process."""
    result = ThroughputResult("aaaaaaa", "bbbbbbb", ["add", "multiply"], repeats=3, timeout=60)
    for key, counts in rates.items():
        operation, tree = key.split("/")
        for repeat, trials in enumerate(counts, 1):
            result.runs.append(ThroughputRun(
                operation, tree, repeat, first=(tree == BASELINE) == bool(repeat % 2),
                load_before="1.00, 1.00, 1.00", exit_code=0, trials=trials,
                process_seconds=75.0, span_seconds=60.0,
            ))
    return result


def test_the_recorded_section_has_both_trees_per_run_and_a_ratio() -> None:
    recorded = recorded_quick_run().throughput
    assert recorded is not None and recorded.operations == ["add"]
    section = "\n".join(render_section(recorded))
    assert section.startswith("## 13. Trials per minute of a default sweep, against the code")
    found = rows(section, "add")
    runs = [row for row in found if len(row) == RUN_CELLS]
    assert sorted(row[1] for row in runs) == [BASELINE, NEW]
    for row in runs:
        assert all(is_number(row[k]) for k in (4, 5, 6, 7, 8)), row
        assert row[9] == "" and row[10].count(",") == 2, row  # no error; the load before
    (summary,) = [row for row in found if len(row) == SUMMARY_CELLS]
    assert all(is_number(cell) for cell in summary[1:]), summary
    assert number(summary[3]) == pytest.approx(number(summary[2]) / number(summary[1]), rel=0.02)


def test_the_whole_report_has_section_13_and_its_target_line() -> None:
    report = render(recorded_quick_run())
    assert "## 13. Trials per minute of a default sweep" in report
    (line,) = [ln for ln in report.splitlines() if "Trials per minute of a default sweep at" in ln]
    assert line.startswith("- **Trials per minute of a default sweep at least 2x the baseline: ")
    assert "| throughput |" in report  # its load in the run's table


def test_medians_over_the_repeats_and_the_verdict_per_operation() -> None:
    result = _made_up({"add/baseline": [10, 30, 20], "add/new": [45, 40, 90],
                       "multiply/baseline": [10, 10, 10], "multiply/new": [19, 30, 19]})
    assert result.median_rate("add", BASELINE) == 20.0  # trials per minute over 60 s
    assert result.ratio("add") == 2.25
    assert result.ratio("multiply", "process") == pytest.approx(1.9)
    (line,) = target_lines(result)
    assert ": does not hold**" in line and "add 2.25x; multiply 1.90x;" in line
    result.runs = [r for r in result.runs if r.operation == "add"]
    result.operations = ["add"]
    assert ": holds**" in target_lines(result)[0]


def test_a_failed_run_shows_its_error_and_no_rate() -> None:
    result = _made_up({"add/baseline": [10], "add/new": [0]})
    result.runs[1].span_seconds, result.runs[1].error = math.nan, "study not read: boom"
    section = "\n".join(render_section(result))
    (failed,) = [row for row in rows(section, "add") if len(row) == RUN_CELLS and row[1] == NEW]
    assert failed[7] == "—" and failed[9] == "study not read: boom"
    assert "does not hold" in target_lines(result)[0]
    assert render_section(ThroughputResult("a", "b", ["add"], 1, 5.0)) == []


@pytest.mark.slow
def test_the_baseline_process_imports_the_worktrees_code(tmp_path: Path) -> None:
    show = "import sweep, storage; print(sweep.__file__, storage.__file__)"
    with worktree(BASELINE_COMMIT) as tree:
        shown = subprocess.run(
            [sys.executable, "-c", show],
            cwd=tmp_path, env=child_environment(tree, tmp_path), capture_output=True, text=True,
            check=True,
        ).stdout.split()
        assert [Path(f).resolve().is_relative_to(tree.resolve()) for f in shown] == [True, True]
    assert not tree.exists()  # removed after


@pytest.mark.slow
def test_a_tiny_real_run_measures_both_trees() -> None:
    result = run_throughput(ThroughputResult(BASELINE_COMMIT, "now", ["add"], 1, timeout=6.0))
    assert sorted(r.tree for r in result.runs) == [BASELINE, NEW]
    for run in result.runs:
        assert run.exit_code == 0 and not run.error, run
        assert run.trials > 0 and 0 < run.span_seconds < run.process_seconds, run
    assert result.ratio("add") > 0
