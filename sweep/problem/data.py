"""Training, validation, test and extrapolation data for one operation, reproducible from a seed.

Three sources, one `Dataset`: the original question's generator for its own setting
(`sweep.problem.original`), draws over named inputs and ranges of their own, and a table's
rows (`sweep.problem.sampling`). Each rejects inputs outside the operation's domain, holds out
test inputs the network never sees and measures extrapolation beyond the training range, so
that a good score means the network learned the operation, not the examples.
"""

from __future__ import annotations

import hashlib
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from sweep.errors import ConfigError
from sweep.problem.operations import Operation
from sweep.problem.original import create_data, extrapolation_band, original_splits
from sweep.problem.sampling import (
    Bounds,
    bounds_of,
    draw_splits,
    effective_ranges,
    split_table,
    uses_original_generator,
)

if TYPE_CHECKING:
    from sweep.problem.tables import Table

__all__ = [
    "DataSpec",
    "Dataset",
    "create_data",
    "extrapolation_band",
    "make_dataset",
]

IntArray = npt.NDArray[np.int64]
AnyArray = npt.NDArray[np.int64] | npt.NDArray[np.float64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Bounds keep every pair key, (a - low) * width + (b - low), and 2 * high inside int64.
_MAX_ABS_BOUND = 10**9
_MAX_COUNT = 100_000_000


def _is_whole(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class DataSpec:
    """How to generate a dataset; stored with a campaign so its data can be regenerated."""

    low: int = 0
    high: int = 500
    examples: int = 10_000
    seed: int = 0
    validation_fraction: float = 0.2
    test_examples: int = 2_000
    extrapolation_examples: int = 2_000

    def __post_init__(self) -> None:
        # numpy scalars are accepted but stored as Python numbers so to_dict stays JSON-able.
        for spec_field in fields(self):
            value = getattr(self, spec_field.name)
            if spec_field.name == "validation_fraction":
                if _is_real(value) and not isinstance(value, float):
                    object.__setattr__(self, spec_field.name, float(value))
            elif _is_whole(value) and type(value) is not int:
                object.__setattr__(self, spec_field.name, int(value))
        self.validate()

    def validate(self) -> None:
        """Check every setting, naming the first bad value and what is allowed.

        Raises:
            ConfigError: a non-integer count or bound, low >= high, bounds beyond ±1e9,
                examples < 10, validation_fraction outside (0, 0.5], test or extrapolation
                examples < 1, a count above 1e8, or a negative seed.
        """
        whole = ("low", "high", "examples", "seed", "test_examples", "extrapolation_examples")
        for name in whole:
            value = getattr(self, name)
            if not _is_whole(value):
                raise ConfigError(f"{name} must be a whole number, got {value!r}")
        for name in ("low", "high"):
            value = getattr(self, name)
            if abs(value) > _MAX_ABS_BOUND:
                raise ConfigError(
                    f"{name}={value} is too large; bounds must lie between "
                    f"-{_MAX_ABS_BOUND:_} and {_MAX_ABS_BOUND:_}"
                )
        if self.low >= self.high:
            raise ConfigError(f"low must be less than high, got low={self.low}, high={self.high}")
        if self.examples < 10:
            raise ConfigError(f"examples must be at least 10, got {self.examples}")
        for name in ("test_examples", "extrapolation_examples"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(
                    f"{name} must be at least 1 (the set may not be empty), got {value}"
                )
        for name in ("examples", "test_examples", "extrapolation_examples"):
            value = getattr(self, name)
            if value > _MAX_COUNT:
                raise ConfigError(f"{name}={value} is too large; the limit is {_MAX_COUNT:_}")
        if self.seed < 0:
            raise ConfigError(f"seed must be 0 or more, got {self.seed}")
        fraction = self.validation_fraction
        if not _is_real(fraction) or not 0 < fraction <= 0.5:
            raise ConfigError(f"validation_fraction must be a number in (0, 0.5], got {fraction!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain fields for a campaign config."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataSpec:
        """Build from a config table; missing fields take their defaults.

        Raises:
            ConfigError: an unknown field or an invalid value.
        """
        allowed = [spec_field.name for spec_field in fields(cls)]
        unknown = sorted(str(key) for key in data if key not in allowed)
        if unknown:
            raise ConfigError(f"unknown data setting {unknown[0]!r}; allowed: {', '.join(allowed)}")
        return cls(**dict(data))


def _fingerprint(named_arrays: list[tuple[str, npt.NDArray[Any]]]) -> str:
    """sha256 over each array's name, dtype, shape and little-endian bytes.

    The header makes the digest unambiguous (moving a row between splits changes it) and the
    fixed byte order makes it the same on every machine.
    """
    digest = hashlib.sha256()
    for name, array in named_arrays:
        canonical = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        digest.update(f"{name}:{canonical.dtype.str}:{canonical.shape};".encode())
        digest.update(canonical.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class Dataset:
    """All splits for one operation; arrays are read-only so the fingerprint stays true.

    ``x_*`` are arrays of shape ``(n, arity)``: int64 from the original generator, float64
    for everything else (named inputs, real ranges, tables); ``y_*`` float64 of shape
    ``(n,)``. ``bounds`` tells each input's training range and extrapolation band. Compare
    datasets by ``fingerprint`` (equality of arrays is not a single bool).
    """

    x_train: AnyArray
    y_train: FloatArray
    x_val: AnyArray
    y_val: FloatArray
    x_test: AnyArray
    y_test: FloatArray
    x_extrapolation: AnyArray
    y_extrapolation: FloatArray
    operation: Operation
    spec: DataSpec
    bounds: tuple[Bounds, ...] = ()
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        named = self._named_arrays()
        for (x_name, x), (y_name, y) in zip(named[::2], named[1::2], strict=True):
            if (
                x.dtype not in (np.int64, np.float64)
                or x.ndim != 2
                or x.shape[1] != self.operation.arity
            ):
                raise ValueError(
                    f"{x_name} must be int64 or float64 of shape (n, {self.operation.arity}), "
                    f"got {x.dtype} {x.shape}"
                )
            if y.dtype != np.float64 or y.shape != (x.shape[0],):
                raise ValueError(
                    f"{y_name} must be float64 of shape ({x.shape[0]},), got {y.dtype} {y.shape}"
                )
            x.setflags(write=False)
            y.setflags(write=False)
        object.__setattr__(self, "fingerprint", _fingerprint(named))
        if not self.bounds:
            ranges = effective_ranges(self.operation, self.spec.low, self.spec.high)
            object.__setattr__(self, "bounds", bounds_of(ranges))

    def _named_arrays(self) -> list[tuple[str, npt.NDArray[Any]]]:
        splits = ("train", "val", "test", "extrapolation")
        names = [f"{kind}_{split}" for split in splits for kind in ("x", "y")]
        return [(name, getattr(self, name)) for name in names]

    @property
    def arity(self) -> int:
        """Number of input columns."""
        return self.operation.arity


def _streams(operation_name: str, seed: int) -> dict[str, np.random.Generator]:
    """Independent generators per purpose, fixed by the seed and the operation's name.

    The name enters through sha256 (Python's hash() is salted per process), so every
    operation gets its own data and a stored study can regenerate it anywhere.
    """
    digest = hashlib.sha256(operation_name.encode("utf-8")).digest()
    # Four fixed words first, then the seed: no two (name, seed) pairs give the same entropy.
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    root = np.random.SeedSequence([*words, seed])
    purposes = ("test", "train", "validation", "extrapolation", "probe_range", "probe_band")
    children = root.spawn(len(purposes))
    return {
        purpose: np.random.default_rng(child)
        for purpose, child in zip(purposes, children, strict=True)
    }


def make_dataset(operation: Operation, spec: DataSpec, table: Table | None = None) -> Dataset:
    """Every split for ``operation``, deterministically from ``spec.seed``.

    A table's operation is split from ``table`` (`sweep.problem.sampling.split_table`); named
    inputs and ranges of their own are drawn by `sweep.problem.sampling.draw_splits`; the
    original question's setting (one or two inputs, integers in [low, high)) by the original
    generator, below, so stored campaigns keep their data.

    Raises:
        ConfigError: the spec is invalid, the operation has no (or only one) valid input in
            the range, none in the band, or too few training rows remain; a table's
            operation without its table.
    """
    spec.validate()
    streams = _streams(operation.name, spec.seed)
    if operation.table:
        if table is None:
            raise ConfigError(f"operation {operation.name!r} is a table, and none was given")
        splits = split_table(operation, spec, table, streams)
    elif uses_original_generator(operation):
        splits = original_splits(operation, spec, streams)
    else:
        splits = draw_splits(operation, spec, streams)
    return Dataset(
        x_train=splits.x_train, y_train=splits.y_train,
        x_val=splits.x_val, y_val=splits.y_val,
        x_test=splits.x_test, y_test=splits.y_test,
        x_extrapolation=splits.x_extrapolation, y_extrapolation=splits.y_extrapolation,
        operation=operation, spec=spec, bounds=splits.bounds,
    )
