from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from sweep.errors import ConfigError
from sweep.problem.data import Dataset, DataSpec, create_data, extrapolation_band, make_dataset
from sweep.problem.operations import BUILTIN_OPERATIONS, Operation, make_operation

ADD = BUILTIN_OPERATIONS["add"]
MULTIPLY = BUILTIN_OPERATIONS["multiply"]
DIVIDE = BUILTIN_OPERATIONS["divide"]
SQUARE = BUILTIN_OPERATIONS["square"]
SQRT = BUILTIN_OPERATIONS["sqrt"]

SPLITS = ("train", "val", "test", "extrapolation")


def _rows(x: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in row) for row in x}


def _arrays(dataset: Dataset) -> list[np.ndarray]:
    return [getattr(dataset, f"{kind}_{split}") for split in SPLITS for kind in ("x", "y")]


def _inputs(operation: Operation, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    return x[:, 0], x[:, 1] if operation.arity == 2 else None


# --------------------------------------------------------------------------------------------
# The original generator


def test_create_data_is_the_questions_generator() -> None:
    x = create_data(0, 500, 10_000, np.random.default_rng(7), 2)
    assert x.shape == (10_000, 2) and x.dtype == np.int64
    assert x.min() >= 0 and x.max() < 500
    # Column a is drawn in full first, then column b, exactly as the question's code did.
    rng = np.random.default_rng(7)
    a = rng.integers(0, 500, size=10_000)
    b = rng.integers(0, 500, size=10_000)
    np.testing.assert_array_equal(x, np.column_stack([a, b]))
    # Both ends of the range occur, the upper bound never does.
    assert {0, 499} <= set(x[:, 0].tolist()) and 500 not in x


def test_create_data_for_one_input_and_negative_ranges() -> None:
    x = create_data(-20, -10, 300, np.random.default_rng(1), 1)
    assert x.shape == (300, 1) and x.dtype == np.int64
    assert x.min() >= -20 and x.max() < -10


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ((5, 5, 10, 2), "low must be less than high"),
        ((0, 5, -1, 2), "examples"),
        ((0, 5, 10, 3), "arity"),
    ],
)
def test_create_data_refuses_bad_arguments(args: tuple[int, int, int, int], named: str) -> None:
    low, high, examples, arity = args
    with pytest.raises(ConfigError, match=named):
        create_data(low, high, examples, np.random.default_rng(0), arity)


# --------------------------------------------------------------------------------------------
# DataSpec


def test_data_spec_defaults_round_trip_through_json() -> None:
    spec = DataSpec()
    assert spec.to_dict() == {
        "low": 0,
        "high": 500,
        "examples": 10_000,
        "seed": 0,
        "validation_fraction": 0.2,
        "test_examples": 2_000,
        "extrapolation_examples": 2_000,
    }
    assert DataSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert DataSpec.from_dict({"high": 50}) == DataSpec(high=50)


