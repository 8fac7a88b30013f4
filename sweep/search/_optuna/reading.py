"""A study's trials, and its summary, read with plain queries (private API: Optuna's RDB tables).

Optuna's `RDBStorage._get_trials` loads every row as an ORM object (a trial, its ~9
parameters, ~20 attributes and a report per epoch: ~60 objects per trial) and parses every
parameter's distribution JSON again for every trial: 1.6-2.3 s for 1000 trials of 30 epochs
here, CPU a starting worker spends before its first trial, under the GIL shared with the
TensorFlow import. Here the same rows come back as tuples, each distinct distribution is
parsed once, and the same `FrozenTrial`s are built (Optuna's storage test cases run on this
reader: tests/sweep/search/test_optuna_storage_contract.py).
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Container, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sqlalchemy
import sqlalchemy.orm
from optuna import distributions
from optuna.distributions import BaseDistribution
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "StudySummary",
    "first_distribution",
    "never_beaten",
    "read_trial",
    "read_trials",
    "state_counts",
    "stored_now",
    "study_summary",
]

# Optuna 5 stores trial datetimes as naive UTC and shows them as naive local time; older
# versions stored local time as is.
_UTC_DATETIMES = hasattr(models.TrialModel, "_datetime_start_utc")


def _shown(stored: datetime.datetime | None) -> datetime.datetime | None:
    if stored is None or not _UTC_DATETIMES:
        return stored
    return stored.replace(tzinfo=datetime.UTC).astimezone().replace(tzinfo=None)


def stored_now() -> datetime.datetime:
    """Now as a trial's `datetime_start` column holds it."""
    if _UTC_DATETIMES:
        return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    return datetime.datetime.now()


@lru_cache(maxsize=4096)
def _distribution(distribution_json: str) -> BaseDistribution:
    """Distributions are immutable in use; a study has a handful of distinct ones."""
    return distributions.json_to_distribution(distribution_json)


def read_trial(session: sqlalchemy.orm.Session, trial_id: int) -> FrozenTrial | None:
    """What `RDBStorage.get_trial` returns (None where it raises KeyError): Optuna reads
    a trial's five child tables through the ORM's lazy loads, twice per trial (at `ask` and
    at `tell`), at about twice the cost of these plain queries."""
    trial = models.TrialModel.__table__
    found = _read(session, [trial.c.trial_id == trial_id])
    return found[0] if found else None


def read_trials(
    session: sqlalchemy.orm.Session,
    study_id: int,
    states: Container[TrialState] | None,
    included_trial_ids: set[int],
    trial_id_greater_than: int,
) -> list[FrozenTrial]:
    """What `RDBStorage._get_trials` returns, in trial id order, for the same arguments."""
    models.StudyModel.find_or_raise_by_id(study_id, session)
    trial = models.TrialModel.__table__
    included = {i for i in included_trial_ids if i <= trial_id_greater_than}
    where: list[Any] = [trial.c.study_id == study_id]
    if states is not None:
        assert isinstance(states, Iterable)
        where.append(trial.c.state.in_(list(states)))
    if included and trial_id_greater_than > -1:
        where.append(
            sqlalchemy.or_(
                trial.c.trial_id.in_(sorted(included)), trial.c.trial_id > trial_id_greater_than
            )
        )
    elif trial_id_greater_than > -1:
        where.append(trial.c.trial_id > trial_id_greater_than)
    return _read(session, where)


