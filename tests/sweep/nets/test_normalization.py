from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from sweep.errors import ConfigError
from sweep.nets.layers import Denormalize, Normalize
from sweep.nets.normalization import SCHEMES, denormalize, fit_normalization, normalize

RAW = np.array([[0, 3], [499, 0], [250, 123], [7, 499]], dtype=np.float64)
SIGNED = np.array([-499.0, -1.0, 0.0, 1.0, 498.0, 249001.0])


# log_abs keeps magnitudes only (it is for multiplicative, non-negative operations).
SIGNED_SCHEMES = [s for s in SCHEMES if s != "log_abs"]


@pytest.mark.parametrize("scheme", SIGNED_SCHEMES)
def test_numpy_round_trip_is_exact(scheme: str) -> None:
    params = fit_normalization(scheme, SIGNED)
    np.testing.assert_allclose(denormalize(params, normalize(params, SIGNED)), SIGNED, rtol=1e-12)


@pytest.mark.parametrize("scheme", ["minmax", "standard", "log"])
def test_normalised_values_are_of_order_one(scheme: str) -> None:
    products = np.arange(0, 500, dtype=np.float64) ** 2
    out = normalize(fit_normalization(scheme, products), products)
    assert np.max(np.abs(out)) < 10


def test_minmax_maps_training_range_to_unit_interval() -> None:
    out = normalize(fit_normalization("minmax", RAW), RAW)
    assert out.min(axis=0).tolist() == [0.0, 0.0]
    assert out.max(axis=0).tolist() == [1.0, 1.0]


def test_log_copes_with_zero_and_negative_values() -> None:
    params = fit_normalization("log", SIGNED)
    out = normalize(params, SIGNED)
    assert np.all(np.isfinite(out))
    # Order is kept: the transform is monotonic, so negatives stay below zero and zero.
    assert np.all(np.diff(out) > 0)


def test_constant_column_does_not_divide_by_zero() -> None:
    params = fit_normalization("standard", np.ones((5, 1)))
    assert params.scale == (1.0,)


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown normalisation 'zscore'"):
        fit_normalization("zscore", RAW)


@pytest.mark.parametrize("scheme", SIGNED_SCHEMES)
def test_layers_match_numpy_and_invert(scheme: str) -> None:
    params = fit_normalization(scheme, SIGNED)
    column = SIGNED[:, None].astype(np.float32)
    forward = keras.ops.convert_to_numpy(Normalize.from_params(params)(column))
    np.testing.assert_allclose(forward[:, 0], normalize(params, SIGNED), rtol=1e-5, atol=1e-5)
    back = keras.ops.convert_to_numpy(Denormalize.from_params(params)(forward))
    np.testing.assert_allclose(back[:, 0], SIGNED, rtol=2e-5, atol=1e-3)


def _model(scheme_in: str, scheme_out: str) -> keras.Model:
    inputs = keras.Input(shape=(2,))
    x = Normalize.from_params(fit_normalization(scheme_in, RAW))(inputs)
    x = keras.layers.Dense(1)(x)
    y = Denormalize.from_params(fit_normalization(scheme_out, RAW[:, 0] * RAW[:, 1]))(x)
    return keras.Model(inputs, y)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_save_and_load_in_safe_mode(tmp_path: Path, scheme: str) -> None:
    model = _model(scheme, scheme)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = RAW.astype(np.float32)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x))
    )
    layer = next(layer for layer in loaded.layers if isinstance(layer, Normalize))
    assert layer.scheme == scheme


@pytest.mark.slow  # a real process (or several): the slow tier
def test_loads_in_a_fresh_process_after_import_sweep(tmp_path: Path) -> None:
    path = tmp_path / "m.keras"
    _model("log", "log").save(path)
    code = (
        "import sweep.nets.layers, keras, numpy as np\n"
        f"m = keras.saving.load_model({str(path)!r})\n"
        "print(m(np.array([[3.0, 4.0]], dtype='float32')).shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "(1, 1)" in out.stdout


def test_safe_mode_refuses_a_lambda_layer(tmp_path: Path) -> None:
    inputs = keras.Input(shape=(2,))
    outputs = keras.layers.Lambda(lambda t: t * 2)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="Lambda"):
        keras.saving.load_model(path, safe_mode=True)


def test_log_abs_turns_multiplication_into_addition() -> None:
    a, b = np.array([3.0, 499.0, 1.0]), np.array([7.0, 998.0, 1.0])
    params = fit_normalization("log_abs", a)
    np.testing.assert_allclose(
        normalize(params, a * b), normalize(params, a) + normalize(params, b)
    )


def test_log_abs_inverts_exactly_in_float64_and_zero_comes_back_as_zero() -> None:
    values = np.array([0.0, 1.0, 2.0, 250_000.0, 999_999.0])
    params = fit_normalization("log_abs", values)
    layer_in = Normalize.from_params(params, dtype="float64")
    layer_out = Denormalize.from_params(params, dtype="float64")
    back = keras.ops.convert_to_numpy(layer_out(layer_in(values[:, None])))[:, 0]
    assert back[0] < 1e-14  # log|0| sits at the floor; exp() of it rounds to 0
    np.testing.assert_allclose(back[1:], values[1:], rtol=1e-14)
    assert np.array_equal(np.rint(back), values)


@pytest.mark.parametrize(
    ("weights", "compute"),
    [
        ([1.0, 1.0], lambda a, b: a * b),
        ([1.0, -1.0], lambda a, b: a / b),
        ([2.0, 1.0], lambda a, b: a * a * b),
    ],
)
def test_a_linear_model_in_log_space_is_exact_with_the_exact_weights(
    weights: list[float], compute: object
) -> None:
    """The mechanism the sweep relies on: log_abs in, one Dense, exp out, float64."""
    grid = np.array([(a, b) for a in range(0, 1000, 7) for b in range(1, 1000, 11)], dtype=float)
    params = fit_normalization("log_abs", grid)
    inputs = keras.Input(shape=(2,), dtype="float64")
    x = Normalize.from_params(params, dtype="float64")(inputs)
    dense = keras.layers.Dense(1, dtype="float64")
    y = Denormalize.from_params(fit_normalization("log_abs", grid[:, 0]), dtype="float64")(
        dense(x)
    )
    model = keras.Model(inputs, y)
    dense.set_weights([np.array(weights)[:, None], np.zeros(1)])
    out = keras.ops.convert_to_numpy(model(grid))[:, 0]
    truth = compute(grid[:, 0], grid[:, 1])  # type: ignore[operator]
    relative = np.abs(out - truth) / np.maximum(np.abs(truth), 1.0)
    assert relative.max() < 1e-12
    if float(np.abs(truth - np.rint(truth)).max()) == 0.0:
        assert np.array_equal(np.rint(out), truth)
