"""The original question's generator and the sampling built on it: integers in [low, high).

Kept exactly as it was for one or two inputs over the campaign's ``[data]`` range, so every
stored campaign regenerates the same data (and fingerprint). It draws with the question's own
generator (uniform integers, all of column a, then all of column b), lists small ranges
exactly and probes large ones, rejects inputs outside the operation's domain, holds out test
inputs the network never sees and adds an extrapolation band just above the range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from sweep.errors import ConfigError
from sweep.problem.operations import Operation
from sweep.problem.sampling import Splits

if TYPE_CHECKING:
    from sweep.problem.data import DataSpec

__all__ = ["create_data", "extrapolation_band", "original_splits"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Ranges with at most this many distinct inputs are listed exactly (1M pairs is ~16 MB).
_LISTABLE = 1 << 20
_PROBES = 4096
_GRID_POINTS = 65
# The held-out test inputs take at most this share of the distinct valid inputs.
_HELD_OUT_SHARE = 0.1
_MAX_ROUNDS = 64
_MAX_BATCH = 1 << 20
_MAX_EXPECTED_DRAWS = 50_000_000



def create_data(
    low: int, high: int, examples: int, rng: np.random.Generator, arity: int = 2
) -> IntArray:
    """The original question's generator: uniform integers in [low, high), one column per input.

    Kept faithful (all of column a is drawn, then all of column b, with ``rng.integers``) so
    the sweep trains on exactly the distribution the question asked about.

    Args:
        low: Smallest value drawn.
        high: One past the largest value drawn.
        examples: Number of rows.
        rng: The stream to draw from.
        arity: Number of columns (1 or 2).

    Returns:
        int64 array of shape ``(examples, arity)``.

    Raises:
        ConfigError: ``low >= high``, a negative count or an arity other than 1 or 2.
    """
    if arity not in (1, 2):
        raise ConfigError(f"arity must be 1 or 2, got {arity!r}")
    if low >= high:
        raise ConfigError(f"low must be less than high, got low={low}, high={high}")
    if examples < 0:
        raise ConfigError(f"examples must not be negative, got {examples}")
    columns = [rng.integers(low, high, size=examples, dtype=np.int64) for _ in range(arity)]
    return np.stack(columns, axis=1)



# --------------------------------------------------------------------------------------------
# Sampling


def extrapolation_band(low: int, high: int) -> tuple[int, int]:
    """The range ``[start, stop)`` just above [low, high) where extrapolation is measured.

    ``[high, 2 * high)`` as one would naturally pick; when ``high <= 0`` that would be empty
    or backwards, so the band keeps the range's width instead: ``[high, 2 * high - low)``.
    """
    if high > 0:
        return high, 2 * high
    return high, high + (high - low)


@dataclass(frozen=True)
class _Domain:
    """What is known about an operation's valid inputs in one range.

    Small ranges are listed exactly (``valid_keys``); large ones are probed, and the rate is
    then an estimate used only to size redraws.
    """

    low: int
    high: int
    arity: int
    valid_keys: IntArray | None
    valid_rate: float

    @property
    def width(self) -> int:
        return self.high - self.low

    @property
    def size(self) -> int:
        return int(self.width**self.arity)

    def describe(self) -> str:
        names = "a" if self.arity == 1 else "a, b"
        return f"{names} in [{self.low}, {self.high})"


def _keys(x: IntArray, domain: _Domain) -> IntArray:
    """One int64 per input row, so rows can be compared with np.isin and np.unique."""
    offset = x - domain.low
    if domain.arity == 1:
        return offset[:, 0]
    return offset[:, 0] * domain.width + offset[:, 1]


def _from_keys(keys: IntArray, domain: _Domain) -> IntArray:
    if domain.arity == 1:
        return (keys + domain.low)[:, np.newaxis]
    return np.stack([keys // domain.width, keys % domain.width], axis=1) + domain.low


def _columns(x: IntArray, arity: int) -> tuple[IntArray, IntArray | None]:
    return x[:, 0], (x[:, 1] if arity == 2 else None)


def _valid_rows(operation: Operation, x: IntArray) -> BoolArray:
    return operation.valid(*_columns(x, operation.arity))


def _targets(operation: Operation, x: IntArray) -> FloatArray:
    return operation.compute(*_columns(x, operation.arity))



def _grid(low: int, high: int, arity: int) -> IntArray:
    """Evenly spread points plus the usual trouble spots (0, ±1, the ends) for probing."""
    axis = np.linspace(low, high - 1, _GRID_POINTS).round().astype(np.int64)
    special = np.array([low, high - 1, -1, 0, 1], dtype=np.int64)
    special = special[(special >= low) & (special < high)]
    values = np.unique(np.concatenate([axis, special]))
    if arity == 1:
        return values[:, np.newaxis]
    first, second = np.meshgrid(values, values, indexing="ij")
    return np.stack([first.ravel(), second.ravel()], axis=1)


def _survey(
    operation: Operation, low: int, high: int, rng: np.random.Generator, what: str
) -> _Domain:
    """Learn where ``operation`` is defined in a range, failing early when it is nowhere."""
    domain = _Domain(low, high, operation.arity, None, 1.0)
    if domain.size <= _LISTABLE:
        keys = np.arange(domain.size, dtype=np.int64)
        valid_keys = keys[_valid_rows(operation, _from_keys(keys, domain))]
        found = len(valid_keys)
        domain = _Domain(low, high, operation.arity, valid_keys, found / domain.size)
        how = "checked every input"
    else:
        grid = _grid(low, high, operation.arity)
        sample = create_data(low, high, _PROBES, rng, domain.arity)
        # The grid finds narrow domains (a == b, a == 0); only the uniform sample is unbiased,
        # so only it estimates the rate, which sizes redraws and the held-out share.
        sampled = int(_valid_rows(operation, sample).sum())
        found = sampled + int(_valid_rows(operation, grid).sum())
        domain = _Domain(low, high, operation.arity, None, max(sampled, 1) / _PROBES)
        how = f"checked {len(grid) + _PROBES} inputs"
    if found == 0:
        raise ConfigError(
            f"operation {operation.name!r} ({operation.description}) has no valid input with "
            f"{domain.describe()} (the {what}; {how}); choose low and high where it is defined"
        )
    return domain


def _draw_valid(
    operation: Operation, domain: _Domain, count: int, rng: np.random.Generator, what: str
) -> IntArray:
    """``count`` draws from the generator, each invalid draw rejected and redrawn.

    The first round draws exactly ``count`` rows, so an operation defined everywhere gets the
    original generator's output unchanged.
    """
    if count / domain.valid_rate > _MAX_EXPECTED_DRAWS:
        raise ConfigError(
            f"operation {operation.name!r} is defined for only about {domain.valid_rate:.4%} of "
            f"{domain.describe()}; {count} {what} would need too many draws; widen the range "
            "or lower the count"
        )
    chunks: list[IntArray] = []
    have = 0
    total = 0
    batch = count
    for _ in range(_MAX_ROUNDS):
        drawn = create_data(domain.low, domain.high, batch, rng, domain.arity)
        kept = drawn[_valid_rows(operation, drawn)]
        chunks.append(kept)
        have += len(kept)
        total += batch
        if have >= count:
            return np.concatenate(chunks)[:count]
        # The observed acceptance rate is better than the probe's estimate once there is one.
        rate = have / total if have else min(domain.valid_rate, 1 / total)
        batch = min(_MAX_BATCH, math.ceil((count - have) / rate * 1.1) + 16)
    raise ConfigError(
        f"could not draw {count} valid {what} for operation {operation.name!r} with "
        f"{domain.describe()} (found {have}); widen the range or lower the count"
    )


def _unique_in_order(keys: IntArray) -> IntArray:
    _, first = np.unique(keys, return_index=True)
    return keys[np.sort(first)]


def _held_out(
    operation: Operation, domain: _Domain, requested: int, rng: np.random.Generator
) -> IntArray:
    """Distinct valid inputs reserved for testing; at most ~10% of all valid inputs."""
    if domain.valid_keys is not None:
        available = len(domain.valid_keys)
        if available < 2:
            raise ConfigError(
                f"operation {operation.name!r} has only {available} valid input with "
                f"{domain.describe()}; at least 2 are needed so a test input can be held out "
                "from training; widen the range"
            )
        count = min(requested, max(1, int(available * _HELD_OUT_SHARE)))
        chosen = domain.valid_keys[rng.choice(available, size=count, replace=False)]
        return _from_keys(chosen, domain)
    estimated = domain.valid_rate * domain.size
    count = min(requested, max(1, int(estimated * _HELD_OUT_SHARE)))
    keys = np.empty(0, dtype=np.int64)
    for _ in range(_MAX_ROUNDS):
        missing = count - len(keys)
        if missing <= 0:
            break
        fresh = _keys(_draw_valid(operation, domain, missing, rng, "test inputs"), domain)
        keys = _unique_in_order(np.concatenate([keys, fresh]))
    return _from_keys(keys[:count], domain)



def original_splits(
    operation: Operation, spec: DataSpec, streams: dict[str, np.random.Generator]
) -> Splits:
    """Generate every split for ``operation`` with the original question's generator.

    Steps: check that the range and the extrapolation band both hold valid inputs (before
    drawing anything); draw the held-out test inputs; draw ``spec.examples`` rows with the
    original generator (invalid rows redrawn) and drop every row that equals a test input;
    split a random ``validation_fraction`` of what remains off as validation; draw the
    extrapolation rows from ``extrapolation_band(low, high)``.

    """
    band_low, band_high = extrapolation_band(spec.low, spec.high)
    inside = _survey(operation, spec.low, spec.high, streams["probe_range"], "training range")
    band = _survey(operation, band_low, band_high, streams["probe_band"], "extrapolation band")

    x_test = _held_out(operation, inside, spec.test_examples, streams["test"])
    pool = _draw_valid(operation, inside, spec.examples, streams["train"], "training examples")
    pool = pool[~np.isin(_keys(pool, inside), _keys(x_test, inside))]

    validation_count = max(1, round(spec.validation_fraction * len(pool)))
    if len(pool) - validation_count < 1:
        raise ConfigError(
            f"only {len(pool)} training examples of operation {operation.name!r} remain after "
            f"holding out {len(x_test)} test inputs with {inside.describe()}; widen the range "
            "or raise examples"
        )
    picked = streams["validation"].choice(len(pool), size=validation_count, replace=False)
    in_validation = np.zeros(len(pool), dtype=np.bool_)
    in_validation[picked] = True
    # Masks keep the generator's order within each split.
    x_train, x_val = pool[~in_validation], pool[in_validation]

    x_extrapolation = _draw_valid(
        operation,
        band,
        spec.extrapolation_examples,
        streams["extrapolation"],
        "extrapolation examples",
    )
    return Splits(
        x_train, x_val, x_test, x_extrapolation,
        _targets(operation, x_train), _targets(operation, x_val), _targets(operation, x_test),
        _targets(operation, x_extrapolation), bounds=(),
    )
