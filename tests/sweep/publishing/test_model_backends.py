"""From registry bytes to predictors: the backend choice, and a bad model reported, not raised."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _hand_models import exact_add, promote

from sweep.errors import ConfigError
from sweep.nets.portable import ONNX_MODULES, missing_modules
from sweep.nets.saving import serialize_model
from sweep.problem.data import DataSpec
from sweep.problem.operations import BUILTIN_OPERATIONS
from sweep.publishing.model_backends import (
    ModelToConvert,
    OnnxConverter,
    choose_backend,
    load_tensorflow,
)


def test_the_backend_choice() -> None:
    with pytest.raises(ConfigError, match="unknown backend 'cuda'; choose one of auto"):
        choose_backend("cuda")
    assert choose_backend("tensorflow") == "tensorflow"
    expected = "tensorflow" if missing_modules(ONNX_MODULES) else "onnxruntime"
    assert choose_backend("auto") == expected


@pytest.mark.slow
def test_each_model_gets_a_predictor_or_its_reason(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    model = exact_add(bias=0.5)
    entry = promote(url, "add", model, 1.0)
    data = serialize_model(model)
    x = np.asarray([[1.0, 2.0]])

    loaded = load_tensorflow(entry, data)
    assert not isinstance(loaded, str) and loaded.predict(x).tolist() == [3.5]
    assert isinstance(load_tensorflow(entry, b"junk"), str)

    if missing_modules(ONNX_MODULES):
        pytest.skip("the onnx extra is not installed")
    add = BUILTIN_OPERATIONS["add"]
    good, bad = OnnxConverter().convert(
        [ModelToConvert(entry, data, add), ModelToConvert(entry, b"junk", add)], DataSpec()
    )
    assert not isinstance(good, str) and good.predict(x).tolist() == [3.5]
    assert isinstance(bad, str) and bad  # one bad model does not sink the batch
