"""Section 2 for real at its smallest: one shape, one batch size, one round of one epoch."""

from __future__ import annotations

import numpy as np
import pytest
from _bench_markdown import is_number, rows

from benchmarks.speed import render_section, run_speed

# A real run of the benchmark on a tiny budget: the slow tier (the renderers are tested on a
# recorded run in test_bench_report.py).
pytestmark = pytest.mark.slow


def test_every_training_setting_of_one_shape() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 500, (256, 2)).astype(np.float64)
    results = run_speed(
        x, x.sum(axis=1), models={"2-1 linear": ()}, batch_sizes=(64,), repeats=1, epochs=1
    )

    # fit at 2 x 2 settings and the sweep's loop in float32, then both in float64
    assert len(results) == 7
    assert all(r.steps_per_second > 0 and r.runs == 1 for r in results)
    section = "\n".join(render_section(results))
    single, double = rows(section, "2-1 linear")
    assert all(is_number(cell) for cell in single[2:8]), single
    assert all(is_number(cell) for cell in double[1:]), double
