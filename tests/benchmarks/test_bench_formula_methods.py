"""Section 12: the multi-input formulas through four methods at one budget, and the winners
retrained on ten seeds.

The renderer on the recorded quick run, the campaign each method gets (only what the method
names differs), the stored model spec read back for retraining; one tiny real run in the slow
tier.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from _bench_markdown import is_number, recorded_quick_run, rows

from benchmarks._common import stored_spec
from benchmarks.formula_methods import (
    KERAS_TUNER,
    METHODS,
    MLP_ONLY,
    NO_DESIGNS,
    QUICK_FORMULAS,
    SWEEP,
    MethodRun,
    MethodsCase,
    MethodsResult,
    campaign_for,
    formula_design,
    render_section,
    run_methods,
    target_lines,
)
from benchmarks.formulas import FORMULAS, Formula
from benchmarks.report import render
from sweep.nets import ModelSpec

HEADER = 11  # cells per row of the methods table


def test_the_recorded_section_has_every_method_per_formula_with_numbers() -> None:
    recorded = recorded_quick_run().formula_methods
    assert recorded is not None and [c.name for c in recorded.cases] == list(QUICK_FORMULAS)
    section = "\n".join(render_section(recorded))
    assert section.startswith("## 12. Multi-input formulas: the search against its alternatives")
    for name in QUICK_FORMULAS:
        found = rows(section, name)
        methods = [row[2] for row in found if len(row) == HEADER]
        assert methods == list(METHODS), found
        for row in (r for r in found if len(r) == HEADER):
            assert all(is_number(row[k]) for k in (4, 5, 7, 8, 10)), row
            assert row[6] in ("yes", "no"), row
        seeds = [row for row in found if len(row) == 5]
        assert [row[1] for row in seeds][1:] == ["formula family's design"], seeds
        assert all(row[2].endswith(f"/{recorded.seeds}") for row in seeds), seeds
    assert "- KerasTuner: " in section and "**NAU-paper protocol.**" in section


def test_the_whole_report_has_section_12_and_its_target_line() -> None:
    report = render(recorded_quick_run())
    assert "## 12. Multi-input formulas: the search against its alternatives" in report
    [line] = [x for x in report.splitlines()
              if x.startswith("- **Multi-input formulas against the alternatives")]
    assert "(section 12)" in line and "KerasTuner" in line


@pytest.mark.parametrize("formula", FORMULAS[:3] + FORMULAS[-3:], ids=lambda f: f.name)
def test_each_method_gets_the_same_campaign_but_what_it_names(formula: Formula) -> None:
    configs = {m: campaign_for(formula, m, trials=7, timeout=11.0) for m in METHODS[:-1]}
    ours = configs[SWEEP]
    assert (ours.trials, ours.timeout, ours.startup_designs) == (7, 11.0, True)
    assert configs[NO_DESIGNS] == dataclasses.replace(ours, startup_designs=False)
    assert configs[MLP_ONLY].space.family.choices == ("mlp",)
    assert configs[MLP_ONLY] == dataclasses.replace(ours, space=configs[MLP_ONLY].space)
    assert {"formula", "mlp"} <= set(ours.space.family.choices or ())


def test_the_formula_design_is_the_formula_familys_startup_design() -> None:
    spec = formula_design()
    assert (spec.family, spec.degree, spec.max_terms, spec.functions) == ("formula", 3, 6, True)


def test_a_stored_model_spec_comes_back_as_the_trainer_takes_it() -> None:
    spec = ModelSpec(
        hidden_layers=(4, 3), activation="tanh", input_normalization="log",
        target_normalization="standard", learning_rate=0.01, batch_size=64, loss="mse",
        epochs=40, lr_schedule="none", refit_output=True, family="formula", degree=3,
        max_terms=6, functions=True,
    )
    stored = json.loads(json.dumps({**dataclasses.asdict(spec), "architecture": "4-F6-1",
                                    "structure": "a*b"}))
    assert stored_spec(stored) == spec


def test_the_target_line_counts_exact_methods_and_seeds() -> None:
    exact = MethodRun(SWEEP, hit_rate=1.0, extrapolation_hit_rate=0.995)
    loose = MethodRun(KERAS_TUNER, hit_rate=0.5, extrapolation_hit_rate=0.0)
    assert exact.exact and not loose.exact
    assert not MethodRun(MLP_ONLY).exact  # NaN is never exact
    cases = [MethodsCase("a", "x*y", 2, runs=[exact, loose], seeds=10, successes=10,
                         design_successes=9),
             MethodsCase("b", "x+y", 2, runs=[loose], seeds=10, successes=9,
                         design_successes=10)]
    [line] = target_lines(MethodsResult(cases=cases))
    assert "our sweep 1 of 1 exact" in line and f"{KERAS_TUNER} 0" in line
    assert "the winner for 1 of 2 formulas, the formula family's design for 1" in line
    assert math.isnan(MethodRun(SWEEP).hit_rate)


@pytest.mark.slow
def test_one_formula_through_every_method_for_real() -> None:
    result = run_methods(["gas"], trials=2, timeout=20.0, keras_tuner_epochs=2, seeds=1)
    [case] = result.cases
    assert [r.method for r in case.runs] == list(METHODS)
    assert all(not r.error for r in case.runs), case.runs
    ours = case.run(SWEEP)
    assert ours is not None and ours.exact and ours.architecture == "4-1 linear", ours
    assert case.seeds == 1 and case.successes == 1 and case.design_successes == 1, case
