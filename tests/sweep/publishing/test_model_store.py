"""The model store in-process, without HTTP: what a poll loads, swaps, refuses and leaves alone.

The TensorFlow backend keeps these quick (no converter child); `test_serve` covers onnxruntime
and the swap under concurrent requests.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import pytest
from _hand_models import exact_add, exact_multiply, promote

from storage import Database, ModelCandidate, ModelRegistry
from sweep.publishing.model_store import ModelStore

pytestmark = pytest.mark.slow


def _promote_junk(url: str, operation: str, objective: float) -> None:
    """A new best whose bytes are no Keras model: it passes the registry, not the loader."""
    with ModelRegistry(url) as registry:
        registry.promote_if_better(ModelCandidate(
            campaign="arith", operation=operation, study_name=f"arith.{operation}",
            trial_number=9, objective_value=objective, metrics={}, params={},
            model_bytes=b"not a keras file", keras_version=keras.__version__,
            tensorflow_version="2",
        ))


def test_a_newer_best_is_swapped_in_whole_and_a_broken_one_refused_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    promote(url, "add", exact_add(bias=0.25), 1.0)
    store = ModelStore(Database(url), "arith", None, "tensorflow")
    try:
        assert store.served("add") is None and store.status("add").state == ""
        store.refresh()
        first = store.served("add")
        assert first is not None and first.entry.version == 1 and first.backend == "tensorflow"
        assert store.status("add").state == "AVAILABLE"

        promote(url, "add", exact_add(), 0.5)
        store.refresh()
        second = store.served("add")
        assert second is not None and store.versions() == {"add": 2}
        x = np.asarray([[2.0, 3.0]])
        assert first.predictor.predict(x).tolist() == [5.25]  # the old one, untouched
        assert second.predictor.predict(x).tolist() == [5.0]

        _promote_junk(url, "add", 0.25)
        with caplog.at_level(logging.WARNING, logger="sweep.serve"):
            store.refresh()
            store.refresh()  # the same broken version is not tried again
        refusals = [r for r in caplog.records if "add version 3 cannot be served" in r.message]
        assert len(refusals) == 1 and "still serving version 2" in refusals[0].message
        status = store.status("add")
        assert status.state == "AVAILABLE" and status.failed is not None
        assert status.failed[0] == 3 and "add version 3 cannot be served" in status.error
        assert store.served("add") is second
    finally:
        store.stop()


def test_only_the_operations_asked_for_are_loaded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    promote(url, "add", exact_add(), 1.0)
    store = ModelStore(Database(url), "arith", ["multiply"], "tensorflow")
    try:
        store.refresh()
        assert not store.is_known("add") and store.served("add") is None
        assert store.is_known("multiply")
        assert store.status("multiply").error == "no model promoted yet"
        promote(url, "multiply", exact_multiply(), 1.0)
        store.refresh()
        assert store.versions() == {"multiply": 1}
    finally:
        store.stop()
