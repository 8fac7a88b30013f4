"""The registry's models, handed out: load, predict, list. Reads storage only.

Keras loads only where a model is loaded (pull, load, predict); listing the registry (`sweep
best`, `sweep models`) reads SQL and never starts TensorFlow.

An operation takes 1 to 10 named inputs, in its `inputs` order. Rows are given in that order,
or by name (a mapping of name to value, or of name to column). An answer is rounded only where
both the operation is integer-valued and every input of the row is a whole number; an answer
beyond 2**53 is flagged, since float64 no longer holds every whole number there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from storage import Database, ModelEntry
from sweep.errors import ConfigError
from sweep.problem.expressions import show
from sweep.problem.operations import Operation
from sweep.publishing.lookup import check_operation_name, fetch_model, resolve_operation
from sweep.search.config import DEFAULT_CAMPAIGN

if TYPE_CHECKING:
    import keras

__all__ = [
    "EXACT_LIMIT",
    "Prediction",
    "Predictions",
    "answers_of",
    "arrange_named",
    "as_rows",
    "best_models",
    "beyond_exact",
    "check_inputs",
    "check_pairs",
    "load_best_model",
    "load_best_models",
    "model_history",
    "predict",
    "predict_many",
    "rounded_rows",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

EXACT_LIMIT = 2.0**53
"""Up to this magnitude float64 holds every whole number; beyond it, not every one."""


def rounded_rows(x: npt.NDArray[np.float64], integer_valued: bool) -> BoolArray:
    """Which rows' answers are rounded: the operation is integer-valued and every input of the
    row is a whole number (``add 0.1 0.2`` is not rounded, ``add 2 3`` is)."""
    if not integer_valued:
        return np.zeros(len(x), dtype=np.bool_)
    return np.asarray(np.all(x == np.rint(x), axis=1), dtype=np.bool_)


def answers_of(outputs: npt.NDArray[np.float64], rounded: BoolArray) -> FloatArray:
    """The answers as a user reads them: rounded where `rounded` says so, else as computed."""
    return np.where(rounded, np.rint(outputs), outputs).astype(np.float64)


def beyond_exact(answers: npt.NDArray[np.float64]) -> BoolArray:
    """Answers whose magnitude is beyond 2**53 (float64 no longer holds every whole number)."""
    with np.errstate(invalid="ignore"):
        return np.asarray(np.abs(answers) > EXACT_LIMIT, dtype=np.bool_)


def _listing(op: Operation) -> str:
    return ", ".join(op.inputs)


def _shown_row(op: Operation, row: Sequence[float]) -> str:
    return ", ".join(f"{n}={float(v):g}" for n, v in zip(op.inputs, row, strict=False))


@dataclass(frozen=True)
class Prediction:
    """One answer: the inputs (in `names` order), the network's output, the true value (None
    for an operation defined by a table: it has no formula) and the model version."""

    operation: str
    inputs: tuple[float, ...]
    output: float
    exact: float | None
    integer_valued: bool
    version: int | None = None
    names: tuple[str, ...] = ()

    @property
    def rounded(self) -> bool:
        """Whether `answer` is rounded: integer-valued and every input a whole number."""
        return self.integer_valued and all(float(v).is_integer() for v in self.inputs)

    @property
    def answer(self) -> float:
        """The network's answer as a user reads it (rounded only where `rounded`)."""
        return float(np.rint(self.output)) if self.rounded else self.output

    @property
    def beyond_2_53(self) -> bool:
        """The answer's magnitude is beyond 2**53: float64 may not hold it exactly."""
        return abs(self.answer) > EXACT_LIMIT

    @property
    def named_inputs(self) -> dict[str, float]:
        return dict(zip(self.names, self.inputs, strict=False))


