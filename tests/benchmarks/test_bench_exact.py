"""Section 8 for real at its smallest: one case, every method, one trial per sweep."""

from __future__ import annotations

import importlib.util

import pytest
from _bench_markdown import is_number, rows

from benchmarks.exact import BANDS, METHODS, render_section, run_exact, target_lines

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("keras_tuner") is None, reason="needs keras-tuner (test extra)"
    ),
]


@pytest.mark.timeout(900)
def test_one_case_through_every_method() -> None:
    result = run_exact(
        ["multiply"], budget=2.0, trials=1, original_epochs=1, keras_tuner_epochs=1,
        seeds=False,
    )

    (case,) = result.cases
    assert [run.method for run in case.runs] == list(METHODS)
    assert all(set(run.hit_rates) == set(BANDS) for run in case.runs)
    section = "\n".join(render_section(result))
    found = rows(section, "multiply on [-500, 500)")
    assert [row[1] for row in found] == list(METHODS)
    assert all(is_number(cell) for row in found[2:] for cell in row[3:7]), found
    assert target_lines(result)[0].startswith("- **Expressions")
