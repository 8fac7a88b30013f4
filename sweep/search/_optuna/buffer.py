"""A trial's writes held back and sent in one transaction (private API: Optuna's RDB tables).

What `SweepStorage` holds per trial (`Pending`), how it is written (`write_pending`), how it
shows on reads before it is (`with_writes`), and how each of Optuna's `RDBStorage` methods
treats it (the tables at the end, checked against Optuna's class by
tests/sweep/search/test_optuna_storage.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

import sqlalchemy
import sqlalchemy.orm
from optuna import distributions
from optuna.distributions import BaseDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "BUFFERED",
    "FLUSH_FIRST",
    "FLUSH_TRIAL",
    "OWN",
    "UNBUFFERED",
    "FirstUse",
    "Flushes",
    "Pending",
    "flushing",
    "flushing_trial",
    "with_writes",
    "write_pending",
]

_F = TypeVar("_F", bound=Callable[..., Any])

# The study's first use of a parameter name as stored (distribution, True), else None.
FirstUse = Callable[
    [int, str, sqlalchemy.orm.Session], "tuple[BaseDistribution, bool] | None"
]


class Flushes(Protocol):
    """The storage whose methods the tables below wrap (`SweepStorage`)."""

    def flush_quietly(self, trial_ids: Iterable[int] | None) -> None: ...


@dataclass
class Pending:
    """One trial's writes not yet sent, last value per key (as Optuna would have stored)."""

    study_id: int
    # name -> (internal value, distribution, whether the study's first use was read from the
    # database at the call; if not, this write is the first use and is checked again on write)
    params: dict[str, tuple[float, BaseDistribution, bool]] = field(default_factory=dict)
    intermediate: dict[int, float] = field(default_factory=dict)
    user_attrs: dict[str, str] = field(default_factory=dict)  # key -> JSON text
    beat: bool = False  # the trial's first heartbeat (`first_beat_with_writes`)


def write_pending(
    session: sqlalchemy.orm.Session, trial_id: int, writes: Pending, first_use: FirstUse
) -> None:
    """The buffer as a handful of statements in the caller's transaction: the trial's state
    is checked once (as Optuna checks it per write), each table gets one DELETE of the keys and
    one multi-row INSERT. `first_use` reads the study's first use of a parameter name, for the
    names whose first use this process has not seen stored."""
    trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
    state: Any = trial.state  # (Optuna's model is typed Mapped[] on some versions)
    if TrialState(state).is_finished():  # Optuna's check and message
        raise UpdateFinishedTrialError(
            f"Trial#{trial.number} has already finished and can not be updated."
        )
    params = []
    for name, (value, distribution, stored) in writes.params.items():
        if not stored:  # our first use: another process may have stored one since
            first = first_use(writes.study_id, name, session)
            if first is not None:
                distributions.check_distribution_compatibility(first[0], distribution)
        params.append(
            {
                "trial_id": trial_id,
                "param_name": name,
                "param_value": value,
                "distribution_json": distributions.distribution_to_json(distribution),
            }
        )
    intermediate = []
    for step, value in writes.intermediate.items():
        stored_value, kind = (
            models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
        )
        intermediate.append(
            {
                "trial_id": trial_id,
                "step": step,
                "intermediate_value": stored_value,
                "intermediate_value_type": kind,
            }
        )
    attrs = [
        {"trial_id": trial_id, "key": key, "value_json": text}
        for key, text in writes.user_attrs.items()
    ]
    _replace_rows(session, models.TrialParamModel, "param_name", params)
    _replace_rows(session, models.TrialIntermediateValueModel, "step", intermediate)
    _replace_rows(session, models.TrialUserAttributeModel, "key", attrs)
    if writes.beat:
        _beat(session, trial_id)


def with_writes(trial: FrozenTrial, writes: Pending) -> FrozenTrial:
    """A copy of `trial` as it will be once `writes` are stored."""
    params = dict(trial.params)
    dists = dict(trial.distributions)
    for name, (value, distribution, _) in writes.params.items():
        params[name] = distribution.to_external_repr(value)
        dists[name] = distribution
    user_attrs = dict(trial.user_attrs)
    user_attrs.update((key, json.loads(text)) for key, text in writes.user_attrs.items())
    return FrozenTrial(
        number=trial.number,
        state=trial.state,
        value=None,
        values=trial.values,
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
        params=params,
        distributions=dists,
        user_attrs=user_attrs,
        system_attrs=trial.system_attrs,
        intermediate_values={**trial.intermediate_values, **writes.intermediate},
        trial_id=trial._trial_id,
    )


