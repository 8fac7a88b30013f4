"""Section 1 for real at its smallest: one operation, every method, a few seconds each."""

from __future__ import annotations

import importlib.util

import pytest
from _bench_markdown import is_number, rows

from benchmarks.baselines import KERAS_TUNER, ORIGINAL, REPORTED
from benchmarks.quality import SWEEP, render_section, run_quality, target_lines, throughput_lines

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("keras_tuner") is None, reason="needs keras-tuner (test extra)"
    ),
]


@pytest.mark.timeout(600)
def test_one_operation_through_the_three_methods() -> None:
    results = run_quality(("add",), budget=2.0, epochs=1, steps_per_execution=32)

    (add,) = results
    assert [m.method for m in add.methods] == [ORIGINAL, KERAS_TUNER, SWEEP]
    assert all(set(m.metrics) == set(REPORTED) and m.runs >= 1 for m in add.methods)
    assert add.sweep_trials >= 1 and add.best_architecture
    section = "\n".join(render_section(results, 2.0, 32))
    for row in rows(section, "add"):
        if len(row) == 11:  # the metrics table: runs, wall s, then six metrics
            assert all(is_number(cell) for cell in row[2:4]), row
    assert {row[1] for row in rows(section, "add") if len(row) == 11} == {
        ORIGINAL, KERAS_TUNER, SWEEP
    }
    assert "### Trials per minute of a default sweep" in "\n".join(throughput_lines(results))
    assert target_lines(results, 2.0)[0].startswith("- **Our sweep beats")