@dataclass(frozen=True)
class Predictions:
    """Answers of one model version to many inputs (one TensorFlow start for all of them).

    `inputs` has one row per answer, its columns in `names` order; `exact` is None for an
    operation defined by a table.
    """

    operation: str
    version: int
    inputs: npt.NDArray[np.float64]
    outputs: npt.NDArray[np.float64]
    exact: npt.NDArray[np.float64] | None
    integer_valued: bool
    names: tuple[str, ...] = ()

    @property
    def rounded(self) -> BoolArray:
        """Per row: whether its answer is rounded (see `rounded_rows`)."""
        return rounded_rows(self.inputs, self.integer_valued)

    @property
    def answers(self) -> npt.NDArray[np.float64]:
        """As a user reads them: rounded only where `rounded`."""
        return answers_of(self.outputs, self.rounded)

    @property
    def beyond_2_53(self) -> BoolArray:
        """Per row: the answer's magnitude is beyond 2**53."""
        return beyond_exact(self.answers)

    def column(self, name: str) -> npt.NDArray[np.float64]:
        """The inputs given for one named input."""
        if name not in self.names:
            raise ConfigError(
                f"{self.operation} has no input {name!r}; its inputs are {', '.join(self.names)}"
            )
        return self.inputs[:, self.names.index(name)]

    def row(self, index: int) -> Prediction:
        return Prediction(
            self.operation,
            tuple(float(v) for v in self.inputs[index]),
            float(self.outputs[index]),
            None if self.exact is None else float(self.exact[index]),
            self.integer_valued,
            self.version,
            self.names,
        )


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
    *values: float | Mapping[str, float] | None,
    database: Database,
    campaign: str = DEFAULT_CAMPAIGN,
) -> Prediction:
    """Run the best model for `operation` on one row of raw inputs: the values in the
    operation's `inputs` order (``predict("add", 2, 3)``), or one mapping of name to value
    (``predict("gas", {"n": 1.5, "R": 8.3, "T": 300, "V": 2})``)."""
    check_operation_name(operation)
    op = resolve_operation(database.campaigns, campaign, operation)
    if len(values) == 1 and isinstance(values[0], Mapping):
        inputs = check_inputs(op, named=values[0])
    else:
        if any(isinstance(v, Mapping) for v in values):
            raise ConfigError(
                f"give {op.name}'s inputs either in order ({_listing(op)}) or as one mapping "
                "of name to value"
            )
        inputs = check_inputs(op, *values)  # type: ignore[arg-type]
    batch = predict_many(operation, [inputs], database=database, campaign=campaign)
    return batch.row(0)


def as_rows(op: Operation, data: Any) -> npt.NDArray[np.float64]:
    """Inputs as a float64 array of shape (n, arity), columns in `op.inputs` order.

    `data`: rows (a nested sequence or array; a flat sequence for a one-input operation), or
    named columns (a mapping of input name to a sequence, or anything with ``keys()`` and
    ``[name]`` such as a pandas DataFrame).

    Raises:
        ConfigError: an unknown or missing name, columns of unequal lengths, or values that
            are not numbers.
    """
    if hasattr(data, "keys") and not isinstance(data, np.ndarray):
        names = [str(k) for k in data.keys()]  # noqa: SIM118 - a DataFrame is no Mapping
        order = arrange_named(op, ((name, name) for name in names), what="column")
        try:
            columns = [np.asarray(data[key], dtype=np.float64).reshape(-1) for key in order]
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{op.name}: a column is not numbers: {e}") from None
        lengths = {name: len(c) for name, c in zip(op.inputs, columns, strict=True)}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{n}: {k}" for n, k in lengths.items())
            raise ConfigError(f"{op.name}: the columns differ in length ({shown})")
        return np.column_stack(columns) if columns else np.zeros((0, op.arity))
    try:
        x = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"{op.name} takes rows of {op.arity} number(s) ({_listing(op)}): {e}"
        ) from None
    if x.ndim == 1 and op.arity == 1:
        x = x.reshape(-1, 1)
    return x


def predict_many(
    operation: str,
    rows: Any,
    *,
    database: Database,
    campaign: str = DEFAULT_CAMPAIGN,
    version: int | None = None,
    fetched: tuple[ModelEntry, bytes] | None = None,
) -> Predictions:
    """Run the best (or a given version's) model on many raw inputs: rows of shape (n, arity)
    in the operation's `inputs` order, or named columns (see `as_rows`).

    `fetched` is the model as `lookup.fetch_model` returned it, when the caller has read it
    already (`sweep predict` checks it before TensorFlow starts); else it is read here.

    Raises:
        ConfigError: a row of the wrong arity, not finite, beyond 2**53 or outside the
            operation's domain (the message names the first such row), or a wrong name.
    """
    check_operation_name(operation)
    op = resolve_operation(database.campaigns, campaign, operation)
    x = as_rows(op, rows)
    check_pairs(op, x)
    entry, data = fetched or fetch_model(database, campaign, operation, version)
    from sweep.nets.archive import check_archive

    check_archive(data, label=f"{operation} version {entry.version}")  # before TensorFlow
    from sweep.nets.saving import load_model_bytes
    from sweep.nets.training import predict as predict_raw

    model = load_model_bytes(data, label=f"{operation} version {entry.version}")
    outputs = predict_raw(model, x) if len(x) else np.zeros(0)
    exact = None if op.table else op.compute_rows(x)
    return Predictions(
        operation, entry.version, x, np.asarray(outputs, dtype=np.float64), exact,
        op.integer_valued, op.inputs,
    )