def test_data_spec_stores_numpy_numbers_as_python_numbers() -> None:
    spec = DataSpec(high=np.int64(50), validation_fraction=np.float32(0.25))  # type: ignore[arg-type]
    assert type(spec.high) is int and type(spec.validation_fraction) is float
    json.dumps(spec.to_dict())


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"low": 5, "high": 5}, "low must be less than high"),
        ({"low": 10, "high": 0}, "low must be less than high"),
        ({"examples": 9}, "examples must be at least 10"),
        ({"validation_fraction": 0}, "validation_fraction"),
        ({"validation_fraction": 0.6}, "validation_fraction"),
        ({"validation_fraction": -0.1}, "validation_fraction"),
        ({"validation_fraction": "0.2"}, "validation_fraction"),
        ({"test_examples": 0}, "test_examples must be at least 1"),
        ({"extrapolation_examples": -1}, "extrapolation_examples must be at least 1"),
        ({"examples": 10.5}, "examples must be a whole number"),
        ({"low": 1.0}, "low must be a whole number"),
        ({"high": True}, "high must be a whole number"),
        ({"seed": -1}, "seed"),
        ({"high": 10**10}, "high=10000000000 is too large"),
        ({"examples": 10**9}, "examples=1000000000 is too large"),
    ],
)
def test_data_spec_refuses_bad_values(changes: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        DataSpec(**changes)
    message = str(excinfo.value)
    assert named in message and "\n" not in message


def test_data_spec_from_dict_refuses_unknown_settings() -> None:
    with pytest.raises(ConfigError, match="unknown data setting 'exmaples'; allowed: low, high"):
        DataSpec.from_dict({"exmaples": 100})


def test_validation_fraction_of_one_half_is_allowed() -> None:
    DataSpec(validation_fraction=0.5).validate()


# --------------------------------------------------------------------------------------------
# make_dataset: reproducibility


def test_same_seed_gives_identical_data() -> None:
    first = make_dataset(MULTIPLY, DataSpec(seed=3))
    second = make_dataset(MULTIPLY, DataSpec(seed=3))
    for left, right in zip(_arrays(first), _arrays(second), strict=True):
        np.testing.assert_array_equal(left, right)
    assert first.fingerprint == second.fingerprint
    assert len(first.fingerprint) == 64 and int(first.fingerprint, 16) >= 0


def test_different_seed_gives_different_data() -> None:
    first = make_dataset(MULTIPLY, DataSpec(seed=3))
    second = make_dataset(MULTIPLY, DataSpec(seed=4))
    assert first.fingerprint != second.fingerprint
    for split in SPLITS:
        assert not np.array_equal(getattr(first, f"x_{split}"), getattr(second, f"x_{split}"))


def test_operation_name_changes_the_draws() -> None:
    # Same function, same seed, different name: different (but reproducible) draws.
    plus = make_operation("plus", "a+b")
    assert not np.array_equal(
        make_dataset(ADD, DataSpec()).x_train, make_dataset(plus, DataSpec()).x_train
    )
    np.testing.assert_array_equal(
        make_dataset(plus, DataSpec()).x_train, make_dataset(plus, DataSpec()).x_train
    )


def test_fingerprint_covers_every_array() -> None:
    dataset = make_dataset(ADD, DataSpec(examples=100, test_examples=10))
    arrays = {name: getattr(dataset, name) for name in ("x_train", "y_train", "x_val", "y_val")}
    arrays.update(
        {name: getattr(dataset, name) for name in ("x_test", "y_test", "x_extrapolation")}
    )
    changed_y = dataset.y_extrapolation.copy()
    changed_y[0] += 1
    rebuilt = Dataset(
        **arrays, y_extrapolation=changed_y, operation=dataset.operation, spec=dataset.spec
    )
    assert rebuilt.fingerprint != dataset.fingerprint


def test_dataset_arrays_are_read_only() -> None:
    dataset = make_dataset(ADD, DataSpec(examples=100, test_examples=10))
    for array in _arrays(dataset):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0


# --------------------------------------------------------------------------------------------
# make_dataset: contents


@pytest.mark.parametrize(
    "operation", list(BUILTIN_OPERATIONS.values()), ids=list(BUILTIN_OPERATIONS)
)
def test_shapes_dtypes_ranges_and_targets(operation: Operation) -> None:
    spec = DataSpec()
    dataset = make_dataset(operation, spec)
    assert dataset.arity == operation.arity
    for split in SPLITS:
        x = getattr(dataset, f"x_{split}")
        y = getattr(dataset, f"y_{split}")
        assert x.dtype == np.int64 and x.ndim == 2 and x.shape[1] == operation.arity
        assert y.dtype == np.float64 and y.shape == (len(x),)
        assert len(x) > 0
        assert np.isfinite(y).all()
        assert operation.valid(*_inputs(operation, x)).all()
        np.testing.assert_array_equal(y, operation.compute(*_inputs(operation, x)))
    for split in ("train", "val", "test"):
        x = getattr(dataset, f"x_{split}")
        assert x.min() >= spec.low and x.max() < spec.high
    assert dataset.x_extrapolation.min() >= 500 and dataset.x_extrapolation.max() < 1000
    assert len(dataset.x_extrapolation) == spec.extrapolation_examples


def test_training_examples_are_the_draws_minus_held_out_inputs() -> None:
    dataset = make_dataset(MULTIPLY, DataSpec())
    kept = len(dataset.x_train) + len(dataset.x_val)
    # 2000 of the 250000 pairs are held out, so about 0.8% of the 10000 draws are dropped.
    assert 9_800 <= kept < 10_000
    assert len(dataset.x_val) == round(0.2 * kept)
    assert len(dataset.x_test) == 2_000


@pytest.mark.parametrize(
    ("operation", "spec"),
    [
        (MULTIPLY, DataSpec()),
        (SQUARE, DataSpec()),
        (SQRT, DataSpec(low=-100, high=400)),
        (ADD, DataSpec(low=0, high=5, examples=200)),
        (MULTIPLY, DataSpec(low=-1_000_000, high=1_000_000, examples=5_000)),
        (make_operation("neg", "-b"), DataSpec(low=0, high=30)),
    ],
)
def test_no_test_input_occurs_in_training_or_validation(
    operation: Operation, spec: DataSpec
) -> None:
    dataset = make_dataset(operation, spec)
    test_rows = _rows(dataset.x_test)
    assert len(test_rows) == len(dataset.x_test), "held-out inputs are distinct"
    assert not test_rows & _rows(dataset.x_train)
    assert not test_rows & _rows(dataset.x_val)
    assert dataset.x_test.min() >= spec.low and dataset.x_test.max() < spec.high


def test_unary_operations_hold_out_a_tenth_of_a_small_range() -> None:
    dataset = make_dataset(SQUARE, DataSpec())
    held_out = set(dataset.x_test[:, 0].tolist())
    assert len(held_out) == 50
    trained = set(dataset.x_train[:, 0].tolist()) | set(dataset.x_val[:, 0].tolist())
    assert trained.isdisjoint(held_out)
    # Training still covers (almost) every other value of the range.
    assert len(trained) >= 440 and trained | held_out <= set(range(500))


def test_tiny_ranges_keep_training_data() -> None:
    dataset = make_dataset(ADD, DataSpec(low=0, high=5, examples=200))
    assert len(dataset.x_test) == 2  # 10% of the 25 pairs
    assert len(_rows(dataset.x_train) | _rows(dataset.x_val)) == 23


@pytest.mark.parametrize(
    ("low", "high", "band"),
    [(0, 500, (500, 1000)), (-100, 10, (10, 20)), (-30, -10, (-10, 10)), (-30, 0, (0, 30))],
)
def test_extrapolation_band(low: int, high: int, band: tuple[int, int]) -> None:
    assert extrapolation_band(low, high) == band
    dataset = make_dataset(ADD, DataSpec(low=low, high=high, examples=100, test_examples=20))
    x = dataset.x_extrapolation
    assert x.min() >= band[0] and x.max() < band[1]


# --------------------------------------------------------------------------------------------
# make_dataset: domains


def test_divide_never_divides_by_zero() -> None:
    dataset = make_dataset(DIVIDE, DataSpec(low=-5, high=6, examples=2_000))
    for split in SPLITS:
        x = getattr(dataset, f"x_{split}")
        assert (x[:, 1] != 0).all()
        assert np.isfinite(getattr(dataset, f"y_{split}")).all()
    # Zero still appears as a dividend.
    assert (dataset.x_train[:, 0] == 0).any()


def test_sqrt_never_sees_negative_inputs() -> None:
    dataset = make_dataset(SQRT, DataSpec(low=-50, high=50, examples=1_000))
    for split in ("train", "val", "test"):
        x = getattr(dataset, f"x_{split}")
        assert (x >= 0).all() and x.max() < 50


def test_expression_pole_is_avoided() -> None:
    pole = make_operation("pole", "a/(a-b)")
    dataset = make_dataset(pole, DataSpec(low=0, high=20, examples=2_000))
    for split in SPLITS:
        x = getattr(dataset, f"x_{split}")
        assert (x[:, 0] != x[:, 1]).all()
        assert np.isfinite(getattr(dataset, f"y_{split}")).all()


@pytest.mark.parametrize(
    ("operation", "spec", "named"),
    [
        (
            DIVIDE,
            DataSpec(low=0, high=1),
            "operation 'divide' (a / b where b != 0) has no valid input",
        ),
        (SQRT, DataSpec(low=-5, high=0), "'sqrt' (sqrt(a) where a >= 0) has no valid input"),
        (SQRT, DataSpec(low=-10, high=1), "only 1 valid input with a in [-10, 1)"),
        (make_operation("never", "1/(a-a)+b"), DataSpec(high=10**6), "a, b in [0, 1000000)"),
        (make_operation("inside", "(400-a)**0.5"), DataSpec(), "the extrapolation band"),
    ],
)
def test_impossible_ranges_are_refused_up_front(
    operation: Operation, spec: DataSpec, named: str
) -> None:
    with pytest.raises(ConfigError) as excinfo:
        make_dataset(operation, spec)
    message = str(excinfo.value)
    assert named in message and "\n" not in message
