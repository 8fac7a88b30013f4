"""Hand-built registry models for the export and serving tests: exact ones and MLPs.

Built with the sweep's own `build` (its layers, its normalisations) and written into a registry
with `promote_if_better`, so a test has known models in seconds instead of a sweep's minutes.
"""

from __future__ import annotations

import keras
import numpy as np

from storage import ModelCandidate, ModelEntry, ModelRegistry
from sweep.nets.normalization import NormalizationParams, fit_normalization
from sweep.nets.saving import serialize_model
from sweep.nets.spec import ModelSpec
from sweep.nets.training import build

IDENTITY = NormalizationParams("none", "identity", (0.0, 0.0), (1.0, 1.0))
IDENTITY_1 = NormalizationParams("none", "identity", (0.0,), (1.0,))
LOG_ABS = NormalizationParams("log_abs", "log_abs", (0.0, 0.0), (1.0, 1.0))
LOG_ABS_1 = NormalizationParams("log_abs", "log_abs", (0.0,), (1.0,))


def _spec(layers: tuple[int, ...], activation: str, inputs: str, target: str) -> ModelSpec:
    return ModelSpec(layers, activation, inputs, target, 1e-3, 32, "mse", 1, "constant", False)


def linear(
    kernel: tuple[float, ...], bias: float, inputs: NormalizationParams,
    target: NormalizationParams,
) -> keras.Model:
    """A 2-1 linear model with the given weights: exact for add (none/none, kernel 1, 1) and for
    multiply (log_abs/log_abs, kernel 1, 1: exp(log a + log b))."""
    built = build(_spec((), "linear", inputs.scheme, target.scheme), 2, inputs, target)
    built.output_layer.set_weights(
        [np.asarray(kernel, dtype="float64").reshape(-1, 1), np.asarray([bias], "float64")]
    )
    return built.exported


def exact_add(bias: float = 0.0) -> keras.Model:
    return linear((1.0, 1.0), bias, IDENTITY, IDENTITY_1)


def exact_multiply() -> keras.Model:
    return linear((1.0, 1.0), 0.0, LOG_ABS, LOG_ABS_1)


def standard_add() -> keras.Model:
    """a + b through standard normalisation in and out (the weights solved for it): exact in
    real arithmetic, a few ulps off in float64 near zero sums."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 500, (1000, 2)).astype("float64")
    y = x.sum(axis=1)
    inputs = fit_normalization("standard", x)
    target = fit_normalization("standard", y.reshape(-1, 1))
    mu, sd = np.asarray(inputs.offset), np.asarray(inputs.scale)
    kernel = sd / target.scale[0]
    bias = (mu.sum() - target.offset[0]) / target.scale[0]
    return linear(tuple(kernel), float(bias), inputs, target)


def mlp(activation: str, seed: int = 0, layers: tuple[int, ...] = (16, 8)) -> keras.Model:
    """A 2-16-8-1 MLP with random weights under signed-log normalisation (log1p, expm1 and the
    activation's ops in the graph); not a good model, only a faithful-export check."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 500, (1000, 2)).astype("float64")
    inputs = fit_normalization("log", x)
    target = fit_normalization("log", (x[:, 0] * x[:, 1]).reshape(-1, 1))
    return build(_spec(layers, activation, "log", "log"), 2, inputs, target).exported


def promote(
    url: str, operation: str, model: keras.Model, objective: float, *, campaign: str = "arith",
    trial: int = 0,
) -> ModelEntry:
    """Store `model` as the new best of `operation` (objective must beat the current best)."""
    with ModelRegistry(url) as registry:
        entry = registry.promote_if_better(
            ModelCandidate(
                campaign=campaign, operation=operation, study_name=f"{campaign}.{operation}",
                trial_number=trial, objective_value=objective,
                metrics={"test_mae": objective, "test_hit_rate": 1.0},
                params={"architecture": model.name, "input_normalization": "hand-built"},
                model_bytes=serialize_model(model), keras_version=keras.__version__,
                tensorflow_version="2",
            )
        )
    assert entry is not None, f"{operation} objective {objective} did not beat the best"
    return entry
