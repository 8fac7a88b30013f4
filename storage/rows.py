"""Registry rows: what a model version is, how one is checked before it is written, and how
a stored row is read back (a damaged or hand-edited row is one `DamagedRegistry` line)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row

from storage.errors import DamagedRegistry, InvalidRegistryValue
from storage.models import best_table, model_versions_table

__all__ = [
    "BEST_KEY_COLUMNS",
    "ENTRY_COLUMNS",
    "NAME_LIMITS",
    "ModelCandidate",
    "ModelEntry",
    "best_key",
    "check_text",
    "dump_json",
    "entry_from_row",
    "reading",
    "validate_candidate",
]

NAME_LIMITS = {
    "campaign": 64,
    "operation": 64,
    "study_name": 255,
    "keras_version": 32,
    "tensorflow_version": 32,
}

_mv = model_versions_table
_best = best_table


@dataclass(frozen=True)
class ModelCandidate:
    """A trained model offered for promotion; ``objective_value`` is lower-is-better."""

    campaign: str
    operation: str
    study_name: str
    trial_number: int
    objective_value: float
    metrics: dict[str, float]
    params: dict[str, Any]
    model_bytes: bytes = field(repr=False)
    keras_version: str
    tensorflow_version: str


@dataclass(frozen=True)
class ModelEntry:
    """A stored model version, without its bytes (use `ModelRegistry.fetch` for those)."""

    campaign: str
    operation: str
    version: int
    study_name: str
    trial_number: int
    objective_value: float
    metrics: dict[str, float]
    params: dict[str, Any]
    sha256: str
    size_bytes: int
    keras_version: str
    tensorflow_version: str
    created_at: datetime
    is_best: bool


ENTRY_COLUMNS = (
    _mv.c.campaign,
    _mv.c.operation,
    _mv.c.version,
    _mv.c.study_name,
    _mv.c.trial_number,
    _mv.c.objective_value,
    _mv.c.metrics,
    _mv.c.params,
    _mv.c.sha256,
    _mv.c.size_bytes,
    _mv.c.keras_version,
    _mv.c.tensorflow_version,
    _mv.c.created_at,
)


@contextmanager
def reading(what: str) -> Iterator[None]:
    """Values the driver cannot even convert (a date column holding 'yesterday') are damage
    in the row, not a bug: one `DamagedRegistry` line naming what was being read."""
    try:
        yield
    except (ValueError, TypeError, OverflowError) as e:
        if isinstance(e, InvalidRegistryValue):
            raise
        raise DamagedRegistry(
            f"a registry row cannot be read while {what} ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:120]}); the row was damaged or edited by hand"
        ) from None


def best_key(campaign: str, operation: str) -> ColumnElement[bool]:
    return (_best.c.campaign == campaign) & (_best.c.operation == operation)


BEST_KEY_COLUMNS = (
    _best.c.campaign.label("best_campaign"),
    _best.c.operation.label("best_operation"),
)


def entry_from_row(row: Row[*tuple[Any, ...]], *, is_best: bool) -> ModelEntry:
    """A row as an entry; any value this code cannot read is one `DamagedRegistry` line."""
    where = f"{_shown(row, 'campaign')}/{_shown(row, 'operation')}"
    mapping = row._mapping
    if "best_campaign" in mapping and (
        (mapping["best_campaign"], mapping["best_operation"]) != (row.campaign, row.operation)
    ):
        raise DamagedRegistry(
            f"the registry's best for {mapping['best_campaign']}/{mapping['best_operation']} "
            f"points at a model of {where}; refusing it (the sweep_best row is damaged)"
        )
    field_name = "?"
    try:
        values: dict[str, Any] = {}
        for field_name, convert in _ENTRY_FIELDS:
            values[field_name] = convert(getattr(row, field_name))
    except (TypeError, ValueError, OverflowError, AttributeError) as e:
        raise DamagedRegistry(
            f"registry entry {where} has an unreadable {field_name} "
            f"({type(e).__name__}); the row was damaged or edited by hand"
        ) from None
    return ModelEntry(**values, is_best=is_best)


def _shown(row: Row[*tuple[Any, ...]], name: str) -> str:
    value = str(getattr(row, name, "?"))
    return value if len(value) <= 64 else value[:61] + "..."


def _json_object(text: Any) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise TypeError("not a JSON object")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not text")
    return value


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError("not a whole number")
    number = int(value)
    if isinstance(value, float) and number != value:
        raise ValueError("not a whole number")
    return number


def _finite(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not finite")
    return number


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError("not a timestamp")
    return value


_ENTRY_FIELDS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("campaign", _text),
    ("operation", _text),
    ("version", _whole),
    ("study_name", _text),
    ("trial_number", _whole),
    ("objective_value", _finite),
    ("metrics", _json_object),
    ("params", _json_object),
    ("sha256", _text),
    ("size_bytes", _whole),
    ("keras_version", _text),
    ("tensorflow_version", _text),
    ("created_at", _timestamp),
)


def validate_candidate(candidate: ModelCandidate) -> None:
    for name in NAME_LIMITS:
        check_text(name, getattr(candidate, name))
    if isinstance(candidate.trial_number, bool) or not isinstance(candidate.trial_number, int):
        raise InvalidRegistryValue(
            f"trial_number must be an int, but got {candidate.trial_number!r}."
        )
    objective = candidate.objective_value
    if isinstance(objective, bool) or not isinstance(objective, int | float):
        raise InvalidRegistryValue(f"objective_value must be a float, but got {objective!r}.")
    if not isinstance(candidate.model_bytes, bytes | bytearray):
        raise InvalidRegistryValue(
            f"model_bytes must be bytes, but got {type(candidate.model_bytes).__name__}."
        )
    for what in ("metrics", "params"):
        if not isinstance(getattr(candidate, what), dict):
            raise InvalidRegistryValue(
                f"{what} must be a dict, but got {type(getattr(candidate, what)).__name__}."
            )


def check_text(name: str, value: object) -> None:
    limit = NAME_LIMITS[name]
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InvalidRegistryValue(
            f"{name} must be a non-empty string of at most {limit} characters, but got {value!r}."
        )


def dump_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise InvalidRegistryValue(f"{what} must be JSON-serialisable, but {e}.") from None
