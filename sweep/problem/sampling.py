"""Data for operations beyond the original question: N named inputs, real ranges, tables.

The original generator (`sweep.problem.data`) stays as it is for operations over today's
integer ranges, so every stored campaign keeps its data and fingerprints. Everything else
comes from here: inputs drawn uniformly and independently over their own ranges (integer or
real), undefined points dropped, test inputs held out of training, and an extrapolation band
per input. A table is split, not drawn: the rows beyond a high quantile of any input are the
extrapolation set, the rest is split at random.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from sweep.errors import ConfigError
from sweep.problem.inputs import InputRange
from sweep.problem.operations import Operation

if TYPE_CHECKING:
    from sweep.problem.data import DataSpec
    from sweep.problem.tables import Table

__all__ = [
    "TABLE_HELD_OUT_SHARE",
    "Bounds",
    "Splits",
    "bounds_of",
    "decide_integer_valued",
    "decide_table_integer_valued",
    "draw_splits",
    "effective_ranges",
    "split_table",
    "uses_original_generator",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_PROBES = 4096
_MAX_ROUNDS = 64
_MAX_BATCH = 1 << 20
_MAX_EXPECTED_DRAWS = 50_000_000
# Integer domains with at most this many points are listed, so test inputs are distinct and
# really absent from training; larger (or real) ones are drawn, and rows equal to a test row
# are dropped from training.
_LISTABLE = 1 << 20
_HELD_OUT_SHARE = 0.1
# A table's extrapolation rows: about this share, for independent inputs (see `split_table`).
TABLE_HELD_OUT_SHARE = 0.1


@dataclass(frozen=True)
class Bounds:
    """One input's training range and extrapolation band, as reported (both inclusive of
    their ends for a table, half-open ``[low, high)`` for drawn inputs)."""

    name: str
    kind: str
    low: float
    high: float
    band_low: float
    band_high: float


# int64 from the original generator, float64 from everything else.
AnyArray = npt.NDArray[np.int64] | npt.NDArray[np.float64]


@dataclass(frozen=True)
class Splits:
    x_train: AnyArray
    x_val: AnyArray
    x_test: AnyArray
    x_extrapolation: AnyArray
    y_train: FloatArray
    y_val: FloatArray
    y_test: FloatArray
    y_extrapolation: FloatArray
    bounds: tuple[Bounds, ...]


def effective_ranges(operation: Operation, low: int, high: int) -> tuple[InputRange, ...]:
    """The operation's ranges, or today's default for each input: integers in [low, high)."""
    if operation.ranges:
        return operation.ranges
    return tuple(InputRange(name, low, high, "integer", legacy=True) for name in operation.inputs)


def uses_original_generator(operation: Operation) -> bool:
    """One or two inputs, none with a range of its own: the original question's setting."""
    return (
        not operation.table
        and operation.arity <= 2
        and all(r.legacy for r in operation.ranges)
    )


def bounds_of(ranges: Sequence[InputRange]) -> tuple[Bounds, ...]:
    return tuple(Bounds(r.name, r.kind, r.low, r.high, *r.band) for r in ranges)


def _draw(
    ranges: Sequence[InputRange], count: int, rng: np.random.Generator, band: bool
) -> FloatArray:
    """One column per input, each drawn whole before the next (as the original generator)."""
    if count == 0:
        return np.empty((0, len(ranges)), dtype=np.float64)
    return np.stack([r.draw(rng, count, band=band) for r in ranges], axis=1)


def _describe(ranges: Sequence[InputRange], band: bool) -> str:
    return ", ".join(r.describe(band=band) for r in ranges)


def _survey(
    operation: Operation, ranges: Sequence[InputRange], rng: np.random.Generator, band: bool
) -> float:
    """The share of valid inputs, estimated; fails at once when there is none."""
    sample = _draw(ranges, _PROBES, rng, band)
    found = int(operation.valid_rows(sample).sum())
    if found == 0:
        where = "extrapolation band" if band else "training range"
        raise ConfigError(
            f"operation {operation.name!r} ({operation.description}) has no valid input with "
            f"{_describe(ranges, band)} (the {where}; checked {_PROBES} inputs); choose ranges "
            "where it is defined"
        )
    return found / _PROBES


