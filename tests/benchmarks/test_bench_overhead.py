"""Section 3 for real at its smallest: one window of trials per machinery and backend."""

from __future__ import annotations

import math

import pytest
from _bench_markdown import is_number, rows
from _servers import admin_url, require_server

from benchmarks._common import temporary_postgres
from benchmarks.overhead import (
    OPTUNA,
    PARTS,
    SWEEP,
    WINDOW,
    OverheadResult,
    render_section,
    run_overhead,
    target_lines,
)

# A real run of the benchmark on a tiny budget: the slow tier (the renderers are tested on a
# recorded run in test_bench_report.py).
pytestmark = pytest.mark.slow


def _check(results: list[OverheadResult], backends: list[str]) -> None:
    assert [(o.backend, o.machinery) for o in results] == [
        (backend, machinery) for backend in backends for machinery in (SWEEP, OPTUNA)
    ]
    for o in results:
        assert set(o.per_trial_ms) == {WINDOW} and o.per_trial_ms[WINDOW] > 0
        assert set(o.parts_ms[WINDOW]) == {*PARTS}
        assert o.writes_per_trial[WINDOW] > 0
    section = "\n".join(render_section(results, export_ms=1.0, typical_trial_seconds=0.5))
    for backend in backends:
        first = rows(section, backend)[0]
        assert is_number(first[1]), first
    assert "Against plain Optuna" in section
    assert target_lines(results) == []  # its verdict is at 100 and 1000 trials only


def test_sqlite_the_sweep_against_plain_optuna() -> None:
    results = run_overhead(None, (WINDOW,))
    _check(results, ["SQLite"])
    assert "Estimated share" in "\n".join(render_section(results, 1.0, 0.5))
    assert "Estimated share" not in "\n".join(render_section(results, 1.0, math.nan))


@pytest.mark.server
def test_postgresql_the_sweep_against_plain_optuna() -> None:
    require_server("postgresql")
    admin = admin_url("postgresql")
    with temporary_postgres(admin) as url:
        results = run_overhead(url, (WINDOW,), lambda: temporary_postgres(admin))
    _check(results, ["SQLite", "PostgreSQL"])
