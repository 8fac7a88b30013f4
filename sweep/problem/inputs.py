"""One input's range: integer or real, where it is drawn and where extrapolation is measured.

A campaign file gives them per operation (``[inputs.gas] n = { low = 1, high = 5, kind =
"real" }``); an input without an entry keeps the original question's setting, integers in
``[data] low/high``. Drawing lives here too, so the data module and the probes that decide
whether an operation is integer-valued draw the same way.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from sweep.errors import ConfigError

__all__ = ["INPUT_KINDS", "MAX_ABS_BOUND", "InputRange", "parse_input_ranges"]

FloatArray = npt.NDArray[np.float64]
Kind = Literal["integer", "real"]
INPUT_KINDS: tuple[str, ...] = ("integer", "real")
# Whole bounds stay exact in float64 and their products in the band arithmetic stay finite.
MAX_ABS_BOUND = 1e9
_RANGE_KEYS = ("low", "high", "kind", "extrapolation")


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or abs(number) > MAX_ABS_BOUND:
        raise ConfigError(
            f"{where}={value!r} is not allowed; bounds are finite numbers between "
            f"-{MAX_ABS_BOUND:,.0f} and {MAX_ABS_BOUND:,.0f}"
        )
    return number


@dataclass(frozen=True)
class InputRange:
    """Where one input is drawn, ``[low, high)``, and its extrapolation band ``[start, stop)``.

    ``legacy`` marks an input with no entry of its own: it keeps today's band (``[high,
    2*high)`` for a positive high) so every existing campaign keeps its data.
    """

    name: str
    low: float
    high: float
    kind: Kind = "integer"
    extrapolation: tuple[float, float] | None = None
    legacy: bool = False

    def __post_init__(self) -> None:
        where = f"inputs.{self.name}"
        if self.kind not in INPUT_KINDS:
            raise ConfigError(
                f"{where}.kind {self.kind!r} is not allowed; choose integer or real"
            )
        low = _number(self.low, f"{where}.low")
        high = _number(self.high, f"{where}.high")
        if self.kind == "integer" and not (low.is_integer() and high.is_integer()):
            raise ConfigError(
                f"{where}: an integer input needs whole bounds, got low={self.low!r}, "
                f"high={self.high!r}; write kind = \"real\" for a real range"
            )
        if not low < high:
            raise ConfigError(
                f"{where}: low must be less than high, got low={self.low!r}, high={self.high!r}"
            )
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        if self.extrapolation is not None:
            start = _number(self.extrapolation[0], f"{where}.extrapolation.low")
            stop = _number(self.extrapolation[1], f"{where}.extrapolation.high")
            if self.kind == "integer" and not (start.is_integer() and stop.is_integer()):
                raise ConfigError(
                    f"{where}.extrapolation: an integer input needs whole bounds, got "
                    f"low={start!r}, high={stop!r}"
                )
            if not start < stop:
                raise ConfigError(
                    f"{where}.extrapolation: low must be less than high, got low={start!r}, "
                    f"high={stop!r}"
                )
            object.__setattr__(self, "extrapolation", (start, stop))

    @property
    def band(self) -> tuple[float, float]:
        """The extrapolation band: the entry's, else ``[high, high + (high - low))``."""
        if self.extrapolation is not None:
            return self.extrapolation
        if self.legacy and self.high > 0:
            return self.high, 2 * self.high
        return self.high, self.high + (self.high - self.low)

    def draw(self, rng: np.random.Generator, count: int, *, band: bool = False) -> FloatArray:
        """``count`` uniform draws from the range (or the band), as float64."""
        start, stop = self.band if band else (self.low, self.high)
        if self.kind == "integer":
            drawn = rng.integers(int(start), int(stop), size=count, dtype=np.int64)
            return drawn.astype(np.float64)
        return rng.uniform(start, stop, size=count)

    def describe(self, *, band: bool = False) -> str:
        start, stop = self.band if band else (self.low, self.high)
        kind = "" if self.kind == "integer" else " (real)"
        return f"{self.name} in [{_shown(start)}, {_shown(stop)}){kind}"

    def to_dict(self) -> dict[str, Any]:
        """The campaign file's shape; whole bounds of integer inputs are stored as ints."""
        out: dict[str, Any] = {
            "low": _plain(self.low, self.kind),
            "high": _plain(self.high, self.kind),
            "kind": self.kind,
        }
        if self.extrapolation is not None:
            out["extrapolation"] = {
                "low": _plain(self.extrapolation[0], self.kind),
                "high": _plain(self.extrapolation[1], self.kind),
            }
        return out

    @classmethod
    def from_dict(cls, name: str, raw: object, where: str) -> InputRange:
        """One ``[inputs.OP]`` entry; every problem is one line naming ``where``."""
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"{where} must be a table like {{ low = 1, high = 5, kind = \"real\" }}, "
                f"got {raw!r}"
            )
        unknown = sorted(str(key) for key in raw if key not in _RANGE_KEYS)
        if unknown:
            raise ConfigError(
                f"unknown key {where}.{unknown[0]}; allowed: {', '.join(_RANGE_KEYS)}"
            )
        for key in ("low", "high"):
            if key not in raw:
                raise ConfigError(f"{where} needs {key}")
        kind = raw.get("kind", "integer")
        band = raw.get("extrapolation")
        extrapolation: tuple[float, float] | None = None
        if band is not None:
            if not isinstance(band, Mapping) or set(band) != {"low", "high"}:
                raise ConfigError(
                    f"{where}.extrapolation must be {{ low = .., high = .. }}, got {band!r}"
                )
            extrapolation = (
                _number(band["low"], f"{where}.extrapolation.low"),
                _number(band["high"], f"{where}.extrapolation.high"),
            )
        try:
            return cls(
                name=name,
                low=_number(raw["low"], f"{where}.low"),
                high=_number(raw["high"], f"{where}.high"),
                kind=kind,
                extrapolation=extrapolation,
            )
        except ConfigError as error:
            raise ConfigError(str(error).replace(f"inputs.{name}", where, 1)) from None


def _plain(value: float, kind: str) -> float | int:
    return int(value) if kind == "integer" else value


def _shown(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def parse_input_ranges(
    raw: object, where: str
) -> dict[str, dict[str, InputRange]]:
    """The ``[inputs]`` table: per operation, per input name, its range (not yet checked
    against the operations; the campaign does that, knowing their inputs)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table of operations, got {raw!r}")
    out: dict[str, dict[str, InputRange]] = {}
    for operation, table in raw.items():
        if not isinstance(table, Mapping):
            raise ConfigError(
                f"{where}.{operation} must be a table of inputs like "
                f"n = {{ low = 1, high = 5, kind = \"real\" }}, got {table!r}"
            )
        out[str(operation)] = {
            str(name): InputRange.from_dict(str(name), entry, f"{where}.{operation}.{name}")
            for name, entry in table.items()
        }
    return out
