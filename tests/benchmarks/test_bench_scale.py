"""Section 9 for real at its smallest: worker processes of the real campaign machinery, directly
on PostgreSQL and behind a real PgBouncer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _bench_markdown import is_number, rows
from _servers import admin_url, require_server

from benchmarks.scale import render_section, run_scale, run_scale_once, target_lines

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.timeout(300)
def test_two_workers_fill_an_exact_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    require_server("postgresql")
    monkeypatch.chdir(REPO_ROOT)  # the workers run `python -m benchmarks.scale --worker`
    runs = run_scale(admin_url("postgresql"), [2], repeats=1, trials=3)

    (run,) = runs
    assert run.clean, run
    section = "\n".join(render_section(runs, "Worker counts 2."))
    (row,) = [row for row in rows(section, "2") if len(row) == 13]
    assert "(exact)" in row[2] and row[3:6] == ["0", "0", "0"], row
    assert is_number(row[8]), row
    assert "holds" in target_lines(runs)[0]


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.timeout(300)
def test_scale_benchmark_runs_real_workers_through_pgbouncer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Section 9's machinery at its smallest: 3 worker processes behind a real PgBouncer fill
    an exact budget, nothing left RUNNING or failed. The pool is docs/deployment.md's 2 per
    worker starting together (opening Optuna's storage holds 2 at once; a 2-connection pool
    starved 1 run in 4 here until PgBouncer's query_wait_timeout)."""
    require_server("postgresql")
    from benchmarks.pgbouncer import binary

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
    assert is_number(run.row().split("|")[9])
