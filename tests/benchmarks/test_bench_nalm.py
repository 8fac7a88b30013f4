"""Section 11: the NALM benchmark's single-layer task, run through our service.

The task and criterion against the benchmark's own code (its sampling, its R threshold
simulation redone in NumPy, the perturbed exact models on its test vectors), the campaign
file, the renderer on a recorded real run (recorded/nalm.json: `run_nalm(1)`, seed 0 on all
nine ranges, saved with `benchmarks.records.dumps`) and on made-up failures and retries; one
tiny real run in the slow tier.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib

import numpy as np
import pytest
from _bench_markdown import RECORDED, is_number, recorded_quick_run, rows

from benchmarks.__main__ import SECTIONS
from benchmarks.nalm import (
    SEEDS,
    CampaignRun,
    NalmResult,
    OperationRun,
    render_section,
    run_nalm,
    target_lines,
)
from benchmarks.nalm_task import (
    EPSILON,
    OPERATIONS,
    RANGES,
    NalmRange,
    campaign_toml,
    nalm_inputs,
    threshold,
    truth,
)
from benchmarks.records import loads
from benchmarks.report import render
from sweep.search.config import config_from_toml

OURS = [o for _, o, _ in OPERATIONS]
BY_NAME = {r.name: r for r in RANGES}


def _recorded() -> NalmResult:
    return loads((RECORDED / "nalm.json").read_text(encoding="utf-8"), NalmResult)


def _simulated(operation: str, nalm_range: NalmRange, epsilon: float = EPSILON) -> float:
    """generate_exp_thresholds.r's `simulate.mse`, 10^6 draws, in NumPy."""
    rng = np.random.default_rng(1234)
    low, high = nalm_range.test[-1]
    x = rng.uniform(low, high, size=(1_000_000, 2))
    if len(nalm_range.test) == 2:  # range.mirror: signs from a fair coin
        x = x * (rng.integers(0, 2, size=x.shape) * 2 - 1)
    a, b = x[:, 0], x[:, 1]
    size = np.abs(a) + np.abs(b)
    perturbed = {
        "add": a + b - size * epsilon, "subtract": a - b - size * epsilon,
        "multiply": (1 - epsilon) ** 2 * a * b, "divide": (1 - epsilon) / (1 + epsilon) * a / b,
    }[operation]
    return float(np.mean((perturbed - truth(operation, x)) ** 2))


def test_the_nine_ranges_are_the_benchmarks() -> None:
    assert [r.name for r in RANGES] == [
        "[-20,-10]", "[-2,-1]", "[-1.2,-1.1]", "[-0.2,-0.1]", "[-2,2]", "[0.1,0.2]", "[1,2]",
        "[1.1,1.2]", "[10,20]",
    ]
    assert BY_NAME["[-2,2]"].test == ((-6, -2), (2, 6))
    assert BY_NAME["[-2,2]"].label == "[-2, 2] → ±[2, 6]"
    assert BY_NAME["[-1.2,-1.1]"].label == "[-1.2, -1.1] → [-6.1, -1.2]"
    assert SEEDS == 25 and EPSILON == 1e-5


@pytest.mark.parametrize("nalm_range", RANGES, ids=lambda r: r.name)
def test_the_test_vectors_are_the_benchmarks_draws(nalm_range: NalmRange) -> None:
    x = nalm_inputs(nalm_range)
    assert x.shape == (10_000, 2) and x.dtype == np.float64
    again = np.random.RandomState(8689336)
    if len(nalm_range.test) == 1:
        np.testing.assert_array_equal(x, again.uniform(*nalm_range.test[0], size=(10_000, 2)))
    else:  # part_0 ([-6, -2]), part_1 ([2, 6]), then the coin: np.where(choose, ...)
        part_0 = again.uniform(-6, -2, size=(10_000, 2))
        part_1 = again.uniform(2, 6, size=(10_000, 2))
        np.testing.assert_array_equal(
            x, np.where(again.randint(2, size=(10_000, 2)), part_0, part_1))
        for column in (0, 1):
            assert 0.47 < np.mean(x[:, column] > 0) < 0.53
        assert 0.2 < np.mean((x[:, 0] > 0) & (x[:, 1] > 0)) < 0.3  # independent elements
    low, high = nalm_range.train
    inside = nalm_inputs(nalm_range, test=False)
    np.testing.assert_array_equal(
        inside, np.random.RandomState(43953907).uniform(low, high, size=(10_000, 2)))


@pytest.mark.parametrize("nalm_range", RANGES, ids=lambda r: r.name)
@pytest.mark.parametrize("operation", OURS)
def test_the_threshold_is_the_r_simulations_expectation(operation: str,
                                                        nalm_range: NalmRange) -> None:
    assert _simulated(operation, nalm_range) == pytest.approx(
        threshold(operation, nalm_range), rel=0.01)


@pytest.mark.parametrize("nalm_range", RANGES, ids=lambda r: r.name)
@pytest.mark.parametrize("operation", OURS)
def test_the_criterion_passes_the_exact_model_and_fails_twice_the_perturbation(
    operation: str, nalm_range: NalmRange
) -> None:
    x = nalm_inputs(nalm_range)
    y = truth(operation, x)
    limit = threshold(operation, nalm_range)
    assert np.mean((y - y) ** 2) < limit
    for epsilon, passes in ((EPSILON / 2, True), (2 * EPSILON, False)):
        a, b = x[:, 0], x[:, 1]
        size = (np.abs(a) + np.abs(b)) * epsilon
        perturbed = {"add": y - size, "subtract": y - size, "multiply": (1 - epsilon) ** 2 * y,
                     "divide": (1 - epsilon) / (1 + epsilon) * y}[operation]
        assert (np.mean((perturbed - y) ** 2) < limit) == passes, epsilon


