"""Section 10: formulas swept from their expression and from a CSV generated from them.

The renderer on the recorded quick run (recorded/quick.json), the formulas themselves (their
NumPy form against the service's own evaluator, the campaign file, the CSV), the agreement
verdicts; and one tiny real run of both sources in the slow tier.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
from _bench_markdown import is_number, recorded_quick_run, rows

from benchmarks.formulas import (
    CSV,
    EXPRESSION,
    FORMULAS,
    QUICK_FORMULAS,
    TARGET,
    Formula,
    FormulaCase,
    FormulasResult,
    SourceRun,
    agreement,
    campaign_toml,
    render_section,
    run_formulas,
    target_lines,
    write_csv,
)
from benchmarks.report import render
from sweep.search.config import config_from_toml

HEADER = 12  # cells per row of the section's table


def test_the_recorded_section_has_both_sources_per_formula_with_numbers() -> None:
    recorded = recorded_quick_run().formulas
    assert recorded is not None and [c.name for c in recorded.cases] == list(QUICK_FORMULAS)
    section = "\n".join(render_section(recorded))
    assert section.startswith("## 10. Formulas from an expression and from a table")
    for name in QUICK_FORMULAS:
        found = rows(section, name)
        assert [row[3] for row in found] == [EXPRESSION, CSV], found
        for row in found:
            assert len(row) == HEADER, row
            # inputs, hit rates, median error, trials, wall seconds
            assert all(is_number(row[k]) for k in (2, 4, 5, 7, 8, 9)), row
            assert row[6] in ("yes", "no") and row[10] not in ("", "—"), row
    assert "formulas agree:**" in section
    assert "Load average (1, 5, 15 min) at the start of each formula: gas:" in section


def test_the_whole_report_has_section_10_and_its_target_line() -> None:
    report = render(recorded_quick_run())
    assert "## 10. Formulas from an expression and from a table" in report
    targets = report.split("## This run")[0]
    assert "formulas of 3-9 real inputs give the same verdict" in targets


def _run(source: str, hit: float, band: float, error: float) -> SourceRun:
    return SourceRun(source, hit_rate=hit, extrapolation_hit_rate=band,
                     median_relative_error=error, trials=3, wall_seconds=9.0)


@pytest.mark.parametrize(
    ("expression", "table", "verdict"),
    [
        ((1.0, 1.0, 1e-15), (1.0, 1.0, 3e-15), "both exact"),
        ((0.2, 0.0, 1e-3), (0.1, 0.3, 5e-3), "both inexact, similar error"),
        ((0.2, 0.0, 1e-3), (0.0, 0.0, 2e-1), "both inexact, errors differ"),
        ((1.0, 1.0, 1e-15), (1.0, 0.9, 1e-15), "only the expression exact"),
        ((1.0, 0.5, 1e-7), (1.0, 1.0, 1e-9), "only the CSV exact"),
    ],
)
def test_agreement(expression: tuple[float, float, float], table: tuple[float, float, float],
                   verdict: str) -> None:
    case = FormulaCase("f", "a*b*c", {"a": (0, 1), "b": (0, 1), "c": (0, 1)}, 100,
                       [_run(EXPRESSION, *expression), _run(CSV, *table)])
    assert agreement(case) == verdict
    holds = verdict in ("both exact", "both inexact, similar error")
    result_lines = target_lines(_result(case))
    assert (": holds**" in result_lines[0]) == holds, result_lines


def test_a_failed_run_is_shown_and_never_agrees() -> None:
    failed = SourceRun(CSV, exit_code=2, error="table 'f': row 3, column b: not a number")
    case = FormulaCase("f", "a*b*c", {"a": (0, 1), "b": (0, 1), "c": (0, 1)}, 100,
                       [_run(EXPRESSION, 1.0, 1.0, 0.0), failed])
    assert agreement(case) == "not measured"
    section = "\n".join(render_section(_result(case)))
    (_, row) = rows(section, "f")
    assert row[6] == "failed" and "row 3, column b" in row[10], row


def _result(case: FormulaCase) -> FormulasResult:
    return FormulasResult(cases=[case], trials=3, timeout=5.0, rows=100)


def test_at_least_20_formulas_of_3_to_9_inputs_of_every_kind() -> None:
    assert len(FORMULAS) >= 20
    assert len({f.name for f in FORMULAS}) == len(FORMULAS)
    assert all(3 <= len(f.bounds) <= 9 for f in FORMULAS)
    assert any(len(f.bounds) >= 7 for f in FORMULAS)
    text = " ".join(f.expression for f in FORMULAS)
    for piece in ("sqrt(", "sin(", "cos(", "exp(", "log(", "/(", "**"):
        assert piece in text, piece
    assert all(TARGET not in f.bounds for f in FORMULAS)


@pytest.mark.parametrize("formula", FORMULAS, ids=lambda f: f.name)
def test_the_numpy_formula_is_the_services_expression_in_range_and_band(
    formula: Formula, tmp_path: Path
) -> None:
    config = config_from_toml(tomllib.loads(campaign_toml(formula, rows=300)))
    (operation,) = config.resolved_operations()
    assert operation.inputs == tuple(formula.bounds)
    assert config.data.examples == 300
    path = tmp_path / f"{formula.name}.csv"
    write_csv(formula, path, rows=300)
    assert path.read_text().splitlines()[0] == ",".join([*formula.bounds, TARGET])
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    assert data.shape == (300, len(formula.bounds) + 1)
    for k, (low, high) in enumerate(formula.bounds.values()):
        assert low <= data[:, k].min() and data[:, k].max() < high
    np.testing.assert_allclose(operation.compute_rows(data[:, :-1]), data[:, -1], rtol=1e-14)
    # The extrapolation band [high, 2 high - low) is inside the formula's domain too.
    rng = np.random.default_rng(0)
    band = {n: rng.uniform(high, 2 * high - low, 200)
            for n, (low, high) in formula.bounds.items()}
    assert np.all(operation.valid_rows(np.column_stack(list(band.values()))))
    np.testing.assert_allclose(
        operation.compute_rows(np.column_stack(list(band.values()))), formula.compute(band),
        rtol=1e-14,
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_one_formula_from_both_sources_for_real() -> None:
    result = run_formulas(["box"], trials=1, timeout=20.0, rows=400)

    (case,) = result.cases
    assert [run.source for run in case.runs] == [EXPRESSION, CSV]
    for run in case.runs:
        assert run.exit_code == 0 and not run.error, run
        assert run.trials == 1 and run.inputs == ["l", "w", "h"], run
        assert run.integer_valued is False and run.architecture, run
        assert 0 <= run.hit_rate <= 1 and not math.isnan(run.extrapolation_hit_rate), run
        assert run.wall_seconds > 0
    section = "\n".join(render_section(result))
    found = rows(section, "box")
    assert [row[3] for row in found] == [EXPRESSION, CSV]
    assert all(is_number(row[k]) for row in found for k in (4, 5, 8, 9)), found
