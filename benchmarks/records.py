"""Measured results to and from JSON: dataclasses rebuilt field by field from their type hints.

`python -m benchmarks --save-results FILE` writes a run's `Results` with `dumps`; `loads` gives
them back as they were, so a report can be rendered again, and the renderers tested, without
measuring anything. Floats keep NaN and the infinities (as Python's JSON writes and reads
them), integer dictionary keys come back as integers, tuples as tuples, and Optuna's finished
trials (the workers section's seed sweep) through their public constructor.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from datetime import datetime
from typing import Any, TypeVar

from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.trial import FrozenTrial, TrialState

from sweep.search._optuna.internals import trial_id

__all__ = ["dumps", "from_data", "loads", "to_data"]

_T = TypeVar("_T")


def dumps(value: object) -> str:
    """`value` (a dataclass, usually `Results`) as JSON text, one field per line."""
    return json.dumps(to_data(value), indent=1, ensure_ascii=False) + "\n"


def loads(text: str, kind: type[_T]) -> _T:
    """The `kind` that `dumps` wrote as `text`."""
    value: _T = from_data(json.loads(text), kind)
    return value


def to_data(value: object) -> Any:
    """`value` as JSON-ready lists, dicts and scalars."""
    if isinstance(value, FrozenTrial):
        return _trial_data(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {_key_data(key): to_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_data(item) for item in value]
    if value is None or isinstance(value, str | int | float):
        return value
    raise TypeError(f"cannot record a {type(value).__name__}: {value!r}")


def from_data(data: Any, hint: Any) -> Any:
    """`data` (from `to_data`) rebuilt as the type `hint` says."""
    if hint is Any:
        return data
    if hint is type(None):
        if data is not None:
            raise ValueError(f"expected null, got {data!r}")
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) != 1:
            raise TypeError(f"cannot tell which of {hint} to rebuild")
        return from_data(data, options[0])
    if origin is list:
        return [from_data(item, args[0]) for item in _expect(data, list, hint)]
    if origin is tuple:
        items = _expect(data, list, hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_data(item, args[0]) for item in items)
        if len(items) != len(args):
            raise ValueError(f"expected {len(args)} items for {hint}, got {len(items)}")
        return tuple(from_data(item, arg) for item, arg in zip(items, args, strict=True))
    if origin is dict:
        key_hint, value_hint = args
        return {
            _key(key, key_hint): from_data(item, value_hint)
            for key, item in _expect(data, dict, hint).items()
        }
    if hint is FrozenTrial:
        return _trial(_expect(data, dict, hint))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _dataclass(_expect(data, dict, hint), hint)
    if hint is float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise ValueError(f"expected a number, got {data!r}")
        return float(data)
    if hint in (int, str, bool):
        if type(data) is not hint:
            raise ValueError(f"expected {hint.__name__}, got {data!r}")
        return data
    raise TypeError(f"cannot rebuild {hint}")


def _expect(data: Any, kind: type[_T], hint: Any) -> _T:
    if not isinstance(data, kind):
        raise ValueError(f"expected a JSON {kind.__name__} for {hint}, got {data!r}")
    return data


def _key_data(key: object) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    raise TypeError(f"cannot record a dictionary key {key!r}")


def _key(key: str, hint: Any) -> object:
    if hint is int:
        return int(key)
    if hint is str:
        return key
    raise TypeError(f"cannot rebuild a dictionary key of type {hint}")


def _dataclass(data: dict[str, Any], kind: type[_T]) -> _T:
    hints = typing.get_type_hints(kind)
    names = [f.name for f in dataclasses.fields(kind) if f.init]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{kind.__name__} has no field {', '.join(unknown)}")
    # A field missing from older records takes its default.
    return kind(**{name: from_data(data[name], hints[name]) for name in names if name in data})


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _trial_data(trial: FrozenTrial) -> dict[str, Any]:
    return {
        "number": trial.number,
        "trial_id": trial_id(trial),
        "state": trial.state.name,
        "values": trial.values,
        "datetime_start": _when(trial.datetime_start),
        "datetime_complete": _when(trial.datetime_complete),
        "params": trial.params,
        "distributions": {
            name: distribution_to_json(d) for name, d in trial.distributions.items()
        },
        "user_attrs": to_data(trial.user_attrs),
        "system_attrs": to_data(trial.system_attrs),
        "intermediate_values": to_data(trial.intermediate_values),
    }


def _trial(data: dict[str, Any]) -> FrozenTrial:
    return FrozenTrial(
        number=int(data["number"]),
        trial_id=int(data["trial_id"]),
        state=TrialState[data["state"]],
        value=None,
        values=data["values"],
        datetime_start=_moment(data["datetime_start"]),
        datetime_complete=_moment(data["datetime_complete"]),
        params=dict(data["params"]),
        distributions={
            name: json_to_distribution(text) for name, text in data["distributions"].items()
        },
        user_attrs=dict(data["user_attrs"]),
        system_attrs=dict(data["system_attrs"]),
        intermediate_values={
            int(step): float(value) for step, value in data["intermediate_values"].items()
        },
    )
