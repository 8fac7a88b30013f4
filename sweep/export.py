"""Promotion of a trial's model into the registry, and loading models back safely.

Only models that load back in Keras safe mode and reproduce the trial's validation metric are
promoted; the check runs before the registry's transaction, so a model that fails it never
becomes visible.
"""

from __future__ import annotations

import math
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from storage import ModelCandidate, ModelEntry, ModelRegistry
from sweep.data import Dataset
from sweep.errors import SweepError
from sweep.metrics import evaluate
from sweep.model import predict

# A reloaded model must reproduce the trial's validation metric to this relative tolerance.
REPRODUCE_TOLERANCE = 1e-5


class ModelLoadError(SweepError):
    """A stored model cannot be loaded safely (unknown layer, Lambda, other Keras version)."""


def serialize_model(model: keras.Model) -> bytes:
    """The `.keras` archive's bytes (weights, config; no pickles)."""
    with tempfile.TemporaryDirectory(prefix="sweep-export-") as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        return path.read_bytes()


def load_model_bytes(data: bytes, *, label: str = "model") -> keras.Model:
    """Load a `.keras` archive in safe mode; refuse anything Keras would have to execute."""
    with tempfile.TemporaryDirectory(prefix="sweep-load-") as folder:
        path = Path(folder) / "model.keras"
        path.write_bytes(data)
        return load_model_file(path, label=label)


def load_model_file(path: str | Path, *, label: str | None = None) -> keras.Model:
    """`keras.saving.load_model` with safe mode on, errors turned into one line."""
    name = label or str(path)
    if not Path(path).is_file():
        raise ModelLoadError(f"{name} is not a file")
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" about a file it found
        raise ModelLoadError(f"{name} is not a .keras archive (not a zip file)")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types; all mean "not a model we can trust"
        raise ModelLoadError(f"cannot load {name} in safe mode: {_root_reason(e)}") from None
    if not isinstance(model, keras.Model):
        raise ModelLoadError(f"{name} is not a Keras model")
    return model


def _root_reason(error: BaseException) -> str:
    """The first sentence of the innermost error: Keras wraps "Could not locate class 'X'" in a
    generic "Functional could not be deserialized properly" whose first line names nothing."""
    seen: set[int] = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = error.__cause__ or error.__context__
        if inner is None:
            break
        error = inner
    text = " ".join(str(error).split())
    if not text:
        return type(error).__name__
    return re.split(r"(?<=\.)\s", text, maxsplit=1)[0][:300]


def check_compatible(entry: ModelEntry) -> None:
    """Refuse a model saved by another major Keras version (its format may not load)."""
    saved = entry.keras_version.split(".")[0]
    running = keras.__version__.split(".")[0]
    if saved != running:
        raise ModelLoadError(
            f"{entry.operation} version {entry.version} was saved by Keras {entry.keras_version}; "
            f"this is Keras {keras.__version__} (major versions must match)"
        )


def promote(
    registry: ModelRegistry,
    *,
    campaign: str,
    dataset: Dataset,
    study_name: str,
    trial_number: int,
    model: keras.Model,
    metrics: dict[str, float],
    params: dict[str, Any],
    objective: str,
) -> ModelEntry | None:
    """Promote `model` if it beats the registry's best for its operation; None otherwise."""
    operation = dataset.operation.name
    value = metrics[f"val_{objective}"]
    if not math.isfinite(value):
        return None
    current = registry.best(campaign, operation)
    if current is not None and current.objective_value <= value:
        return None  # cheap early exit; promote_if_better re-checks under its lock
    data = serialize_model(model)
    reloaded = load_model_bytes(data, label=f"trial {trial_number}'s model")
    reproduced = evaluate(
        predict(reloaded, dataset.x_val), dataset.y_val, dataset.operation.integer_valued
    ).as_dict("val_")[f"val_{objective}"]
    if not np.isclose(reproduced, value, rtol=REPRODUCE_TOLERANCE, atol=1e-9):
        raise SweepError(
            f"trial {trial_number}'s reloaded model gives validation {objective} {reproduced:.9g}, "
            f"not {value:.9g}; not promoted"
        )
    candidate = ModelCandidate(
        campaign=campaign,
        operation=operation,
        study_name=study_name,
        trial_number=trial_number,
        objective_value=value,
        metrics={k: v for k, v in metrics.items() if math.isfinite(v)},
        params=params,
        model_bytes=data,
        keras_version=keras.__version__,
        tensorflow_version=tf.__version__,
    )
    return registry.promote_if_better(candidate)
