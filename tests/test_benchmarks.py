"""Smoke test: `python -m benchmarks --quick` runs end to end and writes every table.

It checks that the report has its sections and that the cells hold numbers, not that the
targets hold: quick budgets are far too small for the figures to mean anything. Its purpose
is that the benchmark code cannot rot unnoticed.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _servers import admin_url, unreachable_reason

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("keras_tuner") is None,
        reason='needs the bench extra: pip install -e ".[bench]"',
    ),
]


def _rows(report: str, first_cell: str) -> list[list[str]]:
    """Cells of every Markdown table row whose first cell is `first_cell`."""
    rows = []
    for line in report.splitlines():
        if line.startswith(f"| {first_cell} |"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def _number(cell: str) -> float:
    """A cell as a number: plain, scientific, a percentage or a ratio like 2.3x."""
    text = cell.strip().rstrip("%x").replace("∞", "inf")
    return float(text)


def _is_number(cell: str) -> bool:
    try:
        return not math.isnan(_number(cell))
    except ValueError:
        return False


@pytest.mark.timeout(1000)
def test_quick_benchmark_writes_every_table(tmp_path: Path) -> None:
    postgres_down = unreachable_reason("postgresql")
    if postgres_down and "CI" in os.environ:
        pytest.fail(f"PostgreSQL is unreachable in CI: {postgres_down}", pytrace=False)
    out = tmp_path / "B.md"
    completed = subprocess.run(
        [
            sys.executable, "-m", "benchmarks", "--quick", "--out", str(out),
            "--storage-postgres", admin_url("postgresql"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,  # 285 s on a quiet machine, 445 s seen under load
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = out.read_text(encoding="utf-8")

    for heading in (
        "## Where we stand against the targets",
        "## This run",
        "## Machine",
        "## 1. Model quality per operation",
        "## 2. Speed",
        "### Trials per minute of a default sweep",
        "## 3. Per-trial overhead: sampling + storage",
        "## 7. Prediction service",
        "## 8. Exact networks: expressions and signed ranges",
        "## 9. Scale: many workers on one PostgreSQL",
    ):
        assert heading in report, heading
    assert "**Failed**" not in report
    assert "python -m benchmarks --quick" in report
    # The service: a latency per client setting and the two target verdicts.
    served = _rows(report, "`sweep serve` (python client)")
    assert len(served) >= 4 and all(_is_number(row[4].split()[0]) for row in served), served
    assert "one pair per request, 8 concurrent clients, p50 under 5 ms" in report
    assert "a 10,000-pair request, p50 under 50 ms" in report

    # Exact networks: five methods on the quick case, its hit rates numbers; the seed protocol.
    exact = _rows(report, "multiply on [-500, 500)")
    assert [row[1] for row in exact[:5]] == [
        "original network", "KerasTuner", "sweep before (MLP space)", "our sweep",
        "our sweep, no startup designs",
    ], exact
    assert all(_is_number(cell) for row in exact[2:5] for cell in row[3:7]), exact
    assert re.search(r"\| our sweep \| .* \| \d+/10 \| [0-9.]+ \| \[[0-9.]+, [0-9.]+\] \|",
                     report)

    # Quality: three methods per quick operation, every metric a number.
    for operation in ("add", "multiply"):
        rows = _rows(report, operation)
        methods = [row[1] for row in rows]
        for method in ("original network", "KerasTuner", "our sweep"):
            assert method in methods, (operation, methods)
        for row in rows:
            if row[1] in ("original network", "KerasTuner", "our sweep"):
                # runs, wall s, then six metrics
                assert all(_is_number(cell) for cell in row[2:10]), row

    # Speed: steps per second for the quick model, all four settings.
    speed = _rows(report, "2-16-16-1 relu")
    assert speed and all(_is_number(cell) for cell in speed[0][2:6]), speed

    # Overhead: a figure per size on SQLite (and PostgreSQL when it is up).
    backends = ["SQLite"] if postgres_down else ["SQLite", "PostgreSQL"]
    for backend in backends:
        rows = _rows(report, backend)
        assert rows, backend
        assert all(_is_number(cell) for cell in rows[0][1:3]), rows[0]
    assert re.search(r"Export \(save .*\): [0-9.e+]+ ms", report)

    if not postgres_down:
        assert "## 4. Worker throughput on PostgreSQL" in report
        assert re.search(r"ratio \*\*[0-9.]+x\*\*", report)
        assert "Two workers give" in report
        # A run per worker count at the quick study size: rates and shares are numbers.
        for size in ("10",):
            runs = [row for row in _rows(report, size) if len(row) == 15]
            assert sorted(row[1] for row in runs) == ["1", "2"], runs
            assert all(_is_number(row[7]) and _is_number(row[11]) for row in runs), runs

    # Scale: 2 real workers filled the budget exactly, and the verdict line is there.
    if not postgres_down:
        scale = [row for row in _rows(report, "2") if len(row) == 13]
        assert scale and "(exact)" in scale[0][2] and scale[0][3:6] == ["0", "0", "0"], scale
        assert "- **Scale: 2 worker processes on one PostgreSQL" in report

    # Memory: one run per optimizer, growth and speed are numbers.
    assert "## 5. Memory of a long-lived worker" in report
    for optimizer in ("sweep", "keras"):
        rows = _rows(report, optimizer)
        assert rows and all(_is_number(cell) for cell in rows[0][1:5]), (optimizer, rows)


@pytest.mark.timeout(300)
def test_scale_benchmark_runs_real_workers_through_pgbouncer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Section 9's machinery at its smallest: 3 worker processes behind a real PgBouncer fill
    an exact budget, nothing left RUNNING or failed. The pool is docs/deployment.md's 2 per
    worker starting together (opening Optuna's storage holds 2 at once; a 2-connection pool
    starved 1 run in 4 here until PgBouncer's query_wait_timeout)."""
    postgres_down = unreachable_reason("postgresql")
    if postgres_down:
        if "CI" in os.environ:
            pytest.fail(f"PostgreSQL is unreachable in CI: {postgres_down}", pytrace=False)
        pytest.skip(postgres_down)
    from benchmarks.pgbouncer import binary
    from benchmarks.scale import run_scale_once

    if binary() is None:
        if "CI" in os.environ:
            pytest.fail("pgbouncer is not installed (CI is set)", pytrace=False)
        pytest.skip("pgbouncer is not installed")
    monkeypatch.chdir(REPO_ROOT)  # the workers run `python -m benchmarks.scale --worker`
    run = run_scale_once(admin_url("postgresql"), workers=3, repeat=1, trials=8,
                         pgbouncer_pool=6)
    assert run.exact, run.counted
    assert (run.running_left, run.failed, run.errors) == (0, 0, []), run
    # The campaign's database never saw more server connections than PgBouncer's pool.
    assert run.peak_connections <= 6, run.peak_connections
    assert _is_number(run.row().split("|")[9])
