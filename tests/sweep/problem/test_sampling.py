"""Named inputs, real ranges and their data: drawn per input, held out, banded, decided."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sweep.errors import ConfigError
from sweep.problem.data import DataSpec, make_dataset
from sweep.problem.inputs import InputRange, parse_input_ranges
from sweep.problem.operations import BUILTIN_OPERATIONS, Operation, make_operation
from sweep.problem.sampling import decide_integer_valued, uses_original_generator

SPEC = DataSpec(examples=2000, test_examples=200, extrapolation_examples=300)


def _ranged(operation: Operation, **ranges: tuple[float, float, str]) -> Operation:
    given = tuple(
        InputRange(name, *ranges[name]) if name in ranges
        else InputRange(name, SPEC.low, SPEC.high, "integer", legacy=True)
        for name in operation.inputs
    )
    resolved = replace(operation, ranges=given)
    return replace(
        resolved, integer_valued=decide_integer_valued(resolved, SPEC.low, SPEC.high)
    )


def test_a_four_input_formula_is_drawn_per_input_and_banded_beyond_each_range() -> None:
    gas = _ranged(
        make_operation("gas", "n*R*T/V"),
        n=(1, 5, "real"), R=(8, 9, "real"), T=(250, 350, "real"), V=(1, 10, "real"),
    )
    assert gas.inputs == ("n", "R", "T", "V") and not gas.integer_valued
    data = make_dataset(gas, SPEC)
    assert data.x_train.dtype == np.float64 and data.x_train.shape[1] == 4
    for x in (data.x_train, data.x_val, data.x_test):
        assert (x.min(axis=0) >= [1, 8, 250, 1]).all() and (x.max(axis=0) < [5, 9, 350, 10]).all()
    band = data.x_extrapolation
    assert (band.min(axis=0) >= [5, 9, 350, 10]).all()
    assert (band.max(axis=0) < [9, 10, 450, 19]).all()
    np.testing.assert_allclose(
        data.y_test, data.x_test[:, 0] * data.x_test[:, 1] * data.x_test[:, 2] / data.x_test[:, 3]
    )
    assert [b.name for b in data.bounds] == ["n", "R", "T", "V"]
    assert (data.bounds[2].band_low, data.bounds[2].band_high) == (350, 450)
    # Reproducible from the seed, different for another seed.
    assert make_dataset(gas, SPEC).fingerprint == data.fingerprint
    assert make_dataset(gas, replace(SPEC, seed=1)).fingerprint != data.fingerprint


def test_an_explicit_extrapolation_band_is_used() -> None:
    op = make_operation("scaled", "x*y")
    ranges = (InputRange("x", 1, 2, "real", (-3, -2)), InputRange("y", 0, 10, "integer"))
    data = make_dataset(replace(op, ranges=ranges), SPEC)
    assert (data.x_extrapolation[:, 0] >= -3).all() and (data.x_extrapolation[:, 0] < -2).all()
    assert (data.x_extrapolation[:, 1] >= 10).all() and (data.x_extrapolation[:, 1] < 20).all()
    assert (data.x_extrapolation[:, 1] == np.round(data.x_extrapolation[:, 1])).all()


def test_test_inputs_never_appear_in_training_on_a_small_integer_domain() -> None:
    op = _ranged(make_operation("m3", "a*b*c"), a=(0, 6, "integer"), b=(0, 6, "integer"),
                 c=(0, 6, "integer"))
    data = make_dataset(op, SPEC)
    seen = {tuple(row) for row in data.x_train} | {tuple(row) for row in data.x_val}
    assert not seen & {tuple(row) for row in data.x_test}
    assert len(data.x_test) <= 21  # at most 10% of the 216 inputs


def test_undefined_points_are_dropped_from_every_split() -> None:
    op = _ranged(make_operation("lg", "log(x - y)"), x=(0, 2, "real"), y=(0, 2, "real"))
    data = make_dataset(op, SPEC)
    for x in (data.x_train, data.x_val, data.x_test, data.x_extrapolation):
        assert (x[:, 0] > x[:, 1]).all()


def test_a_range_with_no_defined_point_is_one_line() -> None:
    op = _ranged(make_operation("rt", "sqrt(x)"), x=(-5, -1, "real"))
    with pytest.raises(ConfigError, match=r"no valid input with x in \[-5, -1\) \(real\)"):
        make_dataset(op, SPEC)


@pytest.mark.parametrize(
    ("expression", "ranges", "integer"),
    [
        ("a+b", {}, True),
        ("a+b", {"a": (0, 1, "real")}, False),
        ("a/b", {}, False),
        ("(a*(a+1))/2", {}, True),  # the data decide: always whole, though the syntax divides
        ("a//b + a%b", {}, True),
        ("sqrt(a)", {}, False),
        ("x*y*z", {"x": (0, 9, "integer"), "y": (0, 9, "integer"), "z": (0, 9, "integer")}, True),
    ],
)
def test_integer_valued_is_decided_from_the_data(
    expression: str, ranges: dict[str, tuple[float, float, str]], integer: bool
) -> None:
    assert _ranged(make_operation("op", expression), **ranges).integer_valued is integer


def test_builtins_over_their_default_range_keep_the_original_generator() -> None:
    for operation in BUILTIN_OPERATIONS.values():
        assert uses_original_generator(operation)
        assert make_dataset(operation, SPEC).x_train.dtype == np.int64


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"gas": {"n": {"low": 1}}}, "inputs.gas.n needs high"),
        ({"gas": {"n": {"low": 5, "high": 1}}}, "low must be less than high"),
        ({"gas": {"n": {"low": 0.5, "high": 2}}}, "integer input needs whole bounds"),
        ({"gas": {"n": {"low": 0, "high": 2, "kind": "complex"}}}, "kind 'complex'"),
        ({"gas": {"n": {"low": 0, "high": 2, "size": 3}}}, "unknown key inputs.gas.n.size"),
        ({"gas": {"n": {"low": 0, "high": float("inf"), "kind": "real"}}}, "finite numbers"),
        ({"gas": {"n": {"low": 0, "high": 1, "kind": "real", "extrapolation": [1, 2]}}},
         "extrapolation must be"),
        ({"gas": {"n": 3}}, "inputs.gas.n must be a table"),
        ({"gas": 3}, "inputs.gas must be a table of inputs"),
    ],
)
def test_bad_ranges_are_one_line_naming_the_value(raw: object, named: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        parse_input_ranges(raw, "inputs")
    message = str(excinfo.value)
    assert named in message and "\n" not in message


def test_ranges_round_trip_through_their_stored_form() -> None:
    parsed = parse_input_ranges(
        {"gas": {"n": {"low": 1, "high": 5, "kind": "real",
                       "extrapolation": {"low": 5, "high": 7}}, "k": {"low": 0, "high": 3}}},
        "inputs",
    )
    stored = {op: {n: r.to_dict() for n, r in table.items()} for op, table in parsed.items()}
    assert stored["gas"]["k"] == {"low": 0, "high": 3, "kind": "integer"}
    assert parse_input_ranges(stored, "inputs") == parsed
