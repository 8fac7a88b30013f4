"""The formula family's layer: the found formula computed by Keras as NumPy computes it, saved
and loaded in safe mode, exported to SavedModel and ONNX, and refused when a file's formula is
one no sweep finds."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from sweep.errors import ModelLoadError
from sweep.nets.archive import check_archive
from sweep.nets.formula import Formula, Term
from sweep.nets.formula_training import build_formula_model
from sweep.nets.saving import load_model_bytes, serialize_model
from sweep.nets.training import predict

FORMULAS = {
    "ratio": Formula(2, (Term(1.0, (1.0, 0.0)), Term(1.0, (0.0, 1.0))), 0.0,
                     (Term(1.0, (1.0, 0.0)), Term(-1.0, (0.0, 1.0))), 0.0),
    "root of a sum": Formula(3, tuple(Term(1.0, tuple(2.0 * (k == i) for k in range(3)))
                                      for i in range(3)), power=0.5),
    "cos of a product": Formula(3, (Term(1.0, (1.0, 0.0, 0.0), "cos", (0.0, 1.0, 1.0)),)),
    "exp of a sum": Formula(3, (Term(-1.0, (0.0, 1.0, 1.0)),
                                Term(1.0, (0.0, 0.0, 0.0), "log", (1.0, 0.0, 0.0))), outer="exp"),
    "halves and inverses": Formula(2, (Term(2.5, (0.5, -1.0)), Term(-3.0, (-2.0, 1.0))), 7.0),
    "a cube root": Formula(2, (Term(1.0, (3.0, 0.0)), Term(1.0, (0.0, 3.0))), power=1 / 3),
}


def _rows(arity: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, size=(500, arity))
    return np.vstack([x, np.zeros((1, arity)), np.ones((1, arity))])


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_keras_computes_what_numpy_computes_and_the_saved_model_too(name: str) -> None:
    formula = FORMULAS[name]
    x = _rows(formula.arity)
    model = build_formula_model(formula)
    expected = formula.evaluate(x)
    keras_answers = predict(model, x)
    np.testing.assert_allclose(keras_answers, expected, rtol=1e-14, atol=1e-300)
    loaded = load_model_bytes(serialize_model(model), label=name)
    np.testing.assert_array_equal(predict(loaded, x), keras_answers)


def _with_formula(data: bytes, formula: object) -> bytes:
    """The same archive with its layer's formula replaced (what a hostile file would do)."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(content)
                for layer in config["config"]["layers"]:
                    if layer["class_name"] == "FormulaLayer":
                        layer["config"]["formula"] = formula
                content = json.dumps(config).encode()
            target.writestr(item, content)
    return out.getvalue()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda f: {**f, "numerator": [{"coefficient": 1, "exponents": [99, 0]}]}, "within ±8"),
        (lambda f: {**f, "numerator": [{"coefficient": 1, "exponents": [1, 0],
                                        "function": "__import__"}]}, "unknown function"),
        (lambda f: {**f, "numerator": [{"coefficient": 1, "exponents": [1, 0]}] * 500},
         "at most"),
        (lambda f: {"arity": 3, "numerator": [{"coefficient": 1, "exponents": [1, 0, 0]}]},
         "takes 3 inputs, but the graph gives it 2"),
        (lambda f: "eval('1')", "a mapping"),
    ],
)
def test_a_file_whose_formula_no_sweep_finds_is_refused_before_keras(
    change: object, named: str
) -> None:
    formula = FORMULAS["ratio"]
    data = serialize_model(build_formula_model(formula))
    hostile = _with_formula(data, change(formula.to_dict()))  # type: ignore[operator]
    with pytest.raises(ModelLoadError, match=named):
        check_archive(hostile, label="crafted")
    with pytest.raises(ModelLoadError):
        load_model_bytes(hostile, label="crafted")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_savedmodel_and_onnx_answer_as_the_keras_model(name: str, tmp_path: Path) -> None:
    from sweep.nets.exporting import export_onnx, export_savedmodel, savedmodel_answers
    from sweep.nets.portable import OnnxPredictor

    formula = FORMULAS[name]
    x = _rows(formula.arity)
    model = build_formula_model(formula)
    reference = predict(model, x)
    export_savedmodel(model, tmp_path / "saved")
    np.testing.assert_allclose(savedmodel_answers(tmp_path / "saved", x), reference,
                               rtol=1e-13, atol=1e-300)
    data, _ = export_onnx(model, probe=x)
    np.testing.assert_allclose(OnnxPredictor(data).predict(x), reference, rtol=1e-13,
                               atol=1e-300)


