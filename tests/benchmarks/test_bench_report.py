"""The report rendered from a recorded quick run: every section, every table, numbers in the cells.

The results are those of one real `python -m benchmarks --quick` run (recorded/quick.json), so
these tests check the renderers on what the benchmark really measures, in milliseconds; each
benchmark's own smoke test (test_bench_<module>.py) checks that it still measures.
"""

from __future__ import annotations

import re

import pytest
from _bench_markdown import is_number, recorded_quick_run, rows

from benchmarks.report import Results, render


@pytest.fixture(scope="module")
def report() -> str:
    return render(recorded_quick_run())


def test_the_report_has_every_section(report: str) -> None:
    for heading in (
        "## Where we stand against the targets",
        "## This run",
        "## Machine",
        "## 1. Model quality per operation",
        "## 2. Speed",
        "### Trials per minute of a default sweep",
        "## 3. Per-trial overhead: sampling + storage",
        "## 4. Worker throughput on PostgreSQL",
        "## 5. Memory of a long-lived worker",
        "## 6. Command start-up",
        "## 7. Prediction service",
        "## 8. Exact networks: expressions and signed ranges",
        "## 9. Scale: many workers on one PostgreSQL",
        "## 10. Formulas from an expression and from a table",
    ):
        assert heading in report, heading
    assert "**Failed**" not in report
    assert "python -m benchmarks --quick" in report
    assert "Partial report" not in report


def test_the_service_has_a_latency_per_client_setting_and_both_verdicts(report: str) -> None:
    served = rows(report, "`sweep serve` (python client)")
    assert len(served) >= 4 and all(is_number(row[4].split()[0]) for row in served), served
    assert "one pair per request, 8 concurrent clients, p50 under 5 ms" in report
    assert "a 10,000-pair request, p50 under 50 ms" in report


def test_exact_networks_have_five_methods_and_the_seed_protocol(report: str) -> None:
    exact = rows(report, "multiply on [-500, 500)")
    assert [row[1] for row in exact[:5]] == [
        "original network", "KerasTuner", "sweep before (MLP space)", "our sweep",
        "our sweep, no startup designs",
    ], exact
    assert all(is_number(cell) for row in exact[2:5] for cell in row[3:7]), exact
    assert re.search(r"\| our sweep \| .* \| \d+/10 \| [0-9.]+ \| \[[0-9.]+, [0-9.]+\] \|",
                     report)


def test_quality_has_three_methods_per_operation_and_every_metric(report: str) -> None:
    for operation in ("add", "multiply"):
        found = rows(report, operation)
        methods = [row[1] for row in found]
        for method in ("original network", "KerasTuner", "our sweep"):
            assert method in methods, (operation, methods)
        for row in found:
            if row[1] in ("original network", "KerasTuner", "our sweep"):
                # runs, wall s, then six metrics
                assert all(is_number(cell) for cell in row[2:10]), row


def test_speed_has_steps_per_second_for_all_four_fit_settings(report: str) -> None:
    speed = rows(report, "2-16-16-1 relu")
    assert speed and all(is_number(cell) for cell in speed[0][2:6]), speed


def test_overhead_has_a_figure_per_size_on_both_backends(report: str) -> None:
    for backend in ("SQLite", "PostgreSQL"):
        found = rows(report, backend)
        assert found, backend
        assert all(is_number(cell) for cell in found[0][1:3]), found[0]
    assert re.search(r"Export \(save .*\): [0-9.e+]+ ms", report)


def test_workers_have_a_run_per_worker_count_and_the_ratio(report: str) -> None:
    assert re.search(r"ratio \*\*[0-9.]+x\*\*", report)
    assert "Two workers give" in report
    # A run per worker count at the quick study size: rates and shares are numbers.
    runs = [row for row in rows(report, "10") if len(row) == 15]
    assert sorted(row[1] for row in runs) == ["1", "2"], runs
    assert all(is_number(row[7]) and is_number(row[11]) for row in runs), runs


def test_scale_filled_the_budget_exactly_and_has_its_verdict(report: str) -> None:
    scale = [row for row in rows(report, "2") if len(row) == 13]
    assert scale and "(exact)" in scale[0][2] and scale[0][3:6] == ["0", "0", "0"], scale
    assert "- **Scale: 2 worker processes on one PostgreSQL" in report


def test_memory_has_a_run_per_optimizer(report: str) -> None:
    for optimizer in ("sweep", "keras"):
        found = rows(report, optimizer)
        assert found and all(is_number(cell) for cell in found[0][1:5]), (optimizer, found)


def test_start_up_has_every_command(report: str) -> None:
    for command in ("`sweep --help`", "`sweep best`", "`sweep models`", "`optuna studies`"):
        found = rows(report, command)
        assert found and all(is_number(cell) for cell in found[0][1:4]), (command, found)


def test_a_run_still_going_says_so_and_shows_only_what_it_measured() -> None:
    recorded = recorded_quick_run()
    partial = Results(
        command=recorded.command, date=recorded.date, quick=True, budget=recorded.budget,
        machine=recorded.machine, load_start=recorded.load_start,
        quality=recorded.quality[:1], complete=False,
    )
    report = render(partial)
    assert "**Partial report" in report
    assert "## 1. Model quality per operation" in report
    assert "### Trials per minute of a default sweep" in report
    for heading in ("## 2. Speed", "## 3.", "## 4.", "## 5.", "## 6.", "## 7.", "## 8.", "## 9.",
                    "## 10."):
        assert heading not in report, heading
