"""Section 14: packed MLP trials.

The measurement is only worth reading if a packed model trains as it would alone: each of K
packed models against the sweep's own `train` from the same seed (so the same initial weights
and shuffles). Then the estimate on made-up figures, the renderer on the recorded quick run,
and (slow tier) one tiny real run.
"""

from __future__ import annotations

import numpy as np
import pytest
from _bench_markdown import is_number, number, recorded_quick_run, rows

from benchmarks.packing import (
    PackingResult,
    PackRun,
    ShapeSweep,
    SweepTrial,
    Timing,
    estimate_gain,
    pack_specs,
    run_packing,
    speedup,
)
from benchmarks.packing_report import render_section, target_lines
from benchmarks.report import render

TRAINING_CELLS = 10  # cells per row of the packed-training table
SWEEP_CELLS = 16


@pytest.mark.slow  # real training, twice per model: seconds, not the inner loop's milliseconds
@pytest.mark.parametrize("operation", ["add", "multiply"])
def test_each_packed_model_trains_as_the_sweep_trains_it_alone(operation: str) -> None:
    from benchmarks.packed_training import PackedMLP, keras_weights
    from sweep.nets.training import train
    from sweep.problem.data import DataSpec, make_dataset
    from sweep.problem.operations import resolve_operations

    data = make_dataset(resolve_operations((operation,), {})[0], DataSpec(examples=2500))
    specs = pack_specs((16, 16), 4, 2, operation)  # four rates, losses, normalisations
    assert len({(s.loss, s.learning_rate, s.target_normalization) for s in specs}) == 4
    seeds = [11, 12, 13, 14]
    packed = PackedMLP(specs, seeds, data.x_train, data.y_train, data.x_val,
                       keras_weights(specs, seeds, data.x_train, data.y_train))
    for _ in range(specs[0].epochs):
        losses, predictions = packed.run_epoch()
    stacked = packed.weights()
    for k, (spec, seed) in enumerate(zip(specs, seeds, strict=True)):
        alone = train(spec, data.x_train, data.y_train, data.x_val, data.y_val, seed=seed)
        for own, packed_weight in zip(alone.model.get_weights(), stacked, strict=True):
            np.testing.assert_allclose(packed_weight[k], own, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(predictions[k], alone.predict(data.x_val), rtol=1e-10)
    assert np.all(np.isfinite(losses))


def _timing(models: int, seconds_per_model: float) -> Timing:
    """`models` models of 6 epochs: 1 s of set-up per model, the rest in equal epochs."""
    return Timing(models, 6, models * seconds_per_model, models * (seconds_per_model - 1) / 6)


def _made_up() -> PackingResult:
    result = PackingResult(epochs=6, repeats=1, shapes=["2-16-16-1 tanh"], packs=[1, 4, 16],
                           operations=["add"], sweep_timeout=60, sweep_seeds=1)
    for pack, packed_seconds in ((1, 2.0), (4, 2.0), (16, 4.0)):
        result.runs.append(PackRun("add", "2-16-16-1 tanh", pack, 1, _timing(pack, 2.0),
                                   Timing(pack, 6, packed_seconds, (packed_seconds - 1) / 6)))
    return result


def test_the_speedup_is_interpolated_in_log_k_and_held_beyond_the_largest_pack() -> None:
    result = _made_up()
    assert speedup(result, "add", 1, 6) == 1.0  # a lone trial trains as today
    assert speedup(result, "add", 4, 6) == pytest.approx(4.0)
    assert speedup(result, "add", 16, 6) == pytest.approx(8.0)
    assert speedup(result, "add", 8, 6) == pytest.approx(6.0)  # halfway in log K
    assert speedup(result, "add", 64, 6) == pytest.approx(8.0)
    assert result.ratio("add", "2-16-16-1 tanh", 16) == pytest.approx(8.0)


def test_the_gain_divides_only_the_grouped_trials_training_time() -> None:
    sweep = ShapeSweep("add", 0, 60, span_seconds=60.0, best_value=0.0)
    # Four trials of one shape (10 s of training each), two of others (5 s each).
    sweep.trials = [SweepTrial(n, "COMPLETE", "16-16 tanh b64 float64 e6", 10.0, 6)
                    for n in range(4)]
    sweep.trials += [SweepTrial(4, "PRUNED", "8 relu b32 float64 e6", 5.0, 6),
                     SweepTrial(5, "COMPLETE", "linear linear b64 float64 e6", 5.0, 6)]
    result = _made_up()
    # 40 s of the group trains in 10 s at 4x: 60 s become 30 s.
    assert estimate_gain(result, sweep) == pytest.approx(2.0)
    # Everything in packs of 16 (8x): 50 s of training become 6.25 s.
    assert estimate_gain(result, sweep, 16) == pytest.approx(60 / 16.25)
    assert sweep.training_share == pytest.approx(50 / 60)


def test_the_recorded_section_has_its_ratios_sweeps_and_verdict() -> None:
    recorded = recorded_quick_run().packing
    assert recorded is not None and recorded.operations == ["add"]
    section = "\n".join(render_section(recorded))
    assert section.startswith("## 14. Packed MLP trials: K same-shape models trained as one")
    found = rows(section, "add")
    training = [row for row in found if len(row) == TRAINING_CELLS]
    assert [row[2] for row in training] == ["1", "4"]
    for row in training:
        assert all(is_number(cell) for cell in row[3:]), row
        assert number(row[5]) == pytest.approx(number(row[4]) / number(row[3]), rel=0.05)
    (sweep,) = [row for row in found if len(row) == SWEEP_CELLS]
    assert int(sweep[2]) > 0 and int(sweep[4]) > 0 and is_number(sweep[9]), sweep
    assert "**Verdict: left out.**" in section or "**Verdict: kept.**" in section


def test_the_whole_report_has_section_14_and_its_target_line() -> None:
    report = render(recorded_quick_run())
    assert "## 14. Packed MLP trials" in report
    (line,) = [ln for ln in report.splitlines() if ln.startswith("- **Packed MLP trials")]
    assert "at least 3x the trials per minute" in line and "section 14" in line
    assert "| packing |" in report  # its load in the run's table
    assert target_lines(None) == [] and render_section(None) == []


@pytest.mark.slow
def test_a_tiny_real_run() -> None:
    from benchmarks._common import training_runtime

    training_runtime()
    result = run_packing(PackingResult(
        epochs=2, repeats=1, shapes=["2-16-16-1 tanh"], packs=[1, 2], operations=["add"],
        sweep_timeout=4.0, sweep_seeds=1,
    ))
    assert [run.pack for run in result.runs] == [1, 2]
    for run in result.runs:
        assert run.packed.total_seconds > 0 and run.sequential.epoch_seconds > 0
    (sweep,) = result.sweeps
    assert sweep.error == "" and sweep.counted and sweep.span_seconds > 0
    assert all(t.shape.endswith("e30") for t in sweep.trials)  # the default epoch cap
    assert render_section(result) and target_lines(result)
