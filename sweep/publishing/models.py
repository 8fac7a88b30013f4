"""The registry's models, handed out: load, predict, list. Reads storage only.

Keras loads only where a model is loaded (pull, load, predict); listing the registry (`sweep
best`, `sweep models`) reads SQL and never starts TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from storage import Database, ModelEntry
from sweep.errors import ConfigError
from sweep.problem.operations import Operation
from sweep.publishing.lookup import check_operation_name, fetch_model, resolve_operation
from sweep.search.config import DEFAULT_CAMPAIGN

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class Prediction:
    operation: str
    inputs: tuple[float, ...]
    output: float
    exact: float | None
    integer_valued: bool
    version: int | None = None

    @property
    def answer(self) -> float:
        """The network's answer as a user reads it: rounded for integer-valued operations."""
        return float(np.rint(self.output)) if self.integer_valued else self.output


def load_best_model(
    operation: str,
    *,
    database: Database,
    campaign: str = DEFAULT_CAMPAIGN,
    version: int | None = None,
) -> keras.Model:
    """The best (or a given version's) model for `operation`, loaded in Keras safe mode (the
    errors `sweep.load_best_model` documents)."""
    entry, data = fetch_model(database, campaign, operation, version)
    from sweep.nets.archive import check_archive

    check_archive(data, label=f"{operation} version {entry.version}")  # before TensorFlow
    from sweep.nets.saving import load_model_bytes

    return load_model_bytes(data, label=f"{operation} version {entry.version}")


def load_best_models(
    operation: str,
    top_k: int = 3,
    *,
    database: Database,
    campaign: str = DEFAULT_CAMPAIGN,
) -> list[keras.Model]:
    """The `top_k` best stored models for `operation`, best first (KerasTuner's
    ``get_best_models``): ranked by validation objective, the newer version first on a tie.

    Raises the errors of `load_best_model`; ConfigError for a `top_k` below 1.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top_k must be a positive integer, got {top_k!r}")
    ranked = sorted(
        model_history(operation, database=database, campaign=campaign),
        key=lambda e: (e.objective_value, -e.version),
    )
    if not ranked:
        fetch_model(database, campaign, operation)  # raises ModelNotFound
    return [
        load_best_model(operation, database=database, campaign=campaign, version=e.version)
        for e in ranked[:top_k]
    ]


def predict(
    operation: str,
    a: float,
    b: float | None = None,
    *,
    database: Database,
    campaign: str = DEFAULT_CAMPAIGN,
) -> Prediction:
    """Run the best model for `operation` on raw inputs."""
    check_operation_name(operation)
    op = resolve_operation(database.campaigns, campaign, operation)
    inputs = check_inputs(op, a, b)
    batch = predict_many(operation, [inputs], database=database, campaign=campaign)
    return batch.row(0)


@dataclass(frozen=True)
class Predictions:
    """Answers of one model version to many inputs (one TensorFlow start for all of them)."""

    operation: str
    version: int
    inputs: npt.NDArray[np.float64]
    outputs: npt.NDArray[np.float64]
    exact: npt.NDArray[np.float64]
    integer_valued: bool

    @property
    def answers(self) -> npt.NDArray[np.float64]:
        """As a user reads them: rounded for integer-valued operations."""
        return np.rint(self.outputs) if self.integer_valued else self.outputs

    def row(self, index: int) -> Prediction:
        return Prediction(
            self.operation,
            tuple(float(v) for v in self.inputs[index]),
            float(self.outputs[index]),
            float(self.exact[index]),
            self.integer_valued,
            self.version,
        )


def predict_many(
    operation: str,
    pairs: npt.ArrayLike,
    *,
    database: Database,
    campaign: str = DEFAULT_CAMPAIGN,
    version: int | None = None,
    fetched: tuple[ModelEntry, bytes] | None = None,
) -> Predictions:
    """Run the best (or a given version's) model on many raw inputs, shape (n, arity).

    `fetched` is the model as `lookup.fetch_model` returned it, when the caller has read it
    already (`sweep predict` checks it before TensorFlow starts); else it is read here.

    Raises:
        ConfigError: a row of the wrong arity, not finite, beyond 2**53 or outside the
            operation's domain (the message names the first such row).
    """
    check_operation_name(operation)
    op = resolve_operation(database.campaigns, campaign, operation)
    x = np.asarray(pairs, dtype=np.float64)
    if x.ndim == 1 and op.arity == 1:
        x = x.reshape(-1, 1)
    check_pairs(op, x)
    entry, data = fetched or fetch_model(database, campaign, operation, version)
    from sweep.nets.archive import check_archive

    check_archive(data, label=f"{operation} version {entry.version}")  # before TensorFlow
    from sweep.nets.saving import load_model_bytes
    from sweep.nets.training import predict as predict_raw

    model = load_model_bytes(data, label=f"{operation} version {entry.version}")
    outputs = predict_raw(model, x) if len(x) else np.zeros(0)
    exact = op.compute(x[:, 0], x[:, 1] if op.arity == 2 else None)
    return Predictions(operation, entry.version, x, outputs, exact, op.integer_valued)


def check_pairs(
    op: Operation,
    x: npt.NDArray[np.float64],
    *,
    what: str = "row",
    numbers: Sequence[int] | None = None,
) -> None:
    """Refuse inputs no answer can be trusted for, naming the first one: ``{what} N`` with N
    from `numbers` (e.g. line numbers), else the 1-based row.

    Non-finite numbers, magnitudes beyond 2**53 (where a float64 is no longer the number that
    was typed: above it not every integer exists) and points outside the operation's domain.
    """
    from sweep.nets.portable import MAX_EXACT_INPUT

    if x.ndim != 2 or x.shape[1] != op.arity:
        wanted = "one number (a)" if op.arity == 1 else "two numbers (a, b)"
        got = x.shape[1] if x.ndim == 2 else "a different shape"
        raise ConfigError(f"{op.name} takes {wanted} per {what}, got {got}")
    names = ("a", "b")

    def at(i: int) -> str:
        return f"{what} {numbers[i] if numbers is not None else i + 1}"

    def shown(i: int) -> str:
        return ", ".join(f"{n}={v:g}" for n, v in zip(names, x[i], strict=False))

    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        raise ConfigError(f"{at(i)}: {shown(i)} is not a finite number")
    small = (np.abs(x) <= MAX_EXACT_INPUT).all(axis=1)
    if not small.all():
        i = int(np.argmin(small))
        raise ConfigError(
            f"{at(i)}: {shown(i)} is beyond what a float64 model can represent exactly "
            f"(the limit is |x| <= 2**53 = {int(MAX_EXACT_INPUT)})"
        )
    valid = op.valid(*[x[:, k] for k in range(op.arity)])
    if not valid.all():
        i = int(np.argmin(valid))
        raise ConfigError(
            f"{at(i)}: {op.name} is not defined at {shown(i)}; pick inputs in its domain"
        )


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
    check_pairs(op, np.asarray([inputs], dtype=np.float64), what="input")
    return inputs


def model_history(
    operation: str | None = None,
    *,
    database: Database,
    campaign: str = DEFAULT_CAMPAIGN,
) -> list[ModelEntry]:
    """Every promoted version of a campaign (or of one operation), by operation and version."""
    if operation is not None:
        check_operation_name(operation)
        resolve_operation(database.campaigns, campaign, operation)
    return database.registry.history(campaign, operation)


def best_models(
    *, database: Database, campaign: str | None = DEFAULT_CAMPAIGN
) -> list[ModelEntry]:
    """The registry's best model per operation (of one campaign, or of all)."""
    return database.registry.best_all(campaign)
