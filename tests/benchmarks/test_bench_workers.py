"""Section 4 for real at its smallest: a seed sweep, then `sweep run` with 1 and 2 workers on a
prefilled study, one measured trial each."""

from __future__ import annotations

import pytest
from _bench_markdown import is_number, rows
from _servers import admin_url, require_server

from benchmarks._common import temporary_postgres
from benchmarks.prefill import SeedSweep
from benchmarks.workers import render_section, run_workers, target_lines

pytestmark = [pytest.mark.slow, pytest.mark.server]


@pytest.mark.timeout(600)
def test_one_and_two_workers_on_a_prefilled_study() -> None:
    require_server("postgresql")
    admin = admin_url("postgresql")
    seeds: list[SeedSweep] = []
    runs = run_workers(
        lambda: temporary_postgres(admin), sizes=(3,), new_trials=1, seed_trials=2, epochs=1,
        repeats=1, on_seed=seeds.append,
    )

    (seed,) = seeds
    assert seed.trials and seed.process_seconds > 0
    assert sorted(run.workers for run in runs) == [1, 2]
    assert all(run.study_size == 3 and run.counted_trials == 1 for run in runs), runs
    section = "\n".join(render_section(runs, seed, "Campaign: add."))
    measured = [row for row in rows(section, "3") if len(row) == 15]
    assert sorted(row[1] for row in measured) == ["1", "2"], measured
    assert all(is_number(row[7]) for row in measured), measured
    assert "Two workers give" in "\n".join(target_lines(runs))