def check_pairs(
    op: Operation,
    x: npt.NDArray[np.float64],
    *,
    what: str = "row",
    numbers: Sequence[int] | None = None,
) -> None:
    """Refuse inputs no answer can be trusted for, naming the first one: ``{what} N`` with N
    from `numbers` (e.g. line numbers), else the 1-based row; no prefix for `what` "".

    Non-finite numbers, magnitudes beyond 2**53 (where a float64 is no longer the number that
    was typed: above it not every integer exists) and points outside the operation's domain
    (an operation defined by a table has none: every finite row is in it).
    """
    if x.ndim != 2 or x.shape[1] != op.arity:
        wanted = f"{op.arity} number{'s' if op.arity > 1 else ''} ({_listing(op)})"
        got = x.shape[1] if x.ndim == 2 else "a different shape"
        raise ConfigError(f"{op.name} takes {wanted} per {what or 'row'}, got {got}")

    def at(i: int) -> str:
        if not what:
            return ""
        return f"{what} {numbers[i] if numbers is not None else i + 1}: "

    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        raise ConfigError(f"{at(i)}{_shown_row(op, x[i])} is not a finite number")
    small = (np.abs(x) <= EXACT_LIMIT).all(axis=1)
    if not small.all():
        i = int(np.argmin(small))
        raise ConfigError(
            f"{at(i)}{_shown_row(op, x[i])} is beyond what a float64 model can represent "
            f"exactly (the limit is |x| <= 2**53 = {int(EXACT_LIMIT)})"
        )
    if op.table:
        return
    valid = op.valid_rows(x)
    if not valid.all():
        i = int(np.argmin(valid))
        raise ConfigError(
            f"{at(i)}{op.name} is not defined at {_shown_row(op, x[i])}; pick inputs in its "
            "domain"
        )


def arrange_named(
    op: Operation, items: Iterable[tuple[str, Any]], *, what: str = "input"
) -> list[Any]:
    """Values given by name, in `op.inputs` order; every input exactly once.

    Raises:
        ConfigError: one line naming an unknown, repeated or missing name, and the inputs.
    """
    given: dict[str, Any] = {}
    for name, value in items:
        if name not in op.inputs:
            # A name from a request or a command line: quoted and cut, never echoed whole.
            raise ConfigError(
                f"{op.name} has no input {show(str(name), 40)}; its inputs are {_listing(op)}"
            )
        if name in given:
            raise ConfigError(
                f"{what} {show(str(name), 40)} is given twice; give each of {op.name}'s "
                f"inputs ({_listing(op)}) once"
            )
        given[name] = value
    missing = [name for name in op.inputs if name not in given]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise ConfigError(
            f"no value for {op.name}'s {what}{plural} {', '.join(missing)}; its inputs are "
            f"{_listing(op)}"
        )
    return [given[name] for name in op.inputs]


def check_inputs(
    op: Operation, *values: float | None, named: Mapping[str, float] | None = None
) -> tuple[float, ...]:
    """One row of inputs, in order (trailing Nones dropped: ``(a, None)`` is one input) or
    by name, checked as `check_pairs` checks rows; the row in `op.inputs` order."""
    if named is not None:
        if values:
            raise ConfigError(f"give {op.name}'s inputs in order or by name, not both")
        raw: list[Any] = arrange_named(op, named.items())
    else:
        raw = list(values)
        while raw and raw[-1] is None:
            raw.pop()
        if len(raw) != op.arity or any(v is None for v in raw):
            shown = ", ".join("None" if v is None else f"{v}" for v in raw) or "none"
            wanted = "one input" if op.arity == 1 else f"{op.arity} inputs"
            raise ConfigError(f"{op.name} takes {wanted} ({_listing(op)}), got {len(raw)}: {shown}")
    try:
        inputs = tuple(float(v) for v in raw)
    except (TypeError, ValueError):
        bad = next(v for v in raw if not _is_number(v))
        raise ConfigError(f"{op.name}: {str(bad)[:40]!r} is not a number") from None
    check_pairs(op, np.asarray([inputs], dtype=np.float64), what="")
    return inputs


def _is_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


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
