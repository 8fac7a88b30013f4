"""The power family's layer: exact product units, signs and zeros, safe loading.

Its solve and snapping: test_least_squares.py.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from sweep.nets.layers import Monomials, power_of_four_scale
from sweep.nets.saving import load_model_bytes, serialize_model
from sweep.nets.spec import ModelSpec, monomial_exponents
from sweep.nets.training import predict, train

RNG = np.random.default_rng(15)


def _data(low: int, high: int, rows: int) -> np.ndarray:
    return RNG.integers(low, high, size=(rows, 2))


def _monomials(x: np.ndarray, exponents: list[list[float]], scale: list[float] | None = None
               ) -> np.ndarray:
    layer = Monomials(exponents, scale=scale, dtype="float64")
    return np.asarray(keras.ops.convert_to_numpy(layer(np.asarray(x, dtype="float64"))))


def test_exponents_cover_every_monomial_up_to_the_degree() -> None:
    assert monomial_exponents(2, 2) == ((1, 0), (0, 1), (2, 0), (1, 1), (0, 2))
    # a/b + b/a and a + 1/b are sums of degree-2 (negative) products.
    with_negatives = monomial_exponents(2, 2, negative=True)
    assert {(1.0, -1.0), (-1.0, 1.0), (0.0, -1.0)} <= set(with_negatives)
    assert len(with_negatives) == 12 and (0.0, 0.0) not in with_negatives
    assert (0.5,) in monomial_exponents(1, 1, half=True)


def test_signs_and_zeros_follow_the_integer_powers() -> None:
    x = np.array([[-3, 2], [0, 5], [4, 0], [-2, -1], [0, 0]])
    exponents = [[3, 0], [1, -1], [0, -2], [2, 1], [1, 0], [0, 0.5], [-1, 1]]
    got = _monomials(x, exponents)
    a, b = x[:, 0].astype(float), x[:, 1].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.stack([
            a**3,
            np.where(b == 0, 0.0, a / np.where(b == 0, 1, b)),  # a/b; 0 where b = 0
            np.where(b == 0, 0.0, 1 / np.where(b == 0, 1, b) ** 2),
            a**2 * b,
            a,  # b**0 = 1, also at b = 0
            np.sqrt(np.abs(b)),
            np.where(a == 0, 0.0, b / np.where(a == 0, 1, a)),
        ], axis=1)
    np.testing.assert_array_equal(got, expected)
    assert got[0, 0] == -27 and got[3, 3] == -4  # odd powers keep the sign
    assert np.all(np.isfinite(got))


def test_power_of_four_scale_is_exact() -> None:
    assert power_of_four_scale(np.array([[499, -500], [3, 2]])) == [1024.0, 1024.0]
    assert power_of_four_scale(np.array([[200], [-3]])) == [256.0]
    assert power_of_four_scale(np.array([[1000, 0], [0, 0]])) == [1024.0, 1.0]
    x = _data(-500, 500, 200)
    scaled = _monomials(x, [[2, 1]], scale=[512.0, 512.0])[:, 0]
    # Scaling by powers of two loses nothing: times 512**3 it is a*a*b again, exactly.
    np.testing.assert_array_equal(scaled * 512.0**3, (x[:, 0] ** 2 * x[:, 1]).astype(float))


def test_exact_weights_reproduce_a_polynomial_far_beyond_the_data() -> None:
    exponents = [list(e) for e in monomial_exponents(2, 4)]
    inputs = keras.Input(shape=(2,), dtype="float64")
    scale = [512.0, 512.0]
    output = keras.layers.Dense(1, dtype="float64")
    model = keras.Model(inputs, output(Monomials(exponents, scale=scale, dtype="float64")(inputs)))
    # a**4 - b**4 + 3*a*b - 7: weights are the coefficients times prod s**e, exact in binary.
    wanted = {(4.0, 0.0): 1.0, (0.0, 4.0): -1.0, (1.0, 1.0): 3.0}
    kernel = np.array([[wanted.get(tuple(e), 0.0) * 512.0 ** sum(e)] for e in exponents])
    output.set_weights([kernel, np.array([-7.0])])
    # Up to |a|, |b| < 9000 every term and sum stays below 2**53, where float64 is exact.
    x = np.concatenate([_data(-5000, 5000, 2000), _data(-9000, 9000, 500)])
    a, b = x[:, 0], x[:, 1]
    np.testing.assert_array_equal(predict(model, x), (a**4 - b**4 + 3 * a * b - 7).astype(float))


def test_power_model_round_trips_through_safe_mode() -> None:
    def f(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a / b + b / a

    x, x_val = _data(1, 500, 2000), _data(1, 500, 300)
    spec = ModelSpec((), "linear", "none", "none", 0.0, 1, "mse", 0, "constant", True,
                     family="power", degree=2, negative_powers=True, half_powers=True,
                     snap_output=True)
    result = train(spec, x, f(*x.T.astype(float)), x_val, f(*x_val.T.astype(float)))
    loaded = load_model_bytes(result.to_bytes(), label="power")
    probe = _data(-2000, 2000, 500)
    probe = probe[(probe[:, 0] != 0) & (probe[:, 1] != 0)]
    np.testing.assert_array_equal(predict(loaded, probe), result.predict(probe))
    assert any(isinstance(layer, Monomials) for layer in loaded.layers)
    assert serialize_model(loaded) and not any(
        type(layer).__name__ == "Lambda" for layer in loaded.layers
    )


@pytest.mark.parametrize(
    ("exponents", "message"),
    [([[9.0, 0.0]], r"within ±8, got 9.0"), ([[0.3]], r"whole or halves"),
     ([[1.0], [1.0, 0.0]], r"equal-length rows")],
)
def test_a_hostile_config_cannot_build_huge_powers(exponents: list[list[float]], message: str
                                                    ) -> None:
    with pytest.raises(ValueError, match=message):
        Monomials(exponents)


def test_a_model_file_with_huge_exponents_is_one_load_error() -> None:
    import io
    import zipfile

    from sweep.errors import ModelLoadError

    inputs = keras.Input(shape=(2,), dtype="float64")
    units = Monomials([[1.0, 1.0]], dtype="float64")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, dtype="float64")(units))
    source, crafted = zipfile.ZipFile(io.BytesIO(serialize_model(model))), io.BytesIO()
    with zipfile.ZipFile(crafted, "w") as target:
        for info in source.infolist():
            body = source.read(info)
            if info.filename == "config.json":
                body = body.replace(b"[[1.0, 1.0]]", b"[[1000000000.0, 1.0]]")
            target.writestr(info, body)
    with pytest.raises(ModelLoadError, match=r"within ±8, got 1000000000.0"):
        load_model_bytes(crafted.getvalue(), label="crafted")


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize(
    ("arity", "degree", "negative", "half"),
    [(1, 4, True, True), (2, 4, True, True), (3, 3, True, False), (2, 2, False, False)],
)
def test_eager_calls_in_numpy_give_tensorflows_bits(
    arity: int, degree: int, negative: bool, half: bool, precision: str
) -> None:
    """An eager call computes in NumPy when no value can turn subnormal (TensorFlow flushes
    those to zero), else in TensorFlow: either way the bits of TensorFlow's eager ops, for
    signs, zeros, tiny, huge, infinite and NaN inputs, in both precisions."""
    import tensorflow as tf

    from sweep.nets.powers import Powers

    exponents = [list(e) for e in monomial_exponents(arity, degree, negative, half)]
    scale = [4.0**5] * arity
    layer = Monomials(exponents, scale=scale, dtype=precision)
    special = [0.0, -0.0, 1e-300, -7.0, 3e200, np.inf, -np.inf, np.nan, 0.3, 1e-30, 2e30]

    def bits(values: np.ndarray) -> np.ndarray:
        # Every bit but a NaN's sign, which x86 sets by operand order and nothing reads.
        return np.where(np.isnan(values), np.nan, values).view(f"u{values.itemsize}")

    batches = {
        "normal": np.vstack([RNG.uniform(-1000, 1000, size=(500, arity)),
                             RNG.integers(-20, 20, size=(200, arity))]),
        "zeros, infinities, NaN": RNG.choice([0.0, -0.0, np.inf, -np.inf, np.nan, 5.0, -3.0],
                                             size=(300, arity)),
        "tiny and huge": RNG.choice(special, size=(300, arity)),
    }
    for name, x in batches.items():
        with np.errstate(over="ignore"):
            tensor = tf.constant(x.astype(precision))
        powers = Powers([tensor[:, i] * (1.0 / s) for i, s in enumerate(scale)], keras.ops)
        expected = np.asarray(keras.ops.stack([powers.product(e) for e in exponents], axis=1))
        eager = np.asarray(layer(x))
        assert eager.dtype == np.dtype(precision) and eager.shape == expected.shape, name
        np.testing.assert_array_equal(bits(eager), bits(expected), err_msg=name)
        if precision == "float64" and name == "normal":
            # And the exports' (a traced graph's) bits too. In float32 TensorFlow's graph
            # rewrites (x / sqrt y into x * rsqrt y) round apart from its own eager ops.
            graph = np.asarray(tf.function(layer)(tensor))
            np.testing.assert_array_equal(bits(eager), bits(graph))