def _read(session: sqlalchemy.orm.Session, where: list[Any]) -> list[FrozenTrial]:
    """The trials `where` selects, in trial id order, with their children."""
    trial = models.TrialModel.__table__
    rows = session.execute(
        sqlalchemy.select(
            trial.c.trial_id, trial.c.number, trial.c.state, trial.c.datetime_start,
            trial.c.datetime_complete,
        ).where(*where).order_by(trial.c.trial_id)
    ).all()
    if not rows:
        return []
    # The children of exactly these trials: the same filter as a subquery, not a list of ids
    # (SQLite limits the parameters of one statement).
    ids = sqlalchemy.select(trial.c.trial_id).where(*where).scalar_subquery()

    def children(model: Any, *columns: str, order: str | None = None) -> list[Any]:
        table = model.__table__
        query = sqlalchemy.select(table.c.trial_id, *(table.c[c] for c in columns)).where(
            table.c.trial_id.in_(ids)
        )
        if order is not None:
            query = query.order_by(table.c[order])
        return list(session.execute(query).all())

    params: dict[int, dict[str, Any]] = {}
    dists: dict[int, dict[str, BaseDistribution]] = {}
    for trial_id, name, value, distribution_json in children(
        models.TrialParamModel, "param_name", "param_value", "distribution_json",
        order="param_id",
    ):
        distribution = _distribution(distribution_json)
        params.setdefault(trial_id, {})[name] = distribution.to_external_repr(value)
        dists.setdefault(trial_id, {})[name] = distribution
    values: dict[int, dict[int, float]] = {}
    for trial_id, objective, value, value_type in children(
        models.TrialValueModel, "objective", "value", "value_type"
    ):
        values.setdefault(trial_id, {})[objective] = (
            models.TrialValueModel.stored_repr_to_value(value, value_type)
        )
    intermediate: dict[int, dict[int, float]] = {}
    for trial_id, step, value, value_type in children(
        models.TrialIntermediateValueModel, "step", "intermediate_value",
        "intermediate_value_type",
    ):
        intermediate.setdefault(trial_id, {})[step] = (
            models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(
                value, value_type
            )
        )
    user_attrs = _attributes(children(models.TrialUserAttributeModel, "key", "value_json"))
    system_attrs = _attributes(children(models.TrialSystemAttributeModel, "key", "value_json"))

    trials = []
    for trial_id, number, state, started, completed in rows:
        objectives = values.get(trial_id)
        trial_values: list[float] | None = None
        if objectives:
            trial_values = [0.0] * len(objectives)
            for objective, value in objectives.items():
                trial_values[objective] = value
        trials.append(
            FrozenTrial(
                number=number,
                state=state,
                value=None,
                values=trial_values,
                datetime_start=_shown(started),
                datetime_complete=_shown(completed),
                params=params.get(trial_id, {}),
                distributions=dists.get(trial_id, {}),
                user_attrs=user_attrs.get(trial_id, {}),
                system_attrs=system_attrs.get(trial_id, {}),
                intermediate_values=intermediate.get(trial_id, {}),
                trial_id=trial_id,
            )
        )
    return trials


def _attributes(rows: Iterable[Any]) -> dict[int, dict[str, Any]]:
    attributes: dict[int, dict[str, Any]] = {}
    for trial_id, key, value_json in rows:
        attributes.setdefault(trial_id, {})[key] = json.loads(value_json)
    return attributes


@dataclass(frozen=True)
class StudySummary:
    """What the campaign loop needs after each trial, from one aggregate query."""

    states: dict[TrialState, int]
    last_state: TrialState | None
    best_value: float | None  # lowest finite first objective among COMPLETE trials

    def count(self, *states: TrialState) -> int:
        return sum(self.states.get(state, 0) for state in states)


def study_summary(session: sqlalchemy.orm.Session, study_id: int) -> StudySummary:
    """Trial counts per state, the newest trial's state and the best finite value."""
    trial = models.TrialModel
    value = models.TrialValueModel
    states = state_counts(session, study_id)
    last = (
        session.query(trial.state)
        .filter(trial.study_id == study_id)
        .order_by(trial.number.desc())
        .limit(1)
        .scalar()
    )
    best = (
        session.query(sqlalchemy.func.min(value.value))
        .join(trial, value.trial_id == trial.trial_id)
        .filter(
            trial.study_id == study_id,
            trial.state == TrialState.COMPLETE,
            value.objective == 0,
            value.value_type == models.TrialValueModel.TrialValueType.FINITE,
        )
        .scalar()
    )
    best_value = float(best) if best is not None and math.isfinite(best) else None
    return StudySummary(states, last, best_value)


def state_counts(session: sqlalchemy.orm.Session, study_id: int) -> dict[TrialState, int]:
    """Trial counts per state, one query."""
    trial = models.TrialModel
    rows = (
        session.query(trial.state, sqlalchemy.func.count(trial.trial_id))
        .filter(trial.study_id == study_id)
        .group_by(trial.state)
        .all()
    )
    return {TrialState(state): int(n) for state, n in rows}


def never_beaten(
    session: sqlalchemy.orm.Session, study_id: int, started_before: datetime.datetime
) -> list[int]:
    """The study's RUNNING trials that started before `started_before` (stored time) and
    have no heartbeat row."""
    trial = models.TrialModel.__table__
    beats = models.TrialHeartbeatModel.__table__
    ids = session.execute(
        sqlalchemy.select(trial.c.trial_id).where(
            trial.c.study_id == study_id,
            trial.c.state == TrialState.RUNNING,
            trial.c.datetime_start < started_before,
            ~sqlalchemy.exists().where(beats.c.trial_id == trial.c.trial_id),
        )
    ).scalars().all()
    return [int(i) for i in ids]


def first_distribution(
    session: sqlalchemy.orm.Session, study_id: int, name: str
) -> BaseDistribution | None:
    """The distribution of the study's first stored use of parameter `name`, if any."""
    record = (
        session.query(models.TrialParamModel.distribution_json)
        .join(models.TrialModel)
        .filter(models.TrialModel.study_id == study_id)
        .filter(models.TrialParamModel.param_name == name)
        .first()
    )
    return None if record is None else _distribution(record[0])