def _draw_valid(
    operation: Operation,
    ranges: Sequence[InputRange],
    count: int,
    rng: np.random.Generator,
    rate: float,
    what: str,
    band: bool = False,
) -> FloatArray:
    if count / rate > _MAX_EXPECTED_DRAWS:
        raise ConfigError(
            f"operation {operation.name!r} is defined for only about {rate:.4%} of "
            f"{_describe(ranges, band)}; {count} {what} would need too many draws; widen the "
            "ranges or lower the count"
        )
    chunks: list[FloatArray] = []
    have = total = 0
    batch = count
    for _ in range(_MAX_ROUNDS):
        drawn = _draw(ranges, batch, rng, band)
        kept = drawn[operation.valid_rows(drawn)]
        chunks.append(kept)
        have += len(kept)
        total += batch
        if have >= count:
            return np.concatenate(chunks)[:count]
        observed = have / total if have else min(rate, 1 / total)
        batch = min(_MAX_BATCH, math.ceil((count - have) / observed * 1.1) + 16)
    raise ConfigError(
        f"could not draw {count} valid {what} for operation {operation.name!r} with "
        f"{_describe(ranges, band)} (found {have}); widen the ranges or lower the count"
    )


def _row_keys(x: FloatArray) -> npt.NDArray[np.void]:
    """One opaque value per row (its bytes), so rows compare with np.isin and np.unique."""
    canonical = np.ascontiguousarray(x + 0.0)  # -0.0 and 0.0 are one input
    return canonical.view(np.dtype((np.void, canonical.dtype.itemsize * x.shape[1])))[:, 0]


def _domain_size(ranges: Sequence[InputRange]) -> int | None:
    if any(r.kind != "integer" for r in ranges):
        return None
    size = 1
    for r in ranges:
        size *= int(r.high - r.low)
        if size > _LISTABLE:
            return None
    return size


def _held_out(
    operation: Operation,
    ranges: Sequence[InputRange],
    requested: int,
    rng: np.random.Generator,
    rate: float,
) -> FloatArray:
    """Distinct valid inputs reserved for testing; at most ~10% of a finite domain."""
    size = _domain_size(ranges)
    if size is not None:
        axes = [np.arange(int(r.low), int(r.high), dtype=np.float64) for r in ranges]
        grid = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)
        valid = grid[operation.valid_rows(grid)]
        if len(valid) < 2:
            raise ConfigError(
                f"operation {operation.name!r} has only {len(valid)} valid input with "
                f"{_describe(ranges, False)}; at least 2 are needed so a test input can be "
                "held out from training; widen the ranges"
            )
        count = min(requested, max(1, int(len(valid) * _HELD_OUT_SHARE)))
        return valid[np.sort(rng.choice(len(valid), size=count, replace=False))]
    rows = np.empty((0, len(ranges)), dtype=np.float64)
    for _ in range(_MAX_ROUNDS):
        missing = requested - len(rows)
        if missing <= 0:
            break
        fresh = _draw_valid(operation, ranges, missing, rng, rate, "test inputs")
        both = np.concatenate([rows, fresh])
        _, first = np.unique(_row_keys(both), return_index=True)
        rows = both[np.sort(first)]
    return rows[:requested]


def _validation_split(
    pool: FloatArray, fraction: float, rng: np.random.Generator, name: str
) -> tuple[FloatArray, FloatArray]:
    validation_count = max(1, round(fraction * len(pool)))
    if len(pool) - validation_count < 1:
        raise ConfigError(
            f"only {len(pool)} training examples of operation {name!r} remain after holding "
            "out test inputs; widen the ranges or raise examples"
        )
    picked = rng.choice(len(pool), size=validation_count, replace=False)
    in_validation = np.zeros(len(pool), dtype=np.bool_)
    in_validation[picked] = True
    return pool[~in_validation], pool[in_validation]


def draw_splits(
    operation: Operation, spec: DataSpec, streams: dict[str, np.random.Generator]
) -> Splits:
    """Every split of an expression or built-in over its own ranges, from `streams`."""
    ranges = effective_ranges(operation, spec.low, spec.high)
    inside = _survey(operation, ranges, streams["probe_range"], band=False)
    outside = _survey(operation, ranges, streams["probe_band"], band=True)
    x_test = _held_out(operation, ranges, spec.test_examples, streams["test"], inside)
    pool = _draw_valid(
        operation, ranges, spec.examples, streams["train"], inside, "training examples"
    )
    pool = pool[~np.isin(_row_keys(pool), _row_keys(x_test))]
    x_train, x_val = _validation_split(
        pool, spec.validation_fraction, streams["validation"], operation.name
    )
    x_extrapolation = _draw_valid(
        operation, ranges, spec.extrapolation_examples, streams["extrapolation"], outside,
        "extrapolation examples", band=True,
    )
    compute = operation.compute_rows
    return Splits(
        x_train, x_val, x_test, x_extrapolation,
        compute(x_train), compute(x_val), compute(x_test), compute(x_extrapolation),
        bounds_of(ranges),
    )


