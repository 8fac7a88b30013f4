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
import sqlalchemy
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


def test_one_damaged_best_row_costs_only_its_own_operation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Round three, case 6: a `sweep_best` row pointing at another operation's version made
    every poll fail, so healthy operations answered 404 while /healthz said ok."""
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    promote(url, "add", exact_add(), 1.0)
    promote(url, "multiply", exact_multiply(), 1.0)
    store = ModelStore(Database(url), "arith", None, "tensorflow")
    try:
        store.refresh()
        assert store.versions() == {"add": 1, "multiply": 1}
        engine = sqlalchemy.create_engine(url)
        with engine.begin() as connection:
            add_id = connection.execute(
                sqlalchemy.text("SELECT id FROM sweep_model_versions WHERE operation = 'add'")
            ).scalar_one()
            connection.execute(
                sqlalchemy.text(
                    "UPDATE sweep_best SET version_id = :id WHERE operation = 'multiply'"
                ),
                {"id": add_id},
            )
        engine.dispose()
        promote(url, "add", exact_add(bias=0.0), 0.5)  # a healthy operation moves on
        with caplog.at_level(logging.WARNING, logger="sweep.serve"):
            store.refresh()
            store.refresh()  # the same damage is logged once
        assert store.versions() == {"add": 2, "multiply": 1}
        warnings = [r.message for r in caplog.records if r.message.startswith("multiply:")]
        assert len(warnings) == 1 and "still serving version 1" in warnings[0], warnings
        status = store.status("multiply")
        assert status.state == "AVAILABLE" and "points at a model of arith/add" in status.error
    finally:
        store.stop()


def test_a_replaced_database_file_is_noticed_and_read_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Round three, case 6: a SQLite file replaced under a running serve (a restored backup)
    was polled as the deleted file forever, silently."""
    live, backup = tmp_path / "sweeps.db", tmp_path / "backup.db"
    promote(f"sqlite:///{live}", "add", exact_add(bias=0.25), 1.0)
    promote(f"sqlite:///{backup}", "add", exact_add(), 1.0)
    promote(f"sqlite:///{backup}", "add", exact_add(), 0.5)  # the backup is at version 2
    store = ModelStore(Database(f"sqlite:///{live}", read_only=True), "arith", None, "tensorflow")
    try:
        store.refresh()
        assert store.versions() == {"add": 1}
        backup.replace(live)  # a new file (a new inode) under the same name
        for companion in ("-wal", "-shm"):
            Path(f"{live}{companion}").unlink(missing_ok=True)
        with caplog.at_level(logging.WARNING, logger="sweep.serve"):
            store.refresh()
        assert store.versions() == {"add": 2}
        assert any("was replaced" in r.message for r in caplog.records)
        served = store.served("add")
        assert served is not None
        assert served.predictor.predict(np.asarray([[2.0, 3.0]])).tolist() == [5.0]
    finally:
        store.stop()
