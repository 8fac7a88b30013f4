"""SavedModel and ONNX exports reproduce the Keras model: exact models stay exact.

Every export is loaded where this project cannot be imported: a venv with only tensorflow (and
Keras blocked) for the SavedModels, one with only onnxruntime and numpy for ONNX. Answers are
compared at the same batch shape (TensorFlow and onnxruntime sum dot products differently by
shape): SavedModels bit for bit, ONNX bit for bit for the exact models and within
`sweep.nets.portable.TOLERANCE` (integer answers unchanged) for the MLPs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest
from _hand_models import exact_add, exact_multiply, mlp, standard_add
from _isolated_checks import answers_in_isolation
from _monomials import monomial_model

from sweep.errors import ConfigError, ExportError
from sweep.nets.exporting import export_onnx, export_savedmodel, savedmodel_answers
from sweep.nets.layers import Normalize
from sweep.nets.portable import TOLERANCE, compare_answers
from sweep.nets.training import predict

pytestmark = pytest.mark.slow

ACTIVATIONS = ("tanh", "relu", "elu", "gelu", "selu", "swish")


def _probe() -> np.ndarray:
    """Held-out pairs, zeros (signed too), the extrapolation band and integer pairs."""
    rng = np.random.default_rng(17)
    zeros = [[0, 0], [0, 5], [7, 0], [-0.0, 3], [0, -2.5], [0.0, -0.0], [-0.0, -0.0]]
    return np.concatenate([
        rng.uniform(-100, 100, (200, 2)),
        np.asarray(zeros, dtype=np.float64),
        rng.uniform(-1e6, 1e6, (100, 2)),
        rng.integers(500, 1000, (100, 2)).astype(np.float64),  # the band [high, 2 high)
        rng.integers(-1000, 1000, (100, 2)).astype(np.float64),
    ])


@dataclass(frozen=True)
class Case:
    build: Callable[[], keras.Model]
    exact: bool  # a model whose ONNX answers must be bit for bit Keras'
    truth: Callable[[np.ndarray], np.ndarray] | None = None  # bit for bit, where given


def _power_model() -> keras.Model:
    """The real power family's layer (scaled, with negative and half exponents) and weights
    for a*b - 3*b/a + 2*sqrt|b|, written exactly."""
    from sweep.nets.layers import Monomials
    from sweep.nets.spec import monomial_exponents

    exponents = [list(e) for e in monomial_exponents(2, 2, negative=True, half=True)]
    inputs = keras.Input(shape=(2,), dtype="float64", name="operands")
    features = Monomials(exponents, scale=[1024.0, 1024.0], name="monomials", dtype="float64")
    output = keras.layers.Dense(1, name="output", dtype="float64")
    model = keras.Model(inputs, output(features(inputs)), name="arithmetic")
    wanted = {(1.0, 1.0): 1.0, (-1.0, 1.0): -3.0, (0.0, 0.5): 2.0}
    kernel = [[wanted.get(tuple(e), 0.0) * 1024.0 ** sum(e)] for e in exponents]
    output.set_weights([np.asarray(kernel), np.zeros(1)])
    return model


def _divide(x: np.ndarray) -> np.ndarray:
    b = x[:, 1]
    return np.where(b == 0, 0.0, x[:, 0] / np.where(b == 0, 1.0, b))


CASES: dict[str, Case] = {
    "exact_add": Case(exact_add, True, lambda x: x[:, 0] + x[:, 1]),
    "exact_multiply": Case(exact_multiply, True),
    "standard_add": Case(standard_add, False),
    "monomial_multiply": Case(lambda: monomial_model([1, 0, 0, 0, 0]), True,
                              lambda x: x[:, 0] * x[:, 1]),
    "monomial_divide": Case(lambda: monomial_model([0, 1, 0, 0, 0]), True, _divide),
    # Real-valued terms (b/a, sqrt) summed in another order: within TOLERANCE, not bit for bit.
    "power_family": Case(_power_model, False),
    **{f"mlp_{a}": Case(lambda a=a: mlp(a), False) for a in ACTIVATIONS},  # type: ignore[misc]
}


@dataclass
class Exported:
    folder: Path
    x: np.ndarray
    keras_answers: dict[str, np.ndarray]
    in_process: dict[str, np.ndarray]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    folder = tmp_path_factory.mktemp("exports")
    x = _probe()
    answers, in_process = {}, {}
    for name, case in CASES.items():
        model = case.build()
        answers[name] = predict(model, x)
        np.save(folder / f"{name}.x.npy", x)
        export_savedmodel(model, folder / name / "1")
        in_process[name] = savedmodel_answers(folder / name / "1", x)
        real = name in ("monomial_divide", "power_family")
        data, _ = export_onnx(model, probe=x, integer_valued=not real)
        (folder / f"{name}.onnx").write_bytes(data)
    return Exported(folder, x, answers, in_process)


def test_savedmodels_answer_bit_for_bit_in_a_venv_with_only_tensorflow(
    exported: Exported,
) -> None:
    isolated = answers_in_isolation(exported.folder, list(CASES), "savedmodel")
    for name, y in isolated.items():
        reference = exported.keras_answers[name]
        assert compare_answers(reference, y, integer_valued=False).bitwise, name
        assert np.array_equal(exported.in_process[name], y), name


def test_onnx_models_run_in_a_venv_with_only_onnxruntime(exported: Exported) -> None:
    isolated = answers_in_isolation(exported.folder, list(CASES), "onnx")
    for name, y in isolated.items():
        comparison = compare_answers(exported.keras_answers[name], y, integer_valued=True)
        if CASES[name].exact:
            assert comparison.bitwise, (name, comparison.describe())
        assert comparison.max_relative_error <= TOLERANCE, (name, comparison.describe())
        assert comparison.integer_mismatches == 0, (name, comparison.describe())


def test_exact_models_stay_exact_in_every_format(exported: Exported) -> None:
    x = exported.x
    integers = np.all(x == np.rint(x), axis=1)
    formats = {
        "keras": exported.keras_answers,
        "savedmodel": answers_in_isolation(exported.folder, list(CASES), "savedmodel"),
        "onnx": answers_in_isolation(exported.folder, list(CASES), "onnx"),
    }
    for where, answers in formats.items():
        for name, case in CASES.items():
            y = answers[name]
            if case.truth is not None:
                assert np.array_equal(y, case.truth(x)), (where, name)
        # exp(log a + log b) is not |ab| bit for bit, but rounds to it on every integer pair,
        # and a zero factor gives (a value that rounds to) zero.
        product = np.abs(x[:, 0] * x[:, 1])
        y = answers["exact_multiply"]
        assert np.array_equal(np.rint(y[integers]), product[integers]), where
        assert np.all(np.rint(y[product == 0]) == 0), where
        y = answers["standard_add"]
        total = x[:, 0] + x[:, 1]
        assert np.array_equal(np.rint(y[integers]), total[integers]), where


def test_normalize_divides_exactly_as_before(exported: Exported) -> None:
    """`divide_no_nan` replaced `/` in Normalize: eagerly the very same quotient, so every
    model already in a registry keeps its answers."""
    rng = np.random.default_rng(3)
    x = np.concatenate([exported.x, rng.uniform(-1e9, 1e9, (500, 2)), [[0.0, -0.0]]])
    for transform, scheme in (("identity", "standard"), ("signed_log", "log"),
                              ("log_abs", "log_abs")):
        offset = rng.uniform(-50, 50, 2).tolist()
        scale = [float(rng.uniform(1e-12, 1e-9)), float(rng.uniform(0.5, 900.0))]
        layer = Normalize(scheme, transform, offset, scale, dtype="float64")
        new = keras.ops.convert_to_numpy(layer(x))
        transformed = keras.ops.cast(x, "float64")
        if transform == "signed_log":
            transformed = keras.ops.sign(transformed) * keras.ops.log1p(keras.ops.abs(transformed))
        elif transform == "log_abs":
            transformed = keras.ops.log(keras.ops.maximum(keras.ops.abs(transformed), 1e-15))
        old = keras.ops.convert_to_numpy((transformed - np.asarray(offset)) / np.asarray(scale))
        assert np.array_equal(new, old, equal_nan=True), transform


def test_an_op_onnx_cannot_express_is_refused_in_one_line() -> None:
    class Erfinv(keras.layers.Layer):
        def call(self, x: object) -> object:
            return keras.ops.erfinv(x)

    inputs = keras.Input((2,), dtype="float64")
    model = keras.Model(inputs, keras.layers.Dense(1, dtype="float64")(Erfinv(dtype="float64")(
        inputs)))
    with pytest.raises(ExportError, match="Erfinv") as caught:
        export_onnx(model)
    assert "\n" not in str(caught.value)


def test_a_missing_onnx_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import sweep.nets.portable as portable

    monkeypatch.setattr(
        portable.importlib.util, "find_spec",
        lambda name, *a: None if name == "tf2onnx" else object(),
    )
    with pytest.raises(ConfigError, match=r"needs tf2onnx; install it with: pip install "
                       r"\"neural-arithmetic-sweep\[onnx\]\""):
        export_onnx(exact_add())


def _ten_input_model(family: str) -> keras.Model:
    """A sweep model over ten real inputs as `train` builds it: fitted normalisations, and
    (the power family) the product units its degree fits in, with arbitrary output weights."""
    from sweep.nets.layers import power_of_four_scale
    from sweep.nets.normalization import fit_normalization
    from sweep.nets.spec import MAX_UNITS, ModelSpec
    from sweep.nets.training import build

    rng = np.random.default_rng(10)
    x = rng.uniform(1, 2, (500, 10))
    y = x.prod(axis=1) + x.sum(axis=1)
    spec = ModelSpec((16,) if family == "mlp" else (), "tanh", "standard", "standard", 1e-3, 32,
                     "mse", 1, "constant", False, family=family, degree=3, negative_powers=True)
    inputs = fit_normalization("none" if family == "power" else "standard", x)
    built = build(spec, 10, inputs, fit_normalization("standard", y),
                  monomial_scale=power_of_four_scale(x) if family == "power" else None)
    if family == "power":
        units = len(spec.exponents(10))
        assert units <= MAX_UNITS and spec.fitted_degree(10) < spec.degree
        built.output_layer.set_weights([rng.normal(size=(units, 1)), np.zeros(1)])
    return built.exported


@pytest.mark.parametrize("family", ["mlp", "power"])
def test_ten_input_models_export_and_answer_alike(family: str, tmp_path: Path) -> None:
    from sweep.nets.exporting import model_arity, rounding_bound
    from sweep.nets.portable import OnnxPredictor, default_probe

    model = _ten_input_model(family)
    assert model_arity(model) == 10
    data, comparison = export_onnx(model)  # on the bounded default probe of 10 inputs
    x = default_probe(10)
    assert comparison.rows == len(x) < 2_500
    reference = predict(model, x)
    y = OnnxPredictor(data).predict(x)
    assert compare_answers(reference, y, integer_valued=False, rounding=rounding_bound(
        model, x, reference)).beyond_tolerance == 0
    export_savedmodel(model, tmp_path / "1")
    assert compare_answers(reference, savedmodel_answers(tmp_path / "1", x),
                           integer_valued=False).bitwise


def test_only_a_sweep_models_output_layer_has_a_rounding_bound() -> None:
    from sweep.nets.exporting import rounding_bound

    x = _probe()
    model = standard_add()
    bound = rounding_bound(model, x, predict(model, x))
    assert bound is not None and bound.shape == (len(x),) and (bound >= 0).all()
    assert (bound < 1e-9 * np.maximum(np.abs(predict(model, x)), 1)).all()  # well conditioned
    inputs = keras.Input((2,), dtype="float64")
    plain = keras.Model(inputs, keras.layers.Dense(1, dtype="float64")(inputs))
    assert rounding_bound(plain, x, predict(plain, x)) is None