def split_table(
    operation: Operation, spec: DataSpec, table: Table, streams: dict[str, np.random.Generator]
) -> Splits:
    """A table's rows, split: extrapolation, then test, validation and training at random.

    The extrapolation rows are those above the q-quantile of at least one input, with
    ``q = 0.9 ** (1 / inputs)``: about `TABLE_HELD_OUT_SHARE` of the rows when the inputs are
    independent, however many there are. Training never sees a value of any input above its
    q-quantile. The in-range rows give the test set (10%, at most ``test_examples``), then
    validation (``validation_fraction`` of the rest) and training; ``examples`` does not
    apply, every row is used.
    """
    x, y = table.x, table.y
    inputs = x.shape[1]
    share = (1 - TABLE_HELD_OUT_SHARE) ** (1 / inputs)
    thresholds = np.quantile(x, share, axis=0, method="lower")
    beyond = np.any(x > thresholds, axis=1)
    if not beyond.any():
        raise ConfigError(
            f"table {operation.name!r}: no row lies above the {share:.3f} quantile of any "
            "input, so nothing would measure extrapolation; give more distinct values"
        )
    inside = np.flatnonzero(~beyond)
    order = streams["test"].permutation(inside)
    test_count = min(spec.test_examples, max(1, int(len(order) * _HELD_OUT_SHARE)))
    test, rest = np.sort(order[:test_count]), np.sort(order[test_count:])
    if len(rest) < 2:
        raise ConfigError(
            f"table {operation.name!r}: only {len(rest)} rows remain for training and "
            "validation after holding out test and extrapolation rows; give more rows"
        )
    train_rows, val_rows = _validation_split(
        rest.astype(np.float64)[:, None], spec.validation_fraction, streams["validation"],
        operation.name,
    )
    train, val = train_rows[:, 0].astype(np.intp), val_rows[:, 0].astype(np.intp)
    extrapolation = np.flatnonzero(beyond)
    low, high = x.min(axis=0), x.max(axis=0)
    bounds = tuple(
        Bounds(
            name,
            "integer" if bool(np.all(x[:, k] == np.round(x[:, k]))) else "real",
            float(low[k]),
            float(thresholds[k]),
            float(thresholds[k]),
            float(high[k]),
        )
        for k, name in enumerate(operation.inputs)
    )

    def take(rows: npt.NDArray[np.intp]) -> tuple[FloatArray, FloatArray]:
        return np.array(x[rows], dtype=np.float64), np.array(y[rows], dtype=np.float64)

    (x_tr, y_tr), (x_va, y_va), (x_te, y_te), (x_ex, y_ex) = (
        take(train), take(val), take(test), take(extrapolation)
    )
    return Splits(x_tr, x_va, x_te, x_ex, y_tr, y_va, y_te, y_ex, bounds)


def _whole(values: FloatArray) -> bool:
    return bool(np.all(values == np.round(values)))


def decide_integer_valued(operation: Operation, low: int, high: int) -> bool:
    """Whether the operation is integer-valued, judged from its data, never its name.

    Integer-valued means every input is an integer and every result is a whole number; the
    data are probes drawn over the ranges and the bands (a fixed stream: every host decides
    alike). A table is judged on all its rows by `decide_table_integer_valued`.
    """
    ranges = effective_ranges(operation, low, high)
    if any(r.kind != "integer" for r in ranges):
        return False
    rng = np.random.default_rng(20261207)
    probes = np.concatenate([_draw(ranges, _PROBES, rng, band) for band in (False, True)])
    probes = probes[operation.valid_rows(probes)]
    if len(probes) == 0:
        return operation.integer_valued
    return _whole(operation.compute_rows(probes))


def decide_table_integer_valued(table: Table) -> bool:
    """Every input column and the target hold whole numbers only."""
    return _whole(table.x) and _whole(table.y)
