"""The networks: what the search knows of a model, without Keras.

This package's own namespace is the interface the search uses (KerasTuner's split: the search
proposes a `ModelSpec`, a `Trainer` turns it into a trained model): plain data and protocols,
importable without TensorFlow. The Keras implementation lives in its modules, loaded only by
the code that builds, trains or loads a model:

- `sweep.nets.layers`: the registered normalisation layers (``import sweep.nets.layers`` before
  ``keras.saving.load_model`` on a pulled file);
- `sweep.nets.training`: build, the training loop, the closing least-squares fit, `KerasTrainer`;
- `sweep.nets.least_squares`: that fit's arithmetic and the power family's snapping (NumPy);
- `sweep.nets.saving`: serialise, and load in safe mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from sweep.nets.formula import MAX_FORMULA_TERMS
from sweep.nets.normalization import SCHEMES
from sweep.nets.spec import (
    ACTIVATIONS,
    FAMILIES,
    LOSSES,
    LR_SCHEDULES,
    MAX_DEGREE,
    PRECISIONS,
    ModelSpec,
    count_parameters,
    monomial_exponents,
)

__all__ = [
    "ACTIVATIONS",
    "FAMILIES",
    "LOSSES",
    "LR_SCHEDULES",
    "MAX_DEGREE",
    "MAX_FORMULA_TERMS",
    "PRECISIONS",
    "SCHEMES",
    "EpochCallback",
    "ExportableModel",
    "ModelSpec",
    "Predictor",
    "TrainedModel",
    "Trainer",
    "count_parameters",
    "monomial_exponents",
]

FloatArray = npt.NDArray[np.float64]

# Called after every epoch with the epoch index and the raw validation predictions; may raise
# (to prune, or to stop on a signal).
EpochCallback = Callable[[int, FloatArray], None]


class Predictor(Protocol):
    """Anything that maps raw inputs, shape (n, arity), to raw float64 results, shape (n,)."""

    def predict(self, x: npt.ArrayLike) -> FloatArray: ...


class ExportableModel(Predictor, Protocol):
    """A model that answers and can hand out its self-contained saved form."""

    def to_bytes(self) -> bytes:
        """The saved model (a ``.keras`` archive), as the registry stores it."""
        ...


class TrainedModel(ExportableModel, Protocol):
    """A trained network as the search sees it: answers, its saved form, how training went."""

    @property
    def epochs_run(self) -> int: ...

    @property
    def train_seconds(self) -> float: ...

    @property
    def refitted(self) -> bool: ...

    @property
    def stopped_reason(self) -> str | None: ...


class Trainer(Protocol):
    """Builds and trains a `ModelSpec`, and loads saved models back (safely)."""

    def train(
        self,
        spec: ModelSpec,
        x_train: npt.NDArray[np.generic],
        y_train: FloatArray,
        x_val: npt.NDArray[np.generic],
        y_val: FloatArray,
        *,
        on_epoch: EpochCallback | None = None,
        max_seconds: float = 300.0,
        seed: int = 0,
    ) -> TrainedModel:
        """Train one model. Raises `sweep.errors.TrialFailure` when training diverges."""
        ...

    def load(self, data: bytes, *, label: str) -> Predictor:
        """Load saved bytes in safe mode. Raises `sweep.errors.ModelLoadError`."""
        ...

    def versions(self) -> dict[str, str]:
        """Framework versions recorded with a promoted model: ``keras``, ``tensorflow``."""
        ...