@pytest.mark.parametrize("nalm_range", RANGES, ids=lambda r: r.name)
def test_the_campaign_file_gives_the_ranges_and_nothing_else(nalm_range: NalmRange) -> None:
    raw = tomllib.loads(campaign_toml(nalm_range))
    assert set(raw) == {"campaign", "inputs"} and set(raw["campaign"]) == {"operations"}
    config = config_from_toml(raw)
    operations = config.resolved_operations()
    assert [o.name for o in operations] == OURS
    for operation in operations:
        assert operation.inputs == ("a", "b")
    for spec in raw["inputs"].values():
        for entry in spec.values():
            assert (entry["low"], entry["high"]) == nalm_range.train
            assert entry["kind"] == "real"
            band = (entry["extrapolation"]["low"], entry["extrapolation"]["high"])
            assert band == ((-6, 6) if nalm_range.name == "[-2,2]" else nalm_range.test[0])


def test_the_recorded_section_has_every_range_and_operation_with_wilson_intervals() -> None:
    result = _recorded()
    assert result.ranges == [r.name for r in RANGES] and len(result.runs) == 36
    section = "\n".join(render_section(result))
    assert section.startswith("## 11. NALM benchmark: the single-layer task")
    assert "ε = 1e-5" in section and "1 of the benchmark's 25 seeds per range" in section
    for nalm_range in RANGES:
        (row,) = rows(section, nalm_range.label)
        assert row[1:] == ["1/1: 100% [21, 100]"] * 4, row
        (cost,) = rows(section, nalm_range.name)
        assert cost[1] == "1" and is_number(cost[2]), cost
    (pooled,) = rows(section, "all ranges")
    assert pooled[1:] == ["9/9: 100% [70, 100]"] * 4
    (divide,) = rows(section, "divide")
    assert "NMRU 91.6%" in divide[2] and is_number(divide[3]) and float(divide[3]) < 1, divide
    assert "No failure" in section and "Load average (1, 5, 15 min)" in section
    line = target_lines(result)[0]
    assert "holds so far (not every seed and range run)**" in line, line
    assert "(1 of 25 seeds, 9 of 9 ranges; add 9/9: 100% [70, 100];" in line, line


def test_a_failure_is_named_with_its_reason_and_the_target_does_not_hold() -> None:
    result = _recorded()
    bad = dataclasses.replace(result.runs[-1], seed=1, extrapolation_mse=3e-3, exact=False,
                              architecture="2-8-1 relu")
    lost = OperationRun("[10,20]", "add", 1, threshold=1.0, error="killed after 3600 s")
    result.runs += [*[dataclasses.replace(r, seed=1) for r in result.runs[-4:-1]], bad]
    section = "\n".join(render_section(dataclasses.replace(result, runs=[*result.runs, lost])))
    assert "- divide on [10,20], seed 1: extrapolation MSE 0.003 ≥ threshold" in section
    assert "not exact; best architecture 2-8-1 relu" in section
    assert "- add on [10,20], seed 1: killed after 3600 s" in section
    (row,) = rows(section, BY_NAME["[10,20]"].label)
    assert row[4] == "1/2: 50% [9, 91]", row
    line = target_lines(result)[0]
    assert ": does not hold yet**" in line and "failing: divide on [10,20]" in line


def test_a_retried_campaign_is_named() -> None:
    result = _recorded()
    result.campaigns[2] = dataclasses.replace(
        result.campaigns[2], retried="ImportError: cannot import name 'X' from 'sweep.cli'")
    section = "\n".join(render_section(result))
    assert ("- Campaign [-1.2,-1.1] seed 0: its `sweep run` crashed (ImportError: cannot import"
            " name 'X' from 'sweep.cli') and was run once more from scratch.") in section
    assert "No failure" in section
    assert CampaignRun("[1,2]", 0).retried == ""


def test_the_whole_report_has_section_11_and_its_target_line() -> None:
    assert "nalm" in SECTIONS
    results = recorded_quick_run()
    assert "## 11. NALM" not in render(results)
    results.nalm = _recorded()
    report = render(results)
    assert "## 11. NALM benchmark" in report
    assert "NALM single-layer task (Mistry et al. 2022)" in report.split("## This run")[0]
    assert loads(results.to_json(), type(results)).nalm == results.nalm


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_one_range_one_seed_for_real() -> None:
    result = run_nalm(1, ranges=["[1,2]"])

    assert result.ranges == ["[1,2]"] and result.seeds_run == 1
    (campaign,) = result.campaigns
    assert campaign.exit_code == 0 and not campaign.error and campaign.wall_seconds > 0
    assert [r.operation for r in result.runs] == OURS
    for run in result.runs:
        assert not run.error and run.trials >= 1 and run.architecture, run
        assert math.isfinite(run.extrapolation_mse) and run.threshold > 0, run
        assert run.success == (run.extrapolation_mse < run.threshold)
    section = "\n".join(render_section(result))
    (row,) = rows(section, "[1, 2] → [2, 6]")
    assert all(cell.split(":")[0] in ("0/1", "1/1") for cell in row[1:]), row
