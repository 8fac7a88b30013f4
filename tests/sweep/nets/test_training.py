"""Real Keras training on small data: the mechanisms the search relies on."""

from __future__ import annotations

import numpy as np
import pytest

from sweep.nets import ModelSpec
from sweep.nets.normalization import fit_normalization
from sweep.nets.training import build, predict, train

RNG = np.random.default_rng(0)
X = RNG.integers(0, 500, size=(3000, 2))
X_VAL = RNG.integers(0, 500, size=(500, 2))


def _spec(**kw: object) -> ModelSpec:
    base = dict(
        hidden_layers=(), activation="linear", input_normalization="none",
        target_normalization="none", learning_rate=0.01, batch_size=64, loss="mse", epochs=3,
        lr_schedule="cosine", refit_output=True,
    )
    base.update(kw)
    return ModelSpec(**base)  # type: ignore[arg-type]


def test_linear_model_with_closing_least_squares_adds_exactly() -> None:
    y, y_val = X.sum(axis=1).astype(float), X_VAL.sum(axis=1).astype(float)
    result = train(_spec(), X, y, X_VAL, y_val, seed=1)
    assert result.refitted
    assert np.array_equal(np.rint(predict(result.model, X_VAL)), y_val)


def test_exported_model_maps_raw_inputs_to_raw_outputs() -> None:
    y = (X[:, 0] * X[:, 1]).astype(float)
    spec = _spec(input_normalization="log", target_normalization="standard", hidden_layers=(8,),
                 activation="tanh", epochs=1, refit_output=False)
    built = build(spec, 2, fit_normalization("log", X), fit_normalization("standard", y))
    raw = predict(built.exported, X_VAL)
    normalised = predict(built.training, X_VAL)
    params = built.target_params
    np.testing.assert_allclose(raw, normalised * params.scale[0] + params.offset[0], rtol=1e-5)


def test_every_epoch_reports_validation_predictions_in_original_units() -> None:
    y, y_val = X.sum(axis=1).astype(float), X_VAL.sum(axis=1).astype(float)
    seen: list[tuple[int, float]] = []

    def on_epoch(epoch: int, predictions: np.ndarray) -> None:
        seen.append((epoch, float(np.mean(np.abs(predictions - y_val)))))

    train(_spec(epochs=3, refit_output=False), X, y, X_VAL, y_val, on_epoch=on_epoch)
    assert [e for e, _ in seen] == [0, 1, 2]
    assert all(np.isfinite(v) for _, v in seen)


def test_training_is_reproducible_from_the_seed() -> None:
    y, y_val = X.sum(axis=1).astype(float), X_VAL.sum(axis=1).astype(float)
    spec = _spec(hidden_layers=(4,), activation="tanh", epochs=1, refit_output=False)
    first = predict(train(spec, X, y, X_VAL, y_val, seed=7).model, X_VAL)
    second = predict(train(spec, X, y, X_VAL, y_val, seed=7).model, X_VAL)
    np.testing.assert_array_equal(first, second)


def test_sweep_finds_multiply_exact_with_log_abs_and_the_closing_fit() -> None:
    """Trained (Adam for one epoch), then the masked least-squares fit makes it exact,
    zeros included, in range and far outside it."""
    x = np.vstack([X, [[0, 7], [9, 0], [0, 0]]])
    y = (x[:, 0] * x[:, 1]).astype(float)
    spec = _spec(input_normalization="log_abs", target_normalization="log_abs", epochs=1)
    result = train(spec, x, y, X_VAL, (X_VAL[:, 0] * X_VAL[:, 1]).astype(float), seed=3)
    assert result.refitted
    probe = np.array([[0, 5], [7, 0], [499, 499], [999, 998], [1, 1]])
    assert np.array_equal(np.rint(predict(result.model, probe)), probe[:, 0] * probe[:, 1])


def test_float32_cannot_hold_products_near_a_million_exactly() -> None:
    """Why float64 is the default precision: float32 spacing at 1e6 is 0.0625, and exp()
    in float32 of log(999*998) misses by more than rounding allows."""
    spec = _spec(input_normalization="log_abs", target_normalization="log_abs", epochs=1,
                 precision="float32")
    y = (X[:, 0] * X[:, 1]).astype(float)
    result = train(spec, X, y, X_VAL, (X_VAL[:, 0] * X_VAL[:, 1]).astype(float), seed=3)
    grid = np.array([(a, b) for a in range(900, 1000) for b in range(900, 1000, 7)])
    hits = np.rint(predict(result.model, grid)) == grid[:, 0] * grid[:, 1]
    assert hits.mean() < 0.999


GAS_RNG = np.random.default_rng(4)
GAS_LOW, GAS_HIGH = np.array([1.0, 8.0, 250.0, 1.0]), np.array([5.0, 9.0, 350.0, 10.0])
GAS_X = GAS_RNG.uniform(GAS_LOW, GAS_HIGH, size=(600, 4))
GAS_X_VAL = GAS_RNG.uniform(GAS_LOW, GAS_HIGH, size=(150, 4))


def _gas(x: np.ndarray) -> np.ndarray:
    return x[:, 0] * x[:, 1] * x[:, 2] / x[:, 3]


@pytest.mark.parametrize("family", ["mlp", pytest.param("power", marks=pytest.mark.slow)])
def test_both_families_train_on_four_real_inputs(family: str) -> None:
    """Float64 inputs of their own ranges, per-input normalisation: n*R*T/V is exact for the
    log-linear MLP (log n + log R + log T - log V) and for the power family's unit n R T / V."""
    assert GAS_X.dtype == np.float64
    spec = _spec(input_normalization="log_abs", target_normalization="log_abs", epochs=2)
    if family == "power":
        spec = _spec(family="power", degree=4, negative_powers=True, snap_output=True, epochs=0)
    result = train(spec, GAS_X, _gas(GAS_X), GAS_X_VAL, _gas(GAS_X_VAL), seed=3)
    assert tuple(result.model.inputs[0].shape) == (None, 4)
    assert spec.architecture(4).startswith("4-")
    np.testing.assert_allclose(predict(result.model, GAS_X_VAL), _gas(GAS_X_VAL), rtol=1e-9)
    # Beyond every input's training range too: the law was learned, not the rows.
    far = GAS_RNG.uniform(GAS_HIGH, 2 * GAS_HIGH, size=(100, 4))
    np.testing.assert_allclose(predict(result.model, far), _gas(far), rtol=1e-8)
