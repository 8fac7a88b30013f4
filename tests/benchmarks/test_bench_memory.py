"""Section 5 for real at its smallest: each optimizer's process trains two models."""

from __future__ import annotations

import pytest
from _bench_markdown import is_number, rows

from benchmarks.memory import OPTIMIZERS, render_section, run_memory

# A real run of the benchmark on a tiny budget: the slow tier (the renderers are tested on a
# recorded run in test_bench_report.py).
pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_each_optimizer_in_a_process_of_its_own() -> None:
    runs = run_memory(models=2, warmup=1, repeats=1)

    assert [run.optimizer for run in runs] == list(OPTIMIZERS)
    assert all(run.rss_end_mib > 0 and run.seconds_per_model > 0 for run in runs), runs
    section = "\n".join(render_section(runs))
    for optimizer in OPTIMIZERS:
        (row,) = rows(section, optimizer)
        assert all(is_number(cell) for cell in row[1:5]), row
    assert "Medians: " in section