def _random_formula(rng: np.random.Generator, arity: int) -> Formula:
    exponents = [-2.0, -1.0, -0.5, 0.0, 0.0, 0.5, 1.0, 2.0, 3.0]
    coefficients = [1.0, -2.5, 0.1, 3e7, -1e-5, 1e-200, 1e-310]

    def terms(count: int) -> tuple[Term, ...]:
        return tuple(
            Term(float(rng.choice(coefficients)), tuple(float(rng.choice(exponents))
                                                       for _ in range(arity)))
            for _ in range(count)
        )

    denominator = terms(int(rng.integers(0, 3)))
    return Formula(
        arity, terms(int(rng.integers(1, 4))), float(rng.choice([0.0, 1.5, -1e-300])),
        denominator, float(rng.choice([1.0, 0.0, 2.0])) if denominator else 1.0,
        power=float(rng.choice([1.0, 0.5, 2.0])),
    )


def test_eager_calls_in_numpy_give_tensorflows_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """An eager call computes in NumPy where no value can turn subnormal (TensorFlow flushes
    those to zero) and the formula has no elementary function, else in TensorFlow: either
    way the bits of TensorFlow's eager ops, for signs, zeros, tiny, huge, infinite and NaN
    inputs, tiny coefficients and constants, quotients and powers."""
    import keras
    import tensorflow as tf

    from sweep.nets import formula_layer

    used: list[str] = []
    real = formula_layer.formula_value

    def spy(formula: Formula, columns: list[object], namespace: object = keras.ops,
            seen: list[object] | None = None) -> object:
        used.append("numpy" if namespace is np else "tensorflow")
        return real(formula, columns, namespace, seen)

    monkeypatch.setattr(formula_layer, "formula_value", spy)

    def bits(values: np.ndarray) -> np.ndarray:
        # Every bit but a NaN's sign, which x86 sets by operand order and nothing reads.
        return np.where(np.isnan(values), np.nan, values).view("u8")

    rng = np.random.default_rng(7)
    special = [0.0, -0.0, 1e-300, -7.0, 3e200, np.inf, -np.inf, np.nan, 0.3, 1e-30, 2e30]
    paths: dict[str, set[str]] = {}
    for case in range(60):
        arity = int(rng.integers(1, 4))
        formula = _random_formula(rng, arity)
        layer = formula_layer.FormulaLayer(formula.to_dict(), dtype="float64")
        batches = {
            "normal": np.vstack([rng.uniform(-1000, 1000, size=(300, arity)),
                                 rng.integers(-20, 20, size=(100, arity))]),
            "zeros, infinities, NaN": rng.choice([0.0, -0.0, np.inf, -np.inf, np.nan, 5.0],
                                                 size=(200, arity)),
            "tiny and huge": rng.choice(special, size=(200, arity)),
            # A product that passes through a subnormal and comes back (1e-160**2 * 1e100).
            "a subnormal within a product": rng.choice([1e-160, -1e-160, 1e100, 1.0, 3.0],
                                                       size=(200, arity)),
        }
        for name, x in batches.items():
            tensor = tf.constant(x)
            expected = np.asarray(real(formula, [tensor[:, i] for i in range(arity)]))
            used.clear()
            eager = np.asarray(layer(x))
            assert eager.dtype == np.float64 and eager.shape == (len(x), 1)
            np.testing.assert_array_equal(bits(eager), bits(expected), err_msg=f"{case} {name}")
            paths.setdefault(name, set()).add(used[-1])
    # Both ways were taken where they should be: NumPy for ordinary inputs, TensorFlow where
    # a subnormal could arise.
    assert paths["normal"] == {"numpy", "tensorflow"}
    assert "tensorflow" in paths["tiny and huge"]


def test_formulas_with_functions_stay_in_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    from sweep.nets import formula_layer

    used: list[object] = []
    real = formula_layer.formula_value
    monkeypatch.setattr(formula_layer, "formula_value",
                        lambda f, c, n=None, s=None: used.append(n) or real(f, c, n, s))
    for name in ("cos of a product", "exp of a sum", "a cube root"):
        formula = FORMULAS[name]
        predict(build_formula_model(formula), _rows(formula.arity))
    assert used and all(namespace is not np for namespace in used)
