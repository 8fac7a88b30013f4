from __future__ import annotations

import math

import numpy as np
import pytest

from sweep.problem.metrics import evaluate, hits, relative_errors


def test_relative_error_falls_back_to_absolute_at_zero_truth() -> None:
    out = relative_errors(np.array([0.5, 110.0]), np.array([0.0, 100.0]))
    np.testing.assert_allclose(out, [0.5, 0.1])


def test_integer_hits_round_the_prediction() -> None:
    truth = np.array([10.0, 10.0, 10.0, 0.0])
    assert hits(np.array([10.49, 9.51, 10.5001, -0.4]), truth, True).tolist() == [
        True, True, False, True,
    ]


def test_real_hits_use_relative_tolerance() -> None:
    truth = np.array([2.0, 2.0, 0.0])
    assert hits(np.array([2.0 + 1e-6, 2.0 + 1e-5, 1e-7]), truth, False).tolist() == [
        True, False, True,
    ]


def test_evaluate_reports_every_measure() -> None:
    m = evaluate(np.array([1.0, 2.0, 4.0]), np.array([1.0, 2.0, 3.0]), integer_valued=True)
    assert m.mae == pytest.approx(1 / 3)
    assert m.median_relative_error == 0.0
    assert m.max_absolute_error == 1.0
    assert m.hit_rate == pytest.approx(2 / 3)
    assert m.count == 3
    assert set(m.as_dict("val_")) == {
        "val_mae", "val_median_relative_error", "val_max_absolute_error", "val_hit_rate",
        "val_count",
    }


def test_non_finite_predictions_are_misses_with_infinite_error() -> None:
    m = evaluate(np.array([np.nan, 1.0]), np.array([1.0, 1.0]), integer_valued=True)
    assert math.isinf(m.mae)
    assert m.hit_rate == 0.5


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="differ"):
        evaluate(np.zeros(2), np.zeros(3), integer_valued=True)


def test_exact_means_hit_rate_one_on_every_split() -> None:
    from sweep.problem.metrics import is_exact

    exact = {"val_hit_rate": 1.0, "test_hit_rate": 1.0, "extrapolation_hit_rate": 1}
    assert is_exact(exact)
    for key in exact:
        assert not is_exact({**exact, key: 0.9995}), key  # one miss anywhere is not exact
        assert not is_exact({k: v for k, v in exact.items() if k != key}), key  # an old entry
    # A diverged trial stores None; a hostile registry row may hold anything.
    for odd in (None, True, "1.0", math.nan, [1.0]):
        assert not is_exact({**exact, "test_hit_rate": odd}), odd
