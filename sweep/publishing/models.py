"""The registry's models, handed out: pull to a file, load, predict, list. Reads storage only.

Keras loads only where a model is loaded (pull, load, predict); listing the registry (`sweep
best`, `sweep models`) reads SQL and never starts TensorFlow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from storage import ModelEntry, ModelRegistry, resolve_storage_url
from sweep import settings
from sweep.errors import ConfigError
from sweep.problem.operations import (
    BUILTIN_OPERATIONS,
    Operation,
    is_operation_name,
    make_operation,
)
from sweep.publishing.outputs import check_output_path, write_atomically
from sweep.search.config import DEFAULT_CAMPAIGN, CampaignConfig, validate_campaign_name

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class Prediction:
    operation: str
    inputs: tuple[float, ...]
    output: float
    exact: float | None
    integer_valued: bool

    @property
    def answer(self) -> float:
        """The network's answer as a user reads it: rounded for integer-valued operations."""
        return float(np.rint(self.output)) if self.integer_valued else self.output


def storage_url(storage: str | None) -> str:
    """`storage`, else ``$SWEEP_STORAGE``, else the SQLite default; validated."""
    return resolve_storage_url(storage, settings.current().storage)


def _registry(storage: str | None) -> ModelRegistry:
    return ModelRegistry(storage_url(storage))


def check_operation_name(name: str) -> None:
    """Refuse a name no operation can have (``../x``, control characters) before any storage
    is opened, so a mistyped command never creates a database file."""
    if not is_operation_name(name):
        raise ConfigError(
            f"unknown operation {name!r}; operation names are a lowercase letter, then "
            f"lowercase letters, digits or _ (built-ins: {', '.join(BUILTIN_OPERATIONS)})"
        )


def resolve_operation(registry: ModelRegistry, campaign: str, name: str) -> Operation:
    """A built-in, or an expression defined in the stored campaign; else a clear error."""
    validate_campaign_name(campaign)
    if name in BUILTIN_OPERATIONS:
        return BUILTIN_OPERATIONS[name]
    stored = registry.load_campaign(campaign)
    expressions = CampaignConfig.from_dict(stored).expressions if stored else {}
    if name in expressions:
        return make_operation(name, expressions[name])
    known = sorted({*BUILTIN_OPERATIONS, *expressions})
    raise ConfigError(
        f"unknown operation {name!r} in campaign {campaign!r}; known: {', '.join(known)}"
    )


def fetch_model(
    operation: str,
    *,
    storage: str | None = None,
    campaign: str = DEFAULT_CAMPAIGN,
    version: int | None = None,
) -> tuple[ModelEntry, bytes]:
    """The registry entry and verified `.keras` bytes (checksum checked by the registry)."""
    check_operation_name(operation)
    with _registry(storage) as registry:
        resolve_operation(registry, campaign, operation)
        entry, data = registry.fetch(campaign, operation, version)
    from sweep.nets.saving import check_keras_version

    check_keras_version(entry.keras_version, label=f"{entry.operation} version {entry.version}")
    return entry, data


def load_best_model(
    operation: str,
    *,
    storage: str | None = None,
    campaign: str = DEFAULT_CAMPAIGN,
    version: int | None = None,
) -> keras.Model:
    """The best (or a given version's) model for `operation`, loaded in Keras safe mode.

    Raises:
        ConfigError: unknown operation. storage.ModelNotFound: no model yet.
        storage.ChecksumMismatch: corrupted blob. sweep.nets.saving.ModelLoadError: unsafe or
        incompatible model.
    """
    entry, data = fetch_model(operation, storage=storage, campaign=campaign, version=version)
    from sweep.nets.saving import load_model_bytes

    return load_model_bytes(data, label=f"{operation} version {entry.version}")


def predict(
    operation: str,
    a: float,
    b: float | None = None,
    *,
    storage: str | None = None,
    campaign: str = DEFAULT_CAMPAIGN,
) -> Prediction:
    """Run the best model for `operation` on raw inputs."""
    check_operation_name(operation)
    with _registry(storage) as registry:
        op = resolve_operation(registry, campaign, operation)
    inputs = check_inputs(op, a, b)
    model = load_best_model(operation, storage=storage, campaign=campaign)
    x = np.asarray([inputs], dtype=np.float64)
    from sweep.nets.training import predict as predict_raw

    output = float(predict_raw(model, x)[0])
    exact = float(op.compute(x[:, 0], x[:, 1] if op.arity == 2 else None)[0])
    return Prediction(operation, inputs, output, exact, op.integer_valued)


def check_inputs(op: Operation, a: float, b: float | None) -> tuple[float, ...]:
    if op.arity == 1 and b is not None:
        raise ConfigError(f"{op.name} takes one input (a), got two: {a}, {b}")
    if op.arity == 2 and b is None:
        raise ConfigError(f"{op.name} takes two inputs (a b), got one: {a}")
    inputs = (float(a),) if op.arity == 1 else (float(a), float(b))  # type: ignore[arg-type]
    arrays = [np.asarray([v]) for v in inputs]
    if not bool(op.valid(*arrays)[0]):
        names = ("a", "b")
        shown = ", ".join(f"{n}={v:g}" for n, v in zip(names, inputs, strict=False))
        raise ConfigError(f"{op.name} is not defined at {shown}; pick inputs in its domain")
    return inputs


def pull_model(
    operation: str,
    output: str | os.PathLike[str] | None = None,
    *,
    storage: str | None = None,
    campaign: str = DEFAULT_CAMPAIGN,
    version: int | None = None,
    force: bool = False,
) -> tuple[ModelEntry, Path]:
    """Write the model to `output` (default ``OP.keras``); never through a symlink, never over
    an existing file unless `force`, and only complete files (temp file + rename)."""
    check_operation_name(operation)
    if output is not None and os.fspath(output).endswith(("/", os.sep)):
        # Path() would drop the slash and write a file where the user named a folder.
        raise ConfigError(f"output path {os.fspath(output)!r} names a folder, not a .keras file")
    path = Path(output) if output is not None else Path(f"{operation}.keras")
    check_output_path(path, force=force, suffix=".keras", storage_url=storage_url(storage))
    entry, data = fetch_model(operation, storage=storage, campaign=campaign, version=version)
    # Load before writing: a file we hand out must be one that loads in safe mode.
    from sweep.nets.saving import load_model_bytes

    load_model_bytes(data, label=f"{operation} version {entry.version}")
    write_atomically(path, data, force=force)
    return entry, path


def model_history(
    operation: str | None = None,
    *,
    storage: str | None = None,
    campaign: str = DEFAULT_CAMPAIGN,
) -> list[ModelEntry]:
    if operation is not None:
        check_operation_name(operation)
    with _registry(storage) as registry:
        if operation is not None:
            resolve_operation(registry, campaign, operation)
        return registry.history(campaign, operation)


def best_models(
    *, storage: str | None = None, campaign: str | None = DEFAULT_CAMPAIGN
) -> list[ModelEntry]:
    with _registry(storage) as registry:
        return registry.best_all(campaign)
