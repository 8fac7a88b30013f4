"""Promotion as a unit, with a real trained model and a real registry (SQLite)."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import ModelRegistry
from sweep.errors import SweepError
from sweep.nets import ModelSpec
from sweep.nets.training import KerasTrainer, TrainingResult
from sweep.problem.data import DataSpec, make_dataset
from sweep.problem.metrics import evaluate_splits
from sweep.problem.operations import BUILTIN_OPERATIONS
from sweep.search.promotion import Promoter

LINEAR = ModelSpec(
    hidden_layers=(), activation="linear", input_normalization="none",
    target_normalization="none", learning_rate=0.01, batch_size=128, loss="mse", epochs=2,
    lr_schedule="cosine", refit_output=True,
)


@pytest.fixture(scope="module")
def trained() -> tuple[TrainingResult, object]:
    dataset = make_dataset(BUILTIN_OPERATIONS["add"], DataSpec(examples=2000))
    result = KerasTrainer().train(
        LINEAR, dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val
    )
    return result, dataset


def _promoter(tmp_path: Path) -> Promoter:
    registry = ModelRegistry(f"sqlite:///{tmp_path / 'registry.db'}")
    return Promoter(registry, KerasTrainer(), "arith", "mae")


def test_better_models_enter_the_registry_and_worse_ones_do_not(
    tmp_path: Path, trained: tuple[TrainingResult, object]
) -> None:
    model, dataset = trained
    promoter = _promoter(tmp_path)
    metrics = evaluate_splits(model.predict, dataset)  # type: ignore[arg-type]
    kwargs = dict(dataset=dataset, study_name="arith.add", model=model, params={})
    first = promoter.promote(trial_number=0, metrics=metrics, **kwargs)  # type: ignore[arg-type]
    assert first is not None and first.version == 1
    assert first.keras_version and first.tensorflow_version
    # The same validation error again is not better: nothing new is stored.
    assert promoter.promote(trial_number=1, metrics=metrics, **kwargs) is None  # type: ignore[arg-type]
    assert [e.version for e in promoter.registry.history("arith", "add")] == [1]
    promoter.registry.close()


def test_a_model_that_does_not_reproduce_its_metric_is_refused(
    tmp_path: Path, trained: tuple[TrainingResult, object]
) -> None:
    model, dataset = trained
    promoter = _promoter(tmp_path)
    metrics = evaluate_splits(model.predict, dataset)  # type: ignore[arg-type]
    claimed = {**metrics, "val_mae": metrics["val_mae"] + 1.0}  # not what the saved model does
    with pytest.raises(SweepError, match="reloaded model gives validation mae"):
        promoter.promote(
            dataset=dataset, study_name="arith.add", trial_number=0,  # type: ignore[arg-type]
            model=model, metrics=claimed, params={},
        )
    assert promoter.registry.history("arith", "add") == []
    promoter.registry.close()
