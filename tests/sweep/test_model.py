"""Real Keras training on small data: the mechanisms the search relies on."""

from __future__ import annotations

import numpy as np

from sweep.model import build, predict, train
from sweep.normalization import fit_normalization
from sweep.space import ModelSpec

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
