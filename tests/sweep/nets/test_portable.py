"""The exports' TensorFlow-free side: the generic probe and the comparison of answers."""

from __future__ import annotations

import numpy as np
import pytest

from sweep.errors import ExportError
from sweep.nets.portable import TOLERANCE, check_answers, compare_answers, default_probe


@pytest.mark.parametrize("arity", range(1, 11))
def test_the_default_probe_stays_small_for_every_arity(arity: int) -> None:
    x = default_probe(arity)
    assert x.dtype == np.float64 and x.shape[1] == arity
    assert len(x) <= 1331 + 128 + 11 * arity + 1024  # never 11 ** arity rows
    assert np.isfinite(x).all()
    assert (x == 0).all(axis=1).any()  # the zeros
    for k in range(arity):  # every input alone at every small value
        alone = x[(np.delete(x, k, axis=1) == 0).all(axis=1), k]
        assert set(range(-5, 6)) <= set(alone.tolist())


def test_the_default_probe_of_up_to_three_inputs_is_every_small_combination() -> None:
    x = default_probe(2)
    grid = {tuple(row) for row in x[:121].tolist()}
    assert grid == {(a, b) for a in range(-5, 6) for b in range(-5, 6)}
    assert len(default_probe(3)) == 1331 + 128
    assert np.array_equal(default_probe(4), default_probe(4))  # deterministic


def test_rounded_answers_are_compared_only_for_integer_valued_operations() -> None:
    reference = np.array([2.4999, 7.0, 1e6])
    candidate = reference * (1 + 5e-12)
    real = compare_answers(reference, candidate, integer_valued=False)
    assert real.integer_mismatches == 0 and real.beyond_tolerance == 0
    assert "3/3 rows differ" in real.describe()
    flipped = compare_answers([2.49], [2.51], integer_valued=True)
    assert flipped.integer_mismatches == 0  # too close to the .5 tie to judge
    wrong = compare_answers([3.0], [4.0], integer_valued=True)
    assert wrong.integer_mismatches == 1 and wrong.beyond_tolerance == 1
    assert compare_answers([1.0], [1.0], integer_valued=True).describe() == (
        "bit for bit on 1 rows"
    )


def test_a_difference_within_the_models_own_rounding_is_not_beyond_tolerance() -> None:
    reference = np.array([656.678972838, 1.0, np.nan])
    candidate = np.array([656.678972856, 1.0 + 1e-9, np.nan])  # 2.8e-11 and 1e-9 relative
    plain = compare_answers(reference, candidate, integer_valued=False)
    assert plain.beyond_tolerance == 2 and plain.max_relative_error > TOLERANCE
    with pytest.raises(ExportError, match="does not reproduce"):
        check_answers(reference, candidate, integer_valued=False, label="x")
    rounding = np.array([1e-7, 1e-12, 0.0])  # the second row's difference exceeds its bound
    bounded = compare_answers(reference, candidate, integer_valued=False, rounding=rounding)
    assert bounded.beyond_tolerance == 1
    rounding[1] = 1e-8
    comparison = check_answers(
        reference, candidate, integer_valued=False, label="x", rounding=rounding
    )
    assert comparison.beyond_tolerance == 0
    assert "within the model's own float64 rounding" in comparison.describe()
    # A non-finite answer is never within rounding.
    with pytest.raises(ExportError):
        check_answers([1.0], [np.inf], integer_valued=False, label="x", rounding=[np.inf])