def _beat(session: sqlalchemy.orm.Session, trial_id: int) -> None:
    """`RDBStorage.record_heartbeat`, in the caller's transaction."""
    heartbeat = models.TrialHeartbeatModel.where_trial_id(trial_id, session, True)
    if heartbeat is None:
        session.add(models.TrialHeartbeatModel(trial_id=trial_id))
    else:
        heartbeat.heartbeat = session.execute(sqlalchemy.func.now()).scalar_one()


def _replace_rows(
    session: sqlalchemy.orm.Session, model: Any, key: str, rows: list[dict[str, Any]]
) -> None:
    """Delete the trial's rows with these keys, insert the new ones: an upsert in two
    statements on every database."""
    if not rows:
        return
    table = model.__table__
    session.execute(
        sqlalchemy.delete(table).where(
            table.c.trial_id == rows[0]["trial_id"],
            table.c[key].in_([row[key] for row in rows]),
        )
    )
    session.execute(sqlalchemy.insert(table), rows)


# How each of RDBStorage's methods treats the buffer. Every method Optuna's RDBStorage has must
# be in exactly one of these (tests/sweep/search/test_optuna_storage.py): a method a new Optuna
# release adds would otherwise read or write around the buffer.
BUFFERED: frozenset[str] = frozenset(
    {"set_trial_param", "_set_trial_param", "set_trial_intermediate_value", "set_trial_user_attr"}
)
# Defined by SweepStorage: a trial's state change (its own buffer first), the reads of trials (each
# trial's buffer shown on top), trial creation (remembered, to check writes at the call), a
# study's deletion.
OWN: frozenset[str] = frozenset(
    {"set_trial_state_values", "get_trial", "_get_trials", "_create_new_trial", "delete_study"}
)
# Calls about one trial's data write its buffer first.
FLUSH_TRIAL: tuple[str, ...] = (
    "get_trial_param",
    "get_trial_params",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "set_trial_system_attr",
)
# Every other storage call writes every buffer first (the heartbeat thread's calls excepted:
# they touch only the heartbeat table, and must not write from another thread).
FLUSH_FIRST: tuple[str, ...] = (
    "create_new_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
)
# Calls that neither read nor write trial data (configuration, schema versions, helpers used
# inside the methods above, the trial ids and numbers that never change, the heartbeat
# thread's own table).
UNBUFFERED: frozenset[str] = frozenset(
    {
        "create_new_trial",  # through `_create_new_trial`
        "get_all_trials",  # through `_get_trials`
        "get_best_trial",  # through `get_trial`
        # States and values only, never buffered:
        "get_n_trials",
        "_get_best_trial_id",
        "_get_stale_trial_ids",
        "get_trial_id_from_study_id_trial_number",
        "get_trial_number_from_id",
        "_build_frozen_trial_from_trial_model",
        "_create_unique_study_name",
        "_fill_storage_url_template",
        "_get_prepared_new_trial",
        "_set_default_engine_kwargs_for_mysql",
        "_set_trial_attr_without_commit",
        "_set_trial_intermediate_value_without_commit",
        "_set_trial_param_without_commit",
        "_set_trial_value_without_commit",
        "check_trial_is_updatable",
        "get_all_versions",
        "get_current_version",
        "get_head_version",
        "upgrade",
        "remove_session",
        "record_heartbeat",
        "get_heartbeat_interval",
        "get_failed_trial_callback",
        "get_heartbeat_stale_trial_callback",
    }
)


def flushing(method: _F) -> _F:
    """Every buffer first: for calls that read or write beyond one trial."""

    def wrapper(self: Flushes, *args: Any, **kwargs: Any) -> Any:
        self.flush_quietly(None)
        return method(self, *args, **kwargs)

    return _named(wrapper, method)


def flushing_trial(method: _F) -> _F:
    """The trial's own buffer first (its first argument is the trial id)."""

    def wrapper(self: Flushes, trial_id: int, *args: Any, **kwargs: Any) -> Any:
        self.flush_quietly((trial_id,))
        return method(self, trial_id, *args, **kwargs)

    return _named(wrapper, method)


def _named(wrapper: Callable[..., Any], method: _F) -> _F:
    wrapper.__name__ = method.__name__
    wrapper.__qualname__ = f"SweepStorage.{method.__name__}"
    wrapper.__doc__ = method.__doc__
    return cast(_F, wrapper)
